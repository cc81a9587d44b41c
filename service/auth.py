"""Bearer token authentication: a JWT from the identity provider, verified with PyJWT.

The token's algorithm must be on the configured allow-list, and each algorithm family is verified
with its own key (HS* with the shared secret, JWT_SECRET; RS*/PS*/ES*/EdDSA with the provider's
public key), so `alg: none` and a public key abused as an HMAC secret both fail. `exp` and `sub`
are required, `exp`/`nbf`/`iat` are checked with a small leeway, `iss` and `aud` when configured.
Every failure carries a `WWW-Authenticate: Bearer` challenge (RFC 6750 3): a token that does not
verify is 401 with `error="invalid_token"`, an Authorization header that is malformed (sent
twice, or Bearer without a token) 400 with `error="invalid_request"`, and one of another scheme
(Basic...) 401 with the bare challenge, as to a client that does not know this service takes
bearer tokens.
"""

import logging
import re
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Annotated, Any, NamedTuple

import jwt
from cachetools import TLRUCache
from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BadRequest, ServiceError
from service.jwks import JWKSKeys, SigningKeysUnavailable
from service.models import USER_ID_MAX
from service.openapi import Responses, header, is_under, problem_response
from service.pagination import INT4_MAX
from service.policy import ANONYMOUS, AuthenticationRequired, Principal, require_authenticated
from service.settings import (
    DEVELOPMENT_JWT_SECRET,
    SIGNING_ALGORITHMS,
    Settings,
    algorithms_verified_by,
)

logger = logging.getLogger(__name__)

# An auth-scheme is a token (RFC 9110 11.1): what follows it (a tab, a comma) is no part of it.
_AUTH_SCHEME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
EMPTY_BEARER = 'The Authorization header has no token: send "Bearer <token>".'
ANOTHER_SCHEME = 'This service takes a bearer token: send "Authorization: Bearer <token>".'

# What a token's subject and organizer_events must be: stored and compared in SQL.
SUBJECT_RULE = f"a string of 1 to {USER_ID_MAX} characters, without NUL or unpaired surrogates"
EVENT_IDS = range(1, INT4_MAX + 1)


def _challenge(error: str, description: str) -> dict[str, str]:
    # RFC 6750 leaves quotes and backslashes out of error_description.
    plain = description.replace('"', "'").replace("\\", "/")
    return {"WWW-Authenticate": f'Bearer error="{error}", error_description="{plain}"'}


class InvalidToken(ServiceError):
    status = 401
    slug = "invalid-token"

    def __init__(self, description: str) -> None:
        super().__init__(description, headers=_challenge("invalid_token", description))


class MalformedAuthorization(BadRequest):
    """400 for an Authorization header that is not one bearer token (RFC 6750 3.1:
    invalid_request, "SHOULD respond with the HTTP 400 (Bad Request) status code")."""

    def __init__(self, description: str) -> None:
        super().__init__(
            description,
            headers=_challenge("invalid_request", description),
            header="Authorization",
        )


# How much of the tokens it verified a verifier remembers: a client sends the same token with
# every request until it expires, and verifying it again (base64, JSON, the signature) costs more
# than serving a read. Bounded by memory, not by count: a token of 8 KiB can carry 1,200
# organizer_events, whose principal takes 70 KB (4,096 of them took 350 MB). Each is counted as
# its text and the principal's estimated size (_footprint); only tokens of up to
# REMEMBERED_TOKEN_MAX characters (identity providers' are a few hundred to a few thousand), and
# only tokens the identity provider signed, are kept.
VERIFIED_TOKENS_BYTES = 64 * 1024 * 1024
REMEMBERED_TOKEN_MAX = 8192
# The longest token verified at all: the work of a verification grows with the token (base64,
# JSON), and it runs on the event loop, so a header of megabytes, which uvicorn takes whole,
# would hold every request up for seconds. Four times the largest tokens providers issue (Entra
# ID's with 200 groups, about 12 KB; nginx's default header buffer takes 8 KB).
TOKEN_MAX = 32 * 1024
# Measured with tracemalloc (CPython 3.11): about 700 bytes an entry besides the strings of the
# token and of its subject (up to USER_ID_MAX characters), and 60 to 120 bytes an event id (an
# int, and its slot in a frozenset, whose table doubles). The token's text is counted twice, and
# 80 bytes more: TLRUCache leaves an entry it evicts in its heap of expiry times (an item that
# holds the key) until evicted ones outnumber the entries, so as many again may be held.
_ENTRY_BYTES = 700 + 80
_EVENT_BYTES = 128


