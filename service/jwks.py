"""The identity provider's signing keys, from its JWK Set document (JWT_JWKS_URL), kept current.

Providers publish their keys at such a URL (OpenID Connect's `jwks_uri`) and roll them on their
own schedule: Entra ID at any time, Google every week or two, Keycloak when an administrator
adds a key. The document is fetched when the service starts, again every
JWT_JWKS_REFRESH_SECONDS (so a key the provider withdraws stops verifying), and at once when a
token names a key id (`kid`) the document did not hold: the provider has begun signing with a
new key. That last fetch is at most one per UNKNOWN_KEY_COOLDOWN seconds, so tokens with made-up
key ids cannot turn the service into a flood of requests to the provider.

A fetch that fails (the provider down, a document that holds no key this service can use) keeps
the keys already held, so a brief outage of the provider refuses no token; until a first fetch
succeeds, a token that needs the keys is a 503 (SigningKeysUnavailable), not a 401 that blames
the token. PyJWT fetches and parses the document (`PyJWKClient`, in a thread: its HTTP client
blocks) and parses each key (`PyJWK`).
"""

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK, PyJWKClient

from service.errors import ServiceError
from service.settings import RSA_KEY_BITS_MIN, Settings, algorithms_verified_by, is_plain_http

logger = logging.getLogger(__name__)

# The least time between two fetches that a token's unknown key id may cause.
UNKNOWN_KEY_COOLDOWN = 30.0
# How long a fetch may take; a request that waits for one waits that long at most.
FETCH_TIMEOUT = 5.0
USER_AGENT = "sessions-service (JWKS)"


class SigningKeysUnavailable(ServiceError):
    """503: a token needs the identity provider's keys, and none could be fetched yet."""

    status = 503
    slug = "signing-keys-unavailable"

    def __init__(self) -> None:
        super().__init__(
            "The identity provider's signing keys cannot be fetched now, so no token can be "
            "verified; retry shortly.",
            headers={"Retry-After": str(math.ceil(UNKNOWN_KEY_COOLDOWN))},
        )


# By key id (None for a key without one), by algorithm, the keys that verify it.
KeyIndex = dict[str | None, dict[str, list[Any]]]


def index_keys(jwk_set: object, algorithms: frozenset[str]) -> KeyIndex:
    """The document's keys that verify signatures of the allowed algorithms, by id and algorithm.

    Left out: keys for encryption (`use` other than `sig`), symmetric keys (`oct`: a published
    key must never verify an HS token), keys whose `alg` is not allowed, keys PyJWT cannot read
    (an unknown `kty` or curve), and RSA keys shorter than PyJWT verifies with."""
    keys = jwk_set.get("keys") if isinstance(jwk_set, dict) else None
    if not isinstance(keys, list):
        raise ValueError('the document is no JWK Set (no "keys" list)')
    index: KeyIndex = defaultdict(lambda: defaultdict(list))
    for data in keys:
        if (
            not isinstance(data, dict)
            or data.get("use", "sig") != "sig"
            or data.get("kty") == "oct"
        ):
            continue
        try:
            jwk = PyJWK(data)
        except (jwt.PyJWTError, TypeError):  # TypeError: an "alg" that is no string
            continue
        key_id = data.get("kid")
        if isinstance(jwk.key, RSAPublicKey) and jwk.key.key_size < RSA_KEY_BITS_MIN:
            logger.warning("JWKS key %r left out: an RSA key of under 2048 bits", key_id)
            continue
        verifies = algorithms_verified_by(jwk.key) & algorithms
        if "alg" in data:  # the one algorithm the key is for (RFC 7517 4.4)
            verifies &= {data["alg"]}
        for algorithm in verifies:
            index[key_id if isinstance(key_id, str) else None][algorithm].append(jwk.key)
    return {key_id: dict(by) for key_id, by in index.items()}


