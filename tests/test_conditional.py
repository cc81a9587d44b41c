"""RFC 9110 preconditions as pure functions: entity tags, HTTP-dates and the order of evaluation."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from service.conditional import (
    ANY,
    EntityTag,
    MalformedHeader,
    Outcome,
    Preconditions,
    evaluate,
    format_http_date,
    last_modified,
    parse_entity_tags,
    parse_http_date,
    parse_preconditions,
    truncate_to_second,
)

STRONG_1 = EntityTag("1")
WEAK_1 = EntityTag("1", weak=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"1"', (STRONG_1,)),
        ('W/"1"', (WEAK_1,)),
        ('"1", W/"2" ,"3"', (STRONG_1, EntityTag("2", weak=True), EntityTag("3"))),
        (', ,"1",,\t', (STRONG_1,)),  # empty list elements are allowed (RFC 9110 5.6.1.2)
        ('""', (EntityTag(""),)),
        ('"x-\x80\xff"', (EntityTag("x-\x80\xff"),)),  # obs-text
        ("", ()),
        ("*", ANY),
        (" * ", ANY),
    ],
)
def test_parse_entity_tags_accepts_the_grammar(value: str, expected: object) -> None:
    assert parse_entity_tags(value, "If-Match") == expected


@pytest.mark.parametrize(
    "value",
    ["1", '"1', '1"', 'w/"1"', 'W/ "1"', '"1" "2"', '"1"x', '"a b"', '"a\x7f"', '*, "1"', "**"],
)
def test_parse_entity_tags_rejects_malformed_values(value: str) -> None:
    with pytest.raises(MalformedHeader) as raised:
        parse_entity_tags(value, "If-None-Match")
    assert raised.value.field == "If-None-Match"


@pytest.mark.parametrize(
    ("left", "right", "strong", "weak"),
    # The table of RFC 9110 8.8.3.2.
    [
        (WEAK_1, WEAK_1, False, True),
        (WEAK_1, EntityTag("2", weak=True), False, False),
        (WEAK_1, STRONG_1, False, True),
        (STRONG_1, STRONG_1, True, True),
    ],
)
def test_entity_tag_comparison_follows_rfc_table(
    left: EntityTag, right: EntityTag, strong: bool, weak: bool
) -> None:
    assert left.strong_match(right) is strong
    assert right.strong_match(left) is strong
    assert left.weak_match(right) is weak


def test_entity_tag_renders_quoted() -> None:
    assert str(STRONG_1) == '"1"'
    assert str(WEAK_1) == 'W/"1"'


NOV_6_1994 = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime
        " Sun, 06 Nov 1994 08:49:37 GMT\t",
    ],
)
def test_parse_http_date_accepts_the_three_formats(value: str) -> None:
    assert parse_http_date(value) == NOV_6_1994


@pytest.mark.parametrize(
    "value",
    [
        "",
        "yesterday",
        "Sun, 06 Nov 1994 08:49:37 gmt",  # case-sensitive
        "sun, 06 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:49:37 GMT",
        "Sun, 06 Nov 0000 08:49:37 GMT",
        "1994-11-06T08:49:37Z",
        "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",  # Arabic-Indic digits are not DIGIT
        "784111777",
    ],
)
def test_parse_http_date_rejects_anything_else(value: str) -> None:
    assert parse_http_date(value) is None


@pytest.mark.parametrize(
    ("date", "year"),
    [
        ("06-Nov-94 08:49:37", 1994),
        ("06-Nov-26 08:49:37", 2026),
        ("06-Nov-76 08:49:37", 2076),
        ("06-Nov-77 08:49:37", 1977),
        # RFC 9110 5.6.7 compares dates, not years: 50 years ahead to the second is still ahead,
        ("26-Nov-76 12:00:00", 2076),
        # and a second more is in the past.
        ("26-Nov-76 12:00:01", 1976),
        ("31-Dec-76 23:59:59", 1976),
    ],
)
def test_parse_rfc850_date_more_than_50_years_ahead_is_in_the_past(date: str, year: int) -> None:
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)
    parsed = parse_http_date(f"Sunday, {date} GMT", now=now)
    assert parsed is not None
    assert parsed.year == year


def test_parse_http_date_reads_a_leap_second_as_that_minute() -> None:
    assert parse_http_date("Sun, 06 Nov 1994 08:49:60 GMT") == NOV_6_1994.replace(second=59)


def test_format_http_date_is_imf_fixdate_in_gmt_without_fraction() -> None:
    moment = datetime(2026, 3, 1, 1, 2, 3, 999_999, tzinfo=timezone(timedelta(hours=2)))
    assert format_http_date(moment) == "Sat, 28 Feb 2026 23:02:03 GMT"
    assert parse_http_date(format_http_date(moment)) == truncate_to_second(moment)


def test_last_modified_is_truncated_and_never_later_than_now() -> None:
    now = datetime(2026, 11, 26, 15, 0, 0, 500_000, tzinfo=UTC)
    assert last_modified(now - timedelta(seconds=1), now) == datetime(
        2026, 11, 26, 14, 59, 59, tzinfo=UTC
    )
    assert last_modified(now, now) == truncate_to_second(now)
    # A stamp from a host whose clock runs ahead is capped at this response's Date.
    assert last_modified(now + timedelta(hours=1), now) == truncate_to_second(now)


def test_parse_preconditions_joins_lines_and_ignores_bad_or_repeated_dates() -> None:
    parsed = parse_preconditions(
        if_match=['"1"', 'W/"2", "3"'],
        if_none_match=[],
        if_modified_since=["Sun, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT"],
        if_unmodified_since=["not a date"],
    )
    assert parsed == Preconditions(
        if_match=(STRONG_1, EntityTag("2", weak=True), EntityTag("3")),
        if_none_match=None,
        if_modified_since=None,
        if_unmodified_since=None,
    )
    later = NOV_6_1994 + timedelta(seconds=1)
    assert parsed.guards_write(later)
    assert not Preconditions(if_none_match=ANY).guards_write(later)
    assert not Preconditions(if_match=ANY).guards_write(later)
    assert not Preconditions(if_match=ANY, if_unmodified_since=NOV_6_1994).guards_write(later)
    assert Preconditions(if_unmodified_since=NOV_6_1994).guards_write(later)
    assert Preconditions(if_unmodified_since=NOV_6_1994).guards_write(NOV_6_1994)
    # A date later than any change made so far: every version meets it.
    assert not Preconditions(if_unmodified_since=later).guards_write(NOV_6_1994)


def test_parse_preconditions_names_the_malformed_field() -> None:
    with pytest.raises(MalformedHeader) as raised:
        parse_preconditions(
            if_match=[], if_none_match=["1"], if_modified_since=[], if_unmodified_since=[]
        )
    assert raised.value.field == "If-None-Match"


MODIFIED = datetime(2026, 11, 26, 15, 0, 0, 700_000, tzinfo=UTC)
SECOND = truncate_to_second(MODIFIED)
EARLIER = SECOND - timedelta(seconds=1)
CURRENT = EntityTag("3")
STALE = (EntityTag("2"),)

PROCEED, NOT_MODIFIED, FAILED = Outcome.PROCEED, Outcome.NOT_MODIFIED, Outcome.PRECONDITION_FAILED


@pytest.mark.parametrize(
    ("method", "preconditions", "outcome"),
    [
        ("PATCH", Preconditions(), PROCEED),
        # Step 1: If-Match, strong comparison.
        ("PATCH", Preconditions(if_match=(CURRENT,)), PROCEED),
        ("PATCH", Preconditions(if_match=(*STALE, CURRENT)), PROCEED),
        ("PATCH", Preconditions(if_match=ANY), PROCEED),
        ("PATCH", Preconditions(if_match=STALE), FAILED),
        ("PATCH", Preconditions(if_match=()), FAILED),
        ("PATCH", Preconditions(if_match=(EntityTag("3", weak=True),)), FAILED),
        ("GET", Preconditions(if_match=STALE), FAILED),
        # Step 2: If-Unmodified-Since, only without If-Match, at whole seconds.
        ("PATCH", Preconditions(if_unmodified_since=SECOND), PROCEED),
        ("PATCH", Preconditions(if_unmodified_since=EARLIER), FAILED),
        ("DELETE", Preconditions(if_unmodified_since=EARLIER), FAILED),
        ("PATCH", Preconditions(if_match=(CURRENT,), if_unmodified_since=EARLIER), PROCEED),
        # Step 3: If-None-Match, weak comparison; 304 for GET and HEAD, else 412.
        ("GET", Preconditions(if_none_match=(CURRENT,)), NOT_MODIFIED),
        ("HEAD", Preconditions(if_none_match=(EntityTag("3", weak=True),)), NOT_MODIFIED),
        ("GET", Preconditions(if_none_match=(*STALE, CURRENT)), NOT_MODIFIED),
        ("GET", Preconditions(if_none_match=ANY), NOT_MODIFIED),
        ("GET", Preconditions(if_none_match=STALE), PROCEED),
        ("PATCH", Preconditions(if_none_match=ANY), FAILED),
        ("PATCH", Preconditions(if_none_match=STALE), PROCEED),
        ("GET", Preconditions(if_match=STALE, if_none_match=(CURRENT,)), FAILED),
        # Step 4: If-Modified-Since, only for GET and HEAD and only without If-None-Match.
        ("GET", Preconditions(if_modified_since=SECOND), NOT_MODIFIED),
        ("HEAD", Preconditions(if_modified_since=SECOND + timedelta(days=1)), NOT_MODIFIED),
        ("GET", Preconditions(if_modified_since=EARLIER), PROCEED),
        ("PATCH", Preconditions(if_modified_since=SECOND), PROCEED),
        ("GET", Preconditions(if_none_match=STALE, if_modified_since=SECOND), PROCEED),
    ],
)
def test_evaluate_follows_rfc_9110_order(
    method: str, preconditions: Preconditions, outcome: Outcome
) -> None:
    result = evaluate(preconditions, method=method, etag=CURRENT, modified_at=MODIFIED)
    assert result is outcome


@pytest.mark.parametrize(
    ("method", "preconditions", "outcome"),
    [
        ("GET", Preconditions(), PROCEED),
        # It exists: * holds for If-Match and fails for If-None-Match.
        ("GET", Preconditions(if_match=ANY), PROCEED),
        ("POST", Preconditions(if_match=ANY), PROCEED),
        ("GET", Preconditions(if_none_match=ANY), NOT_MODIFIED),
        ("HEAD", Preconditions(if_none_match=ANY), NOT_MODIFIED),
        ("POST", Preconditions(if_none_match=ANY), FAILED),
        # It has no entity tag: no list matches.
        ("GET", Preconditions(if_match=(CURRENT,)), FAILED),
        ("POST", Preconditions(if_match=(CURRENT,)), FAILED),
        ("GET", Preconditions(if_none_match=(CURRENT,)), PROCEED),
        ("POST", Preconditions(if_none_match=(CURRENT,)), PROCEED),
        # It has no modification date: the dates are not evaluated (RFC 9110 13.1.3, 13.1.4).
        ("GET", Preconditions(if_modified_since=SECOND), PROCEED),
        ("POST", Preconditions(if_unmodified_since=EARLIER), PROCEED),
    ],
)
def test_evaluate_a_resource_without_validators(
    method: str, preconditions: Preconditions, outcome: Outcome
) -> None:
    assert evaluate(preconditions, method=method, etag=None, modified_at=None) is outcome


EARLIER_FORM = EntityTag("3")  # the same representation, as an earlier release tagged it
NEW_FORM = EntityTag("3-661e00e434a40")


@pytest.mark.parametrize(
    ("method", "preconditions", "outcome"),
    [
        ("PATCH", Preconditions(if_match=(NEW_FORM,)), PROCEED),
        ("PATCH", Preconditions(if_match=(EARLIER_FORM,)), PROCEED),
        ("PATCH", Preconditions(if_match=(EntityTag("3", weak=True),)), FAILED),
        ("PATCH", Preconditions(if_match=STALE), FAILED),
        ("GET", Preconditions(if_none_match=(EARLIER_FORM,)), NOT_MODIFIED),
        (
            "GET",
            Preconditions(if_none_match=(EntityTag("3-661e00e434a40", weak=True),)),
            NOT_MODIFIED,
        ),
        ("GET", Preconditions(if_none_match=(EntityTag("3-661e00e434a41"),)), PROCEED),
        ("PATCH", Preconditions(if_none_match=(EARLIER_FORM,)), FAILED),
    ],
)
def test_evaluate_matches_the_earlier_form_of_a_tag_as_the_tag_itself(
    method: str, preconditions: Preconditions, outcome: Outcome
) -> None:
    result = evaluate(
        preconditions,
        method=method,
        etag=NEW_FORM,
        earlier_etag=EARLIER_FORM,
        modified_at=MODIFIED,
    )
    assert result is outcome