LAST_REMEMBERED_EXP = 253_402_300_799  # 9999-12-31T23:59:59Z


class _Verified(NamedTuple):
    principal: Principal
    unusable_at: float  # exp plus the leeway
    footprint: int  # estimated bytes in memory


def _until_unusable(token: str, verified: _Verified, now: float) -> float:
    return verified.unusable_at


def _footprint(verified: _Verified) -> int:
    return verified.footprint


class _KeyNotHeld(Exception):
    """The token is signed with no key of the JWK Set as held (or none was fetched yet): it may
    be one the identity provider has published since."""


class TokenVerifier:
    """Verifies tokens against one configuration; built once per app.

    A token that verified is remembered, by its exact text, until it would no longer verify
    (`exp` plus the leeway): nothing else a verification checks changes over a token's life,
    since the settings are the app's for as long as it runs, and so are the keys, but a JWK
    Set's: when a fetch changes it, every token remembered is forgotten.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.algorithms = frozenset(settings.jwt_algorithms)
        self.secret = settings.jwt_secret or None
        # By algorithm, the keys that verify it (settings.public_keys: several while the identity
        # provider rotates its key).
        self.public_keys: dict[str, list[Any]] = defaultdict(list)
        for key in settings.public_keys():
            for algorithm in algorithms_verified_by(key) & self.algorithms:
                self.public_keys[algorithm].append(key)
        # The subject claim by name when it has no dots; else _principal finds it missing.
        required = ["exp"] + [settings.jwt_subject_claim] * ("." not in settings.jwt_subject_claim)
        required += ["iss"] * bool(settings.jwt_issuer) + ["aud"] * bool(settings.jwt_audience)
        self.options: Any = {"require": required, "enforce_minimum_key_length": True}
        # time.time, as PyJWT's own checks of exp use the wall clock.
        self._verified: TLRUCache[str, _Verified] = TLRUCache(
            VERIFIED_TOKENS_BYTES, ttu=_until_unusable, timer=time.time, getsizeof=_footprint
        )
        # Or the keys of the identity provider's JWK Set: a token verified with a key it then
        # withdraws must not stay remembered.
        self.jwks = (
            JWKSKeys(settings, on_change=self._verified.clear) if settings.jwt_jwks_url else None
        )

    def keys_kept_current(self) -> AbstractAsyncContextManager[None]:
        """For as long as the app runs: the JWK Set's keys fetched and kept current, if any."""
        return self.jwks.kept_current() if self.jwks else nullcontext()

    async def authenticate(self, token: str) -> Principal:
        """verify, and where the token is signed with no key of the JWK Set held, the set
        fetched again first (at most every service.jwks.UNKNOWN_KEY_COOLDOWN seconds)."""
        try:
            return self.verify(token)
        except _KeyNotHeld:
            assert self.jwks is not None
            await self.jwks.refresh_for_unknown_key()
        try:
            return self.verify(token)
        except _KeyNotHeld:
            assert self.jwks is not None
            if self.jwks.stale():  # the key may be published: the set could not be fetched
                raise SigningKeysUnavailable(self.jwks.retry_after()) from None
            raise InvalidToken(
                "The token is signed with no key of the identity provider's JWK Set as last "
                f"fetched, {self.jwks.seconds_since_fetch():.0f} s ago."
            ) from None

    def verify(self, token: str) -> Principal:
        if len(token) > TOKEN_MAX:  # before the cache, which would hash it
            raise InvalidToken(f"The token is longer than {TOKEN_MAX:,} characters.")
        if (verified := self._verified.get(token)) is not None:
            return verified.principal
        claims = self._decode(token)
        principal = self._principal(claims)
        # int(): as PyJWT reads exp (a numeric string passes its check too). Kept at most until
        # the year 9999: an exp of 10**309 passes PyJWT's check but is no float for the cache.
        exp = min(int(claims["exp"]), LAST_REMEMBERED_EXP)
        unusable_at = exp + self.settings.jwt_leeway_seconds
        if len(token) <= REMEMBERED_TOKEN_MAX:
            footprint = (
                2 * sys.getsizeof(token)
                + sys.getsizeof(principal.user_id)
                + _ENTRY_BYTES
                + _EVENT_BYTES * len(principal.organizer_events)
            )
            self._verified[token] = _Verified(principal, unusable_at, footprint)
        return principal

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            keys, conclusive = self._keys_of(algorithm, header.get("kid"))
            assert isinstance(algorithm, str)  # one that has keys
            claims = self._verified_claims(token, algorithm, keys, conclusive=conclusive)
        except jwt.ExpiredSignatureError:
            raise InvalidToken("The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("The token is not valid yet.") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("The token is for another audience.") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("The token is from another issuer.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f'The token lacks the "{exc.claim}" claim.') from None
        except jwt.exceptions.InvalidSubjectError:
            raise InvalidToken('The token\'s "sub" claim must be a string.') from None
        except (jwt.PyJWTError, ValueError, TypeError):
            # ValueError, TypeError: a key of another kind than the token's algorithm needs.
            raise InvalidToken("The token is malformed or its signature does not verify.") from None
        if "aud" in claims and not self.settings.jwt_audience:
            # PyJWT takes an empty aud ("" or []) for none: it is for no audience of ours either.
            raise InvalidToken("The token is for another audience.")
        return claims

    def _verified_claims(
        self, token: str, algorithm: str, keys: Sequence[Any], *, conclusive: bool
    ) -> dict[str, Any]:
        """The token's claims, verified with whichever of the keys signed it: each in turn, as
        PyJWT checks the signature before the claims, so only that key gets as far as them.
        A signature none verifies is _KeyNotHeld unless the keys are `conclusive`: every key
        that may have signed it (not so for a JWK Set's keys, but the one its kid names)."""

        def decode(key: Any) -> dict[str, Any]:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                # Lists: PyJWT takes a token that carries any one of them. (None: not checked.)
                audience=self.settings.jwt_audience or None,
                issuer=self.settings.jwt_issuer or None,
                leeway=self.settings.jwt_leeway_seconds,
                options=self.options,
            )
            return claims

        for key in keys[:-1]:
            try:
                return decode(key)
            except jwt.InvalidSignatureError:
                pass  # signed with another key
        try:
            return decode(keys[-1])
        except jwt.InvalidSignatureError:
            if conclusive:
                raise
            raise _KeyNotHeld() from None

    def _keys_of(self, algorithm: object, key_id: object) -> tuple[Sequence[Any], bool]:
        """The keys that may have signed a token of this algorithm and key id (its "kid"), at
        least one, and whether they are conclusive (see _verified_claims); else the token is
        refused, or _KeyNotHeld where a JWK Set fetched again may hold its key."""
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            raise InvalidToken(_refused_algorithm(algorithm, allowed=False))
        if self.jwks is None or algorithm.startswith("HS"):
            if keys := self.keys_for(algorithm):
                return keys, True
            raise InvalidToken(_refused_algorithm(algorithm, allowed=True))
        if not self.jwks.fetched:
            raise _KeyNotHeld()
        keys, named = self.jwks.keys_for(algorithm, key_id)
        if named and not keys:
            raise InvalidToken(f'The key the token names (its "kid") does not verify {algorithm}.')
        if not keys:
            raise _KeyNotHeld()
        return keys, named

    def keys_for(self, algorithm: object) -> Sequence[Any]:
        """The keys configured (JWT_SECRET, JWT_PUBLIC_KEY(_FILE)) that verify this algorithm's
        signatures, if it is allowed (JWT_ALGORITHMS); the JWK Set's are looked up by _keys_of."""
        if not isinstance(algorithm, str) or algorithm not in self.algorithms:
            return ()
        if algorithm.startswith("HS"):
            return (self.secret,) if self.secret else ()
        return self.public_keys.get(algorithm, ())

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        settings = self.settings
        user_id = _claim(claims, settings.jwt_subject_claim)
        if not _storable(user_id):
            raise InvalidToken(f"The subject must be {SUBJECT_RULE}.")
        roles = _claim(claims, settings.jwt_roles_claim)
        if roles is None:
            roles = []
        elif isinstance(roles, str):
            # Separated by spaces as OAuth 2's scope is (RFC 6749 3.3), by U+0020 only: one role
            # whose name holds another whitespace ("team\u00a0admin") is not two.
            roles = [role for role in roles.split(" ") if role]
        if not _all(roles, str):
            raise InvalidToken(
                f'The "{settings.jwt_roles_claim}" claim must be a list of strings, or a string.'
            )
        events = _claim(claims, settings.jwt_organizer_events_claim)
        if events is None:
            events = []
        if not _all(events, int) or not all(event in EVENT_IDS for event in events):
            raise InvalidToken(
                f'The "{settings.jwt_organizer_events_claim}" claim must be a list of event ids.'
            )
        return Principal(
            user_id=user_id,
            is_admin=settings.jwt_admin_role in roles,
            organizer_events=frozenset(events),
        )


