"""Who may do what with a session: the workflow as data, and the functions that apply it.

Route handlers ask here and nowhere else. Queries apply the same visibility in SQL (a
Visibility, as service.repository's _VISIBLE reads it; SessionFilter.may_match skips a query
that could find nothing): tests/test_policy.py holds GET, lists and filtered lists to one
table of who sees what. The tables follow the Open Event Server
(`app/api/sessions.py`, `SESSION_STATE_DICT`); `GET /sessions/states` publishes them.

Standing, from most to least: an admin may do everything; an organiser of the session's event
everything on that event's sessions, moving states by the organiser table; the creator (speaker)
reads, edits and deletes their own sessions, moving states by the speaker table, and not once the
session is locked; anyone else, signed in or not, reads public sessions only. What someone may not
see does not exist for them (404, never 403), so a refusal never tells that a session exists.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from service.errors import ForbiddenRule, ServiceError
from service.models import PUBLIC_STATES, STATES

# The states a session may be created in by someone who does not organise its event.
SPEAKER_CREATE_STATES = frozenset({"draft", "pending"})

# state -> the states its speaker may move it to, as in SESSION_STATE_DICT: a draft only to
# pending (a speaker deletes a draft they do not want; a withdrawn one, which organisers may move
# back, would reach them unsubmitted), any submitted state to withdrawn, final for a speaker.
SPEAKER_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "draft": frozenset({"pending"}),
    "pending": frozenset({"withdrawn"}),
    "accepted": frozenset({"withdrawn"}),
    "confirmed": frozenset({"withdrawn"}),
    "rejected": frozenset({"withdrawn"}),
    "canceled": frozenset({"withdrawn"}),
    "withdrawn": frozenset(),
}

# state -> the states an organiser of the event may move it to, as in SESSION_STATE_DICT
# (its "withdrawn -> withdrawn" self-loop left out: staying in a state is no transition).
ORGANIZER_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "draft": frozenset(),  # a draft is its speaker's until submitted
    "pending": frozenset({"accepted", "confirmed", "rejected", "withdrawn"}),
    "accepted": frozenset({"pending", "confirmed", "rejected", "canceled", "withdrawn"}),
    "confirmed": frozenset({"pending", "accepted", "rejected", "canceled", "withdrawn"}),
    "rejected": frozenset({"pending", "accepted", "confirmed", "withdrawn"}),
    "canceled": frozenset({"pending", "accepted", "confirmed", "rejected", "withdrawn"}),
    "withdrawn": frozenset({"pending", "accepted", "rejected", "canceled"}),
}

# Fields only an organiser of the event (or an admin) may set, and what setting each does: the
# lock, and the room, which organisers assign (the Open Event Server drops a speaker's).
ORGANIZER_FIELDS: Mapping[str, str] = {
    "is_locked": "lock or unlock this session",
    "microlocation_id": "assign this session's room (microlocation_id)",
}


@dataclass(frozen=True)
class Principal:
    """Who is asking: the verified claims of a bearer token, or nobody (user_id None)."""

    user_id: str | None = None
    is_admin: bool = False
    organizer_events: frozenset[int] = field(default_factory=frozenset)

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None

    def organizes(self, event_id: int) -> bool:
        return event_id in self.organizer_events


ANONYMOUS = Principal()


class SessionFacts(Protocol):
    """What the rules need to know of a stored session."""

    @property
    def event_id(self) -> int: ...
    @property
    def creator_id(self) -> str | None: ...
    @property
    def state(self) -> str: ...
    @property
    def is_locked(self) -> bool: ...


class Forbidden(ServiceError):
    """403: the user may see the session but not do this to it; `rule` names the rule."""

    status = 403
    slug = "forbidden"

    def __init__(self, rule: ForbiddenRule, detail: str, **extensions: Any) -> None:
        super().__init__(detail, rule=rule, **extensions)


class AuthenticationRequired(ServiceError):
    """401 for a write without a token, or a request with credentials of another scheme (RFC
    6750 3: a bare challenge, no error code)."""

    status = 401
    slug = "authentication-required"

    def __init__(self, detail: str = "Sign in: this needs a bearer token.") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class Visibility:
    """Which sessions a principal may see, for a query: all, or the union of the parts."""

    everything: bool
    states: frozenset[str] = PUBLIC_STATES
    creator_id: str | None = None
    event_ids: frozenset[int] = frozenset()
    # Also the sessions it may hold a copy of, whatever they are now: those that have been
    # public (ever_public), and those that left its events (organisers saw them there).
    held: bool = False


def visibility(principal: Principal) -> Visibility:
    if principal.is_admin:
        return Visibility(everything=True)
    return Visibility(
        everything=False,
        creator_id=principal.user_id,
        event_ids=principal.organizer_events,
    )


def feed_visibility(principal: Principal) -> Visibility:
    """The sessions whose changes the change feed serves a principal: those it may see, whole,
    and as tombstones those it may hold a copy of but no longer see: sessions it could see
    before they were deleted or moved to another event (the same rule, on the stored session
    and on the event it left), and sessions that have been public (anyone may hold those). A
    session that has never been public is no one else's business, its id included."""
    return replace(visibility(principal), held=True)


def changeable(principal: Principal) -> Visibility:
    """The sessions a principal may change or delete at all (the standing that check_may_change
    and check_delete ask first): their own and their events', every one for an admin. As a
    Visibility: what the locking read of a write locks (the public states give no standing)."""
    return replace(visibility(principal), states=frozenset())


