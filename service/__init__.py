"""Sessions service: the talks and workshops of conference events, over REST."""
