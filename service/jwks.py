"""The identity provider's signing keys, from its JWK Set document (JWT_JWKS_URL), kept current.

Providers publish their keys at such a URL (OpenID Connect's `jwks_uri`) and roll them on their
own schedule: Entra ID at any time, Google every week or two, Keycloak when an administrator
adds a key. The document is fetched when the service starts, again every
JWT_JWKS_REFRESH_SECONDS (so a key the provider withdraws stops verifying), and at once when a
token is signed with no key held that may have signed it (a key id, `kid`, the document did not
hold, or none of the keys without one): the provider has begun signing with a new key. That
last fetch is at most one per UNKNOWN_KEY_COOLDOWN seconds, so forged tokens cannot turn the
service into a flood of requests to the provider.

The document as last fetched counts, even where it holds no key this service can use. A fetch
that fails (the provider down, an answer that is no JWK Set) keeps the keys already held, so a
brief outage of the provider refuses no token they verify; while the set cannot be fetched, a
token whose key is not held is a 503 (SigningKeysUnavailable), not a 401 that blames the token.
A fetch is bounded in time (FETCH_TIMEOUT, the whole of it) and size
(JWKS_MAX_BYTES), on the event loop (httpx); PyJWT reads each key (`PyJWK`). Nothing a provider
sends can fail a request with a 500 or stop the refreshes: a key the service cannot read is left
out, a document it cannot read is a failed fetch.
"""

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK

from service.errors import ServiceError
from service.settings import RSA_KEY_BITS_MIN, Settings, algorithms_verified_by, is_plain_http

logger = logging.getLogger(__name__)

# The least time between two fetches that a token's unknown key id may cause.
UNKNOWN_KEY_COOLDOWN = 30.0
# How long a whole fetch may take (connecting, TLS, the answer); a request that waits for one
# waits that long at most.
FETCH_TIMEOUT = 5.0
# Providers' sets are a few KB (a handful of keys, certificates included).
JWKS_MAX_BYTES = 1024 * 1024
USER_AGENT = "sessions-service (JWKS)"


class FetchFailed(Exception):
    """The provider's answer is no JWK Set this service can read."""


class SigningKeysUnavailable(ServiceError):
    """503: a token needs a key of the identity provider's JWK Set, which could not be fetched
    (ever, or when last tried): the key may well be published."""

    status = 503
    slug = "signing-keys-unavailable"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "The identity provider's signing keys cannot be fetched now, so the token cannot be "
            "verified; retry shortly.",
            headers={"Retry-After": str(retry_after)},
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
        raise FetchFailed('the document is no JWK Set (no "keys" list)')
    index: KeyIndex = defaultdict(lambda: defaultdict(list))
    for data in keys:
        if (
            not isinstance(data, dict)
            or data.get("use", "sig") != "sig"
            or data.get("kty") == "oct"
        ):
            continue
        # A kid that is no string is none: a token's kid is a string (PyJWT refuses others).
        key_id = kid if isinstance(kid := data.get("kid"), str) else None
        try:
            jwk = PyJWK(data)
        except Exception:
            # PyJWT's errors, and what its parsing lets through: TypeError for an "alg" that is
            # no string, NotImplementedError for "alg": "none".
            logger.warning("JWKS key %r left out: not a key PyJWT can read", key_id)
            continue
        if isinstance(jwk.key, RSAPublicKey) and jwk.key.key_size < RSA_KEY_BITS_MIN:
            logger.warning("JWKS key %r left out: an RSA key of under 2048 bits", key_id)
            continue
        verifies = algorithms_verified_by(jwk.key) & algorithms
        if "alg" in data:  # the one algorithm the key is for (RFC 7517 4.4)
            verifies &= {data["alg"]}
        for algorithm in verifies:
            index[key_id][algorithm].append(jwk.key)
    return {key_id: dict(by) for key_id, by in index.items()}