def _owns(principal: Principal, session: SessionFacts) -> bool:
    return principal.is_authenticated and session.creator_id == principal.user_id


def _manages(principal: Principal, event_id: int) -> bool:
    return principal.is_admin or principal.organizes(event_id)


def can_see(principal: Principal, session: SessionFacts) -> bool:
    return (
        session.state in PUBLIC_STATES
        or _manages(principal, session.event_id)
        or _owns(principal, session)
    )


def transitions_for(
    principal: Principal, session: SessionFacts, *, organizer: bool
) -> frozenset[str]:
    """The states this principal may move this session to (admins: see check_changes), with an
    organiser's rights or without them."""
    allowed: frozenset[str] = frozenset()
    if organizer:
        allowed |= ORGANIZER_TRANSITIONS[session.state]
    if _owns(principal, session):
        allowed |= SPEAKER_TRANSITIONS[session.state]
    return allowed


def require_authenticated(principal: Principal) -> Principal:
    """Writes need a signed-in user, whatever they write to."""
    if not principal.is_authenticated:
        raise AuthenticationRequired
    return principal


def check_create(principal: Principal, values: Mapping[str, Any]) -> None:
    require_authenticated(principal)
    if _manages(principal, values["event_id"]):
        return
    if values["state"] not in SPEAKER_CREATE_STATES:
        raise Forbidden(
            "speaker-create-states",
            f"Only an organiser of event {values['event_id']} may create a session in state "
            f'"{values["state"]}"; create it as "draft" or "pending".',
        )
    if set_fields := [name for name in ORGANIZER_FIELDS if values.get(name)]:
        raise _organizer_fields(set_fields, f"event {values['event_id']}")


def check_may_change(principal: Principal, session: SessionFacts) -> None:
    """Raise unless the principal may change this session at all, whatever a patch holds; call
    after can_see."""
    require_authenticated(principal)
    if not principal.is_admin:
        _check_standing(principal, session, "change")


def check_changes(principal: Principal, session: SessionFacts, changes: Mapping[str, Any]) -> None:
    """Raise unless the principal may apply these real changes; call after check_may_change.

    Only real changes are judged, so echoing a session back unchanged is never refused for its
    locked or state fields.
    """
    if principal.is_admin or not changes:
        return
    _check_lock(principal, session, "change")
    event_id = changes.get("event_id", session.event_id)
    if event_id != session.event_id:
        _check_event_change(principal, session, event_id)
    # An organiser's rights over a session that moves hold only if they organise both events:
    # a speaker who organises another event moves their draft as its speaker.
    organizer = principal.organizes(session.event_id) and principal.organizes(event_id)
    if "state" in changes:
        _check_transition(principal, session, changes["state"], organizer=organizer)
    if not organizer and (set_fields := [name for name in ORGANIZER_FIELDS if name in changes]):
        events = f"event {event_id}"
        if event_id != session.event_id:
            events = f"both events {session.event_id} and {event_id}"
        raise _organizer_fields(set_fields, events)


def _organizer_fields(names: list[str], events: str) -> Forbidden:
    does = ", or ".join(ORGANIZER_FIELDS[name] for name in names)
    return Forbidden("organizer-fields", f"Only an organiser of {events} may {does}.")


def check_delete(principal: Principal, session: SessionFacts) -> None:
    require_authenticated(principal)
    if not principal.is_admin:
        _check_standing(principal, session, "delete")
        _check_lock(principal, session, "delete")


def _check_standing(principal: Principal, session: SessionFacts, action: str) -> None:
    if not (principal.organizes(session.event_id) or _owns(principal, session)):
        raise Forbidden(
            "owner-only", f"Only its speaker or an organiser may {action} this session."
        )


def _check_lock(principal: Principal, session: SessionFacts, action: str) -> None:
    if session.is_locked and not principal.organizes(session.event_id):
        raise Forbidden("locked", f"The session is locked: only an organiser may {action} it now.")


def _check_event_change(principal: Principal, session: SessionFacts, event_id: int) -> None:
    if principal.organizes(session.event_id) and principal.organizes(event_id):
        return
    # A submitted session was submitted to its event: moving it would skip the other's review.
    if _owns(principal, session) and session.state == "draft":
        return
    raise Forbidden(
        "event-change",
        "A speaker may move only a draft to another event, an organiser only between "
        "events they organise.",
    )


def _check_transition(
    principal: Principal, session: SessionFacts, new_state: str, *, organizer: bool
) -> None:
    if new_state in transitions_for(principal, session, organizer=organizer):
        return
    table: ForbiddenRule = "organizer-transitions" if organizer else "speaker-transitions"
    raise Forbidden(
        table,
        f'You cannot change a session\'s state from "{session.state}" to "{new_state}".',
        from_state=session.state,
        to_state=new_state,
    )


def state_tables() -> dict[str, Any]:
    """The rules as data, for GET /sessions/states."""
    return {
        "states": list(STATES),
        "public_states": sorted(PUBLIC_STATES, key=STATES.index),
        "speaker_create_states": sorted(SPEAKER_CREATE_STATES, key=STATES.index),
        "speaker": {s: sorted(to, key=STATES.index) for s, to in SPEAKER_TRANSITIONS.items()},
        "organizer": {s: sorted(to, key=STATES.index) for s, to in ORGANIZER_TRANSITIONS.items()},
        "organizer_fields": list(ORGANIZER_FIELDS),
    }