def _storable(user_id: object) -> bool:
    # The subject is stored (creator_id, idempotency keys) and compared in SQL: text that
    # PostgreSQL cannot hold would fail the statement.
    if not isinstance(user_id, str) or not 0 < len(user_id) <= USER_ID_MAX or "\x00" in user_id:
        return False
    try:
        user_id.encode()
    except UnicodeEncodeError:
        return False
    return True


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at a path into nested claims ("realm_access.roles"). A name with dots of its
    own is written with them escaped ("resource_access.sessions\\.example\\.com.roles", as
    Keycloak's mappers write one), or is the whole path (Auth0's "https://example.com/roles"):
    never guessed, since which names a token holds is not always the identity provider's
    administrators' alone (a client named "sessions.roles" must not pass for the roles of the
    client "sessions")."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for name in _claim_names(path):
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


def _claim_names(path: str) -> list[str]:
    """A claim path's names: split at its dots, but those escaped with a backslash."""
    return [name.replace("\\.", ".") for name in re.split(r"(?<!\\)\.", path)]


def _all(values: object, kind: type) -> bool:
    # bool is an int in Python, never an event id or a role.
    return isinstance(values, list) and all(
        isinstance(v, kind) and not isinstance(v, bool) for v in values
    )


def _refused_algorithm(algorithm: object, *, allowed: bool) -> str:
    """Why a token of this algorithm is refused: not allowed (JWT_ALGORITHMS), or no key for it
    configured. Named where it is a JWS algorithm, not whatever a header holds."""
    if algorithm == "none":
        return 'The token is not signed (its "alg" is "none").'
    if allowed:
        return f"The token is signed with {algorithm}, for which this service holds no key."
    if isinstance(algorithm, str) and algorithm in SIGNING_ALGORITHMS:
        return f"The token is signed with {algorithm}, which this service does not accept."
    return 'The token\'s "alg" is no signing algorithm this service accepts.'