class JWKSKeys:
    """The keys of the document at one URL, as last fetched; refreshed on the event loop."""

    def __init__(self, settings: Settings, *, on_change: Callable[[], None]) -> None:
        assert settings.jwt_jwks_url is not None
        self.url = settings.jwt_jwks_url
        self.algorithms = frozenset(settings.jwt_algorithms)
        self.refresh_seconds = settings.jwt_jwks_refresh_seconds
        self.on_change = on_change
        self._client = PyJWKClient(
            self.url,
            cache_jwk_set=False,  # kept here, as parsed keys
            timeout=FETCH_TIMEOUT,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )
        self._index: KeyIndex = {}
        self._document: object = None  # as last fetched, to tell a change
        self.fetched = False  # a fetch has succeeded
        self._failing = False  # the last fetch failed
        self._fetching: asyncio.Future[None] | None = None
        self._last_attempt = -math.inf  # time.monotonic()

    def keys_for(self, algorithm: str, key_id: object) -> Sequence[Any] | None:
        """The keys that may have signed a token of this algorithm and key id (any key of the
        algorithm for a token without one); None if the document held no key of that id."""
        if key_id is None:
            return [key for keys in self._index.values() for key in keys.get(algorithm, ())]
        if not isinstance(key_id, str) or key_id not in self._index:
            return None
        return self._index[key_id].get(algorithm, ())

    async def refresh_for_unknown_key(self) -> None:
        """Fetch the document again for a key id it did not hold, unless it was fetched (or
        tried) within UNKNOWN_KEY_COOLDOWN; a fetch already under way is waited for."""
        if self._fetching is None and time.monotonic() - self._last_attempt < UNKNOWN_KEY_COOLDOWN:
            return
        await self.refresh()

    async def refresh(self) -> None:
        """Fetch the document; one fetch at a time, which every caller meanwhile waits for."""
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
            self._fetching.add_done_callback(self._fetched)
        # Shielded: a caller cancelled (its client went away) leaves the fetch to the others.
        await asyncio.shield(self._fetching)

    def _fetched(self, fetch: asyncio.Future[None]) -> None:
        self._fetching = None

    async def _fetch(self) -> None:
        self._last_attempt = time.monotonic()
        self._failing = True
        try:
            document = await asyncio.to_thread(self._client.fetch_data)
            index = index_keys(document, self.algorithms)
        except (jwt.PyJWTError, OSError, ValueError) as exc:
            # OSError: the connection lost while the answer was read; ValueError: not JSON (or
            # not UTF-8), or no JWK Set. PyJWT's messages name the error of the fetch ("Fail to
            # fetch data from the url, err: HTTP Error 404: Not Found"), never a key.
            logger.warning("JWKS not fetched from %s: %s", self.url, exc)
            return
        if not index:
            logger.warning(
                "JWKS from %s holds no key for JWT_ALGORITHMS (%s): the keys held are kept",
                self.url,
                ",".join(sorted(self.algorithms)),
            )
            return
        self._failing = False
        if document == self._document:
            return
        self._index, self._document = index, document
        if self.fetched:
            # Tokens remembered as verified may have been signed with a key now withdrawn.
            self.on_change()
        self.fetched = True
        logger.info("JWKS from %s: key ids %s", self.url, sorted(map(str, index)))

    @asynccontextmanager
    async def kept_current(self) -> AsyncIterator[None]:
        """Fetch the keys now, then every JWT_JWKS_REFRESH_SECONDS (every UNKNOWN_KEY_COOLDOWN
        after a fetch that failed), for as long as the app runs."""
        if is_plain_http(self.url):
            logger.warning(
                "JWT_JWKS_URL is plain HTTP: anyone on the way to %s can substitute keys and "
                "sign tokens; use https outside development",
                self.url,
            )
        await self.refresh()

        async def keep_current() -> None:
            while True:
                retry = min(UNKNOWN_KEY_COOLDOWN, self.refresh_seconds)
                await asyncio.sleep(retry if self._failing else self.refresh_seconds)
                await self.refresh()

        task = asyncio.create_task(keep_current(), name="jwks-refresh")
        try:
            yield
        finally:
            task.cancel()