class JWKSKeys:
    """The keys of the document at one URL, as last fetched; refreshed on the event loop."""

    def __init__(self, settings: Settings, *, on_change: Callable[[], None]) -> None:
        assert settings.jwt_jwks_url is not None
        self.url = settings.jwt_jwks_url
        self.algorithms = frozenset(settings.jwt_algorithms)
        self.refresh_seconds = settings.jwt_jwks_refresh_seconds
        self.on_change = on_change
        # No connection kept between fetches, minutes apart: none is left open when the app
        # stops. Redirects are not followed (a set moved is a failed fetch, logged). The
        # environment's HTTPS_PROXY, NO_PROXY and SSL_CERT_FILE apply, as to curl.
        try:
            self._client = httpx.AsyncClient(
                headers={
                    "User-Agent": USER_AGENT,
                    "Accept": "application/json",
                    "Accept-Encoding": "identity",
                },
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        except ImportError as exc:  # a SOCKS proxy (ALL_PROXY=socks5://…) needs httpx[socks]
            raise RuntimeError(
                f"JWT_JWKS_URL cannot be fetched through the proxy the environment names: {exc}"
            ) from None
        self._index: KeyIndex = {}
        self._body: bytes | None = None  # the set as last fetched, to tell a change
        self.fetched = False  # a fetch has succeeded
        self._failing = False  # the last fetch failed
        # For the metrics (service.metrics.JWKSCollector), read when Prometheus scrapes.
        self.fetches = {"ok": 0, "failed": 0}
        self.fetched_at = 0.0  # time.time() of the last fetch that succeeded
        self._fetching: asyncio.Future[None] | None = None
        self._last_attempt = -math.inf  # time.monotonic()

    def keys_for(self, algorithm: str, key_id: object) -> tuple[Sequence[Any], bool]:
        """The keys held that may have signed a token of this algorithm and key id, and whether
        the set names that key: then they are all that may have. Else (a token without a kid:
        any key of the algorithm; a kid the set does not hold: its keys without one, a kid being
        a hint, RFC 7515 4.1.4) a key published since the last fetch may have signed it."""
        if isinstance(key_id, str) and (named := self._index.get(key_id)) is not None:
            return named.get(algorithm, ()), True
        if key_id is None:
            return [key for by in self._index.values() for key in by.get(algorithm, ())], False
        return self._index.get(None, {}).get(algorithm, ()), False

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
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                body = await self._download()
            if body == self._body:
                self._succeeded()
                return
            index = index_keys(orjson.loads(body), self.algorithms)
        except Exception as exc:  # whatever the provider sends: a failed fetch
            self._failing = True
            self.fetches["failed"] += 1
            logger.warning("JWKS not fetched from %s: %s", self.url, _reason(exc))
            return
        self._succeeded()
        if not index:
            # The set as published, all the same: a key withdrawn must not be kept.
            logger.error(
                "JWKS from %s holds no key for JWT_ALGORITHMS (%s): every token it would sign "
                "is refused",
                self.url,
                ",".join(sorted(self.algorithms)),
            )
        self._index, self._body = index, body
        if self.fetched:
            # Tokens remembered as verified may have been signed with a key now withdrawn.
            self.on_change()
        self.fetched = True
        logger.info("JWKS from %s: key ids %s", self.url, sorted(map(str, index)))

    def stale(self) -> bool:
        """Whether the keys held may not be the provider's: never fetched, or the last fetch
        failed."""
        return not self.fetched or self._failing

    def retry_after(self) -> int:
        """Seconds until the next fetch (the schedule's, after a failed one), at least 1."""
        next_fetch = self._last_attempt + min(UNKNOWN_KEY_COOLDOWN, self.refresh_seconds)
        return max(1, math.ceil(next_fetch - time.monotonic()))

    def seconds_since_fetch(self) -> float:
        return time.time() - self.fetched_at

    def _succeeded(self) -> None:
        self._failing = False
        self.fetches["ok"] += 1
        self.fetched_at = time.time()

    def key_count(self) -> int:
        """How many keys are held (a key that verifies several algorithms counted once)."""
        return len({id(key) for by in self._index.values() for keys in by.values() for key in keys})

    async def _download(self) -> bytes:
        async with self._client.stream("GET", self.url) as response:
            if response.status_code != 200:
                raise FetchFailed(f"HTTP {response.status_code}")
            # Asked for as is (Accept-Encoding: identity), and taken only so: a few KB packed
            # can unpack to gigabytes before any limit on what was read applies.
            coding = response.headers.get("content-encoding", "identity").strip().lower()
            if coding not in ("", "identity"):
                raise FetchFailed(f"the answer is in Content-Encoding {coding!r}")
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > JWKS_MAX_BYTES:
                    raise FetchFailed(f"the answer is larger than {JWKS_MAX_BYTES:,} bytes")
        return bytes(body)

    @asynccontextmanager
    async def kept_current(self) -> AsyncIterator[None]:
        """Fetch the keys now, then JWT_JWKS_REFRESH_SECONDS after the last fetch (after one
        that failed, UNKNOWN_KEY_COOLDOWN, or that if shorter), for as long as the app runs."""
        if is_plain_http(self.url):
            logger.warning(
                "JWT_JWKS_URL is plain HTTP: anyone on the way to %s can substitute keys and "
                "sign tokens; use https outside development",
                self.url,
            )
        await self.refresh()

        async def keep_current() -> None:
            while True:
                # Worked out anew at least every `retry` seconds: a fetch a request made moves
                # the next one (after a success, on; after a failure, sooner).
                retry = min(UNKNOWN_KEY_COOLDOWN, self.refresh_seconds)
                due = self._last_attempt + (retry if self._failing else self.refresh_seconds)
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(min(wait, retry))
                    continue
                try:
                    await self.refresh()
                except Exception:  # a fetch fails as a warning; this must never stop the loop
                    logger.exception("JWKS refresh from %s failed", self.url)

        task = asyncio.create_task(keep_current(), name="jwks-refresh")
        try:
            yield
        finally:
            for running in (task, self._fetching):
                if running is not None:
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await running
            await self._client.aclose()


def _reason(exc: Exception) -> str:
    """A failed fetch's cause, for the log: never the document (it is the provider's)."""
    if isinstance(exc, TimeoutError):
        return f"no whole answer within {FETCH_TIMEOUT:g} s"
    if isinstance(exc, orjson.JSONDecodeError):
        return "the answer is not JSON"
    if isinstance(exc, FetchFailed | httpx.HTTPError):
        return str(exc) or type(exc).__name__
    return type(exc).__name__