def create_token_verifier(settings: Settings) -> TokenVerifier:
    """The verifier for these settings; a key configuration that lets nobody in, or anyone with
    the development secret, is logged as a warning."""
    verifier = TokenVerifier(settings)
    if verifier.secret == DEVELOPMENT_JWT_SECRET and "HS256" in verifier.algorithms:
        logger.warning(
            "accepting HS256 tokens signed with the development secret: "
            "set JWT_SECRET (or leave HS256 out of JWT_ALGORITHMS) in production"
        )
    elif verifier.jwks is None and not any(map(verifier.keys_for, verifier.algorithms)):
        logger.warning(
            "no key for any of JWT_ALGORITHMS (JWT_SECRET for HS*, JWT_PUBLIC_KEY(_FILE) for "
            "the others): every bearer token is refused, so nothing can be written"
        )
    return verifier


def token_verifier(app: FastAPI) -> TokenVerifier:
    """The app's verifier (service.main.configure builds it)."""
    verifier: TokenVerifier = app.state.token_verifier
    return verifier


# Where a request's principal is kept, in its ASGI scope, once authenticated.
_PRINCIPAL = "sessions_service.principal"


class BearerAuthentication(HTTPBearer):
    """The principal of a request, from its bearer token; anonymous without an Authorization
    header, unless `required`.

    An HTTPBearer itself, so that one dependency both authenticates and documents the scheme
    (FastAPI puts a dependency that is an HTTPBearer in the OpenAPI security requirements):
    FastAPI solves each dependency of every request, and a second one only to parse the header
    would cost more than looking up a token that was verified before.
    """

    def __init__(self, *, required: bool) -> None:
        super().__init__(
            auto_error=False,
            bearerFormat="JWT",
            scheme_name="HTTPBearer",
            description="A JWT from the identity provider; claims `sub`, `roles`, "
            "`organizer_events`.",
        )
        self.required = required

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        # Once per request: a route that takes a body authenticates before FastAPI reads it
        # (service.inputs), and FastAPI then solves this dependency.
        principal: Principal | None = request.scope.get(_PRINCIPAL)
        if principal is None:
            principal = request.scope[_PRINCIPAL] = await self._authenticate(request)
        return require_authenticated(principal) if self.required else principal

    async def _authenticate(self, request: Request) -> Principal:
        if len(request.headers.getlist("authorization")) > 1:
            # A singleton field (RFC 9110 11.6.2): no telling which one a proxy on the way read.
            raise MalformedAuthorization("Send one Authorization header.")
        credentials = await super().__call__(request)
        if credentials is not None:
            return await token_verifier(request.app).authenticate(credentials.credentials)
        authorization = request.headers.get("authorization")
        if not authorization:  # absent, or sent empty (as clients clear a default header)
            return ANONYMOUS
        scheme = _AUTH_SCHEME.match(authorization)
        if scheme and scheme.group().lower() == "bearer":
            raise MalformedAuthorization(EMPTY_BEARER)
        # RFC 6750 3: to a client that tried another authentication method, the bare challenge.
        raise AuthenticationRequired(ANOTHER_SCHEME)


