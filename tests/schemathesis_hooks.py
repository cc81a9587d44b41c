"""schemathesis' extensions for this service, named by schemathesis.toml (`hooks`): loaded by
`schemathesis run` and by tests/test_schemathesis.py alike.

How clients send date-times, and the one check that knows the rules JSON Schema cannot state.
"""

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import schemathesis
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.schemas import INPUT_YEARS

# Date-times as clients send them: RFC 3339 with an offset, in the years the service takes, as
# sent (the schema's pattern) and in UTC. Drawn so directly: from any year, as by default, the
# pattern would throw nearly all of them away.
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
schemathesis.openapi.format(
    "date-time",
    st.datetimes(
        min_value=datetime(INPUT_YEARS[0], 1, 1),
        max_value=datetime(INPUT_YEARS[-1], 12, 31, 23, 59, 59, 999999),
        timezones=OFFSETS,
    )
    .filter(lambda value: value.astimezone(UTC).year in INPUT_YEARS)
    .map(datetime.isoformat),
)


@schemathesis.check
def valid_data_is_accepted(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """schemathesis' positive_data_acceptance (which schemathesis.toml turns off), but for the
    rules JSON Schema cannot state.

    They relate two values: ends_at must be later than starts_at (on the merged session for a
    PATCH, so it depends on the stored row too), and a sort key may be given once; or they hold
    for what is stored: HTML once sanitised, a URL once normalised. A
    schema-valid request that breaks one gets the documented 422 with that error alone; every
    other schema-valid request must still be accepted.
    """
    if response.status_code == 422 and response.content:
        errors = response.json().get("errors", [])
        if len(errors) == 1 and _breaks_a_cross_field_rule(errors[0]):
            return None
    return positive_data_acceptance(ctx, response, case)


def _breaks_a_cross_field_rule(error: dict[str, Any]) -> bool:
    message = str(error["message"])
    if error["type"] == "ends_before_start":
        # By the patch's own validator, or against the stored row: either end.
        return error["location"] in (["body", "ends_at"], ["body", "starts_at"])
    if error["location"] == ["query", "sort"]:
        return message.endswith("is given twice")
    if error["location"] == ["header", "Idempotency-Key"]:
        # A key drawn again for another body: 422 by the draft, whatever the schema says.
        return message.startswith("was first sent with another request body")
    if error["location"][0] == "body":
        # Limits on what is stored, which the field descriptions state: HTML once sanitised
        # (& is &amp;), a URL once normalised, with a host ("https://" is a URI), its port up
        # to 65535 and an IP address a valid one ("https://1.2.3.999/", "http://[v1.x]/" are).
        return message.endswith(("once sanitised", "once normalised")) or (
            error["type"] == "url_parsing"
            and any(part in message for part in ("host", "port", "IPv4", "IPv6"))
        )
    return False