class VaryByAuthorization:
    """Responses under `prefix` say that they vary by the Authorization header.

    What the sessions routes answer depends on who asks: a draft is a 404 to an anonymous caller
    and a 200 to its speaker, lists and the change feed are filtered, a write may be 401 or 403.
    A cache that stored one caller's answer must not hand it to another (RFC 9110 12.5.5); a 304
    carries Vary as its 200 would (RFC 9110 15.4.5).
    """

    def __init__(self, app: ASGIApp, *, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_under(scope["path"], self.prefix):
            await self.app(scope, receive, send)
            return

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), _VARY_AUTHORIZATION]
            await send(message)

        await self.app(scope, receive, send_with_vary)


_VARY_AUTHORIZATION = (b"vary", b"Authorization")
# OpenAPI: on every response under the prefix (CORS adds Origin to it, when it is on).
VARY_RESPONSE_HEADER = header(
    "Authorization: the answer depends on the caller's token, so a cache must not hand it to "
    "another caller. `Authorization, Origin` when CORS_ORIGINS is set.",
) | {"required": True}


# OpenAPI: what authentication and the rules answer. The operations' 400s name this cause
# among theirs.
MALFORMED_AUTHORIZATION = (
    "the Authorization header is sent twice, or says Bearer without a token (`header`; "
    'WWW-Authenticate: Bearer error="invalid_request")'
)
_INVALID_TOKEN = problem_response(
    401,
    "The bearer token is missing (writes), malformed, expired, not signed by the identity "
    'provider or not for this service (WWW-Authenticate: Bearer error="invalid_token"), or the '
    "Authorization header is of another scheme than Bearer (WWW-Authenticate: Bearer).",
    headers={"WWW-Authenticate": header('Bearer, with error="invalid_token" for a bad token.')},
) | {
    # Added to the operation's own 400, whose description names MALFORMED_AUTHORIZATION.
    400: {
        "headers": {
            "WWW-Authenticate": header(
                'Bearer error="invalid_request", when the Authorization header is malformed.'
            )
        }
    }
}
_NOT_FOUND = problem_response(
    404,
    "No such session, or one the caller may not see.",
    headers={
        "Cache-Control": header(
            "no-store: the session may be created, or become visible, at any time."
        )
    },
)
_FORBIDDEN = problem_response(
    403,
    "The caller may see the session but not do this; `rule` names the rule "
    "(GET /sessions/states lists the state transitions). Nothing changed.",
)
LIST_AUTH_RESPONSES: Responses = _INVALID_TOKEN
READ_AUTH_RESPONSES: Responses = _INVALID_TOKEN | _NOT_FOUND
CREATE_AUTH_RESPONSES: Responses = _INVALID_TOKEN | _FORBIDDEN
WRITE_AUTH_RESPONSES: Responses = READ_AUTH_RESPONSES | _FORBIDDEN

# For the read operations' openapi_extra: FastAPI appends it to their security list, making the
# token optional in the spec ({} is "no authentication"), as it is in fact.
OPTIONAL_BEARER: dict[str, Any] = {"security": [{}]}
# For an operation that never reads a token: said outright (an empty list), where an absent one
# would mean the document's own security requirements, which linters ask to be declared.
NO_AUTHENTICATION: dict[str, Any] = {"security": []}

# A reader: anonymous or signed in. A writer: signed in (401 otherwise).
Reader = Annotated[Principal, Depends(BearerAuthentication(required=False))]
Writer = Annotated[Principal, Depends(BearerAuthentication(required=True))]


def issue_token(
    settings: Settings,
    subject: str,
    *,
    organizer_events: Iterable[int] = (),
    admin: bool = False,
    lifetime_seconds: int = 3600,
) -> str:
    """An HS256 token signed with the configured secret, for development and tests; ValueError
    for a subject, an event id or a lifetime that the service would refuse (whether it takes
    HS256 at all is JWT_ALGORITHMS', which `sessions-service token` warns of)."""
    if not settings.jwt_secret:
        raise ValueError("JWT_SECRET is not set: there is no key to sign with")
    events = sorted(set(organizer_events))
    if not _storable(subject):
        raise ValueError(f"the subject must be {SUBJECT_RULE}")
    if not all(event in EVENT_IDS for event in events):
        raise ValueError(f"an organizer's event id must be from 1 to {INT4_MAX}")
    if lifetime_seconds <= 0:
        raise ValueError("the lifetime must be a positive number of seconds")
    now = int(time.time())
    claims: dict[str, Any] = {"iat": now, "exp": now + lifetime_seconds}
    _set_claim(claims, settings.jwt_subject_claim, subject)
    _set_claim(claims, settings.jwt_roles_claim, [settings.jwt_admin_role] if admin else [])
    _set_claim(claims, settings.jwt_organizer_events_claim, events)
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer[0]
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience[0]
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def _set_claim(claims: dict[str, Any], path: str, value: Any) -> None:
    *parents, name = _claim_names(path)
    for parent in parents:
        claims = claims.setdefault(parent, {})
    claims[name] = value
