"""The identity provider's keys from its JWK Set (JWT_JWKS_URL), served over real HTTP."""

import asyncio
import contextlib
import gzip
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.utils import base64url_encode
from pydantic import ValidationError

from service import jwks
from service.settings import DEVELOPMENT_JWT_SECRET, Settings
from tests.conftest import (
    PROBLEM_JSON,
    TEST_AUTH_SETTINGS,
    asgi_client,
    sample,
    session_body,
    settings_for,
    started,
)
from tests.test_auth import EC_KEY, OTHER_RSA_KEY, RSA_KEY, assert_invalid_token, claims


def jwk(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, **members: Any
) -> dict[str, Any]:
    """The key's public half as a JWK, as identity providers publish theirs."""
    if isinstance(key, rsa.RSAPrivateKey):
        published = RSAAlgorithm.to_jwk(key.public_key())
    else:
        published = ECAlgorithm.to_jwk(key.public_key())
    data: dict[str, Any] = json.loads(published)
    return data | {"kid": kid, "use": "sig"} | members


def token(key: Any, kid: str | None, algorithm: str = "RS256", **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**overrides), key, algorithm=algorithm, headers=headers)


class JWKSServer:
    """An identity provider's jwks_uri: serves `document` (or answers `status`), counts fetches."""

    def __init__(self) -> None:
        self.document: Any = {"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1")]}
        self.status = 200
        self.fetches = 0
        self.trickle = 0.0  # seconds of answering a byte at a time before the document
        self.gzip = False  # the document sent in Content-Encoding: gzip
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                if server.trickle:
                    self.answer_slowly(server.trickle)
                    return
                document = server.document
                body = document if isinstance(document, bytes) else json.dumps(document).encode()
                if server.gzip:
                    body = gzip.compress(body)
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                if server.gzip:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def answer_slowly(self, seconds: float) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                ends = time.monotonic() + seconds
                with contextlib.suppress(OSError):  # the service gave up and hung up
                    while time.monotonic() < ends:
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.05)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/certs"

    def publish(self, *keys: dict[str, Any]) -> None:
        self.document = {"keys": list(keys)}


@pytest.fixture
def idp() -> Iterator[JWKSServer]:
    server = JWKSServer()
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def cooldown(monkeypatch: pytest.MonkeyPatch) -> float:
    """A short cooldown between fetches for unknown key ids, so that a test can wait one out."""
    monkeypatch.setattr(jwks, "UNKNOWN_KEY_COOLDOWN", 0.5)
    return 0.5


async def get_with(app: FastAPI, bearer: str) -> httpx.Response:
    async with asgi_client(app, {"Authorization": f"Bearer {bearer}"}) as client:
        return await client.get("/sessions", params={"limit": 1})


async def post_with(app: FastAPI, bearer: str) -> httpx.Response:
    async with asgi_client(app, {"Authorization": f"Bearer {bearer}"}) as client:
        return await client.post("/sessions", json=session_body())


async def test_a_token_verifies_with_the_key_its_kid_names(
    app_with: Callable[..., FastAPI], idp: JWKSServer
) -> None:
    app = app_with(jwt_jwks_url=idp.url, jwt_algorithms=["RS256", "ES256"])
    response = await post_with(app, token(RSA_KEY, "rsa-1", sub="rsa-user"))
    assert response.status_code == 201, response.text
    assert response.json()["creator_id"] == "rsa-user"
    assert (await post_with(app, token(EC_KEY, "ec-1", "ES256"))).status_code == 201
    # A token without a kid: any key of the set for its algorithm.
    assert (await post_with(app, token(RSA_KEY, None))).status_code == 201
    assert idp.fetches == 1  # fetched once, at the first token, and kept

    forged = await post_with(app, token(OTHER_RSA_KEY, "rsa-1"))
    assert_invalid_token(forged)
    assert forged.json()["detail"].endswith("its signature does not verify.")
    wrong_algorithm = await post_with(app, token(RSA_KEY, "ec-1"))
    assert_invalid_token(wrong_algorithm)
    assert (
        wrong_algorithm.json()["detail"]
        == 'The key the token names (its "kid") does not verify RS256.'
    )


async def test_a_new_key_is_fetched_when_a_token_names_it_at_most_once_per_cooldown(
    app_with: Callable[..., FastAPI], idp: JWKSServer, cooldown: float
) -> None:
    app = app_with(jwt_jwks_url=idp.url)
    assert (await get_with(app, token(RSA_KEY, "rsa-1"))).status_code == 200
    assert idp.fetches == 1
    # The provider starts signing with a new key: within the cooldown, a token naming it is
    # refused without a fetch, and so are tokens naming made-up key ids.
    idp.publish(jwk(RSA_KEY, "rsa-1"), jwk(OTHER_RSA_KEY, "rsa-2"))
    new = token(OTHER_RSA_KEY, "rsa-2")
    unknown = await get_with(app, new)
    assert_invalid_token(unknown)
    assert re.search(r"JWK Set as last fetched, \d+ s ago\.$", unknown.json()["detail"])
    for number in range(5):
        assert_invalid_token(await get_with(app, token(OTHER_RSA_KEY, f"made-up-{number}")))
    assert idp.fetches == 1
    await asyncio.sleep(cooldown)
    # After it: tokens naming the new key, at once, wait for one fetch between them.
    # (Called at once on the verifier: the test's one database connection serves one request.)
    verifier = app.state.token_verifier
    principals = await asyncio.gather(*(verifier.authenticate(new) for _ in range(10)))
    assert {principal.user_id for principal in principals} == {"7"}
    assert idp.fetches == 2
    assert (await get_with(app, token(RSA_KEY, "rsa-1"))).status_code == 200
    assert idp.fetches == 2


async def test_a_token_whose_key_cannot_be_looked_up_is_503_not_401(
    app_with: Callable[..., FastAPI], idp: JWKSServer, cooldown: float
) -> None:
    # The provider rolls to a new key and is down when a token signed with it first comes: the
    # key may well be published, so the token is not called invalid (a client would throw it
    # away, and sign in again for a token refused alike).
    app = app_with(jwt_jwks_url=idp.url)
    assert (await get_with(app, token(RSA_KEY, "rsa-1"))).status_code == 200
    idp.publish(jwk(RSA_KEY, "rsa-1"), jwk(OTHER_RSA_KEY, "rsa-2"))
    idp.status = 503
    await asyncio.sleep(cooldown)
    new = token(OTHER_RSA_KEY, "rsa-2")
    response = await get_with(app, new)
    assert response.status_code == 503, response.text
    assert response.json()["type"] == "urn:sessions-service:problem:signing-keys-unavailable"
    assert response.headers["retry-after"] == "1"  # the next fetch, within the cooldown
    assert "www-authenticate" not in response.headers
    assert idp.fetches == 2
    # The keys held still verify the tokens they signed.
    assert (await get_with(app, token(RSA_KEY, "rsa-1"))).status_code == 200
    idp.status = 200
    await asyncio.sleep(cooldown)
    assert (await get_with(app, new)).status_code == 200


def test_the_keys_of_a_set_are_those_that_verify_an_allowed_algorithm() -> None:
    secret = base64url_encode(b"a-shared-secret-published-by-mistake-0123456789").decode()
    short_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    document = {
        "keys": [
            jwk(RSA_KEY, "rsa-1"),
            jwk(OTHER_RSA_KEY, "rs384", alg="RS384"),
            {"kty": "oct", "kid": "hmac", "k": secret},
            {"kty": "oct", "kid": "hmac-alg", "k": secret, "alg": "HS256"},
            jwk(OTHER_RSA_KEY, "encryption", use="enc"),
            jwk(EC_KEY, "es384-only", alg="ES384"),
            jwk(short_rsa, "short"),
            # Keys PyJWT cannot read, some raising what it does not wrap.
            {"kty": "RSA", "kid": "alg-none", "alg": "none"},
            {"kty": "RSA", "kid": "alg-list", "alg": ["RS256"], "n": 1, "e": 2},
            {"kty": "EC", "kid": "no-curve-point"},
            {"kid": "no-kty"},
            "not a key",
            jwk(EC_KEY, "ec-1") | {"use": None},
        ]
    }
    index = jwks.index_keys(document, frozenset({"RS256", "RS384", "ES256", "HS256"}))
    held = {(kid, algorithm) for kid, by in index.items() for algorithm in by}
    assert held == {("rsa-1", "RS256"), ("rsa-1", "RS384"), ("rs384", "RS384")}
    not_a_set: object
    for not_a_set in ([], {"keys": {}}, {"Keys": []}, "keys"):
        with pytest.raises(jwks.FetchFailed):
            jwks.index_keys(not_a_set, frozenset({"RS256"}))


@pytest.mark.filterwarnings("ignore:The RSA key is")
async def test_keys_a_token_must_never_verify_with_are_left_out(
    app_with: Callable[..., FastAPI], idp: JWKSServer
) -> None:
    secret = "a-shared-secret-published-by-mistake-0123456789"
    short_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    published_secret = {
        "kty": "oct",
        "kid": "hmac",
        "k": jwt.utils.base64url_encode(secret.encode()).decode(),
    }
    idp.publish(
        jwk(RSA_KEY, "rsa-1"),
        published_secret,
        jwk(OTHER_RSA_KEY, "encryption", use="enc"),
        jwk(EC_KEY, "es384-only", alg="ES384"),
        jwk(short_rsa, "short"),
        {"kty": "RSA", "kid": "odd", "alg": ["RS256"], "n": 1, "e": 2},
    )
    app = app_with(jwt_jwks_url=idp.url, jwt_algorithms=["RS256", "ES256", "HS256"])
    assert (await get_with(app, token(RSA_KEY, "rsa-1"))).status_code == 200
    for refused in (
        token(secret, "hmac", "HS256", roles=["admin"]),  # HS256: JWT_SECRET alone
        token(OTHER_RSA_KEY, "encryption"),
        token(EC_KEY, "es384-only", "ES256"),
        token(short_rsa, "short"),
    ):
        assert_invalid_token(await get_with(app, refused))
    assert idp.fetches == 1


async def test_the_provider_unreachable_at_start_is_503_not_401_until_its_keys_come(
    database_url: str, idp: JWKSServer, cooldown: float, caplog: pytest.LogCaptureFixture
) -> None:
    idp.status = 503
    settings = settings_for(database_url, jwt_jwks_url=idp.url)
    with caplog.at_level(logging.WARNING, logger="service.jwks"):
        async with started(settings) as (app, client):  # the start is not held up
            response = await get_with(app, token(RSA_KEY, "rsa-1"))
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == PROBLEM_JSON
            assert (
                response.json()["type"] == "urn:sessions-service:problem:signing-keys-unavailable"
            )
            assert int(response.headers["retry-after"]) >= 1
            assert "www-authenticate" not in response.headers
            # Anonymous reads and HS256 tokens (JWT_SECRET) need no key of the set.
            assert (await client.get("/sessions", headers={"Authorization": ""})).status_code == 200
            assert (await client.get("/sessions")).status_code == 200
            fetches = idp.fetches

            idp.status = 200
            await asyncio.sleep(cooldown)
            assert (await get_with(app, token(RSA_KEY, "rsa-1"))).status_code == 200
            assert idp.fetches == fetches + 1
    messages = [record.getMessage() for record in caplog.records]
    assert any("JWKS not fetched from" in m and "503" in m for m in messages), messages
    assert any("plain HTTP" in m for m in messages), messages


async def test_keys_are_fetched_again_on_schedule_and_a_withdrawn_one_stops_verifying(
    database_url: str, idp: JWKSServer
) -> None:
    settings = settings_for(
        database_url,
        jwt_jwks_url=idp.url,
        jwt_jwks_refresh_seconds=1,
        jwt_algorithms=["RS256", "PS256", "HS256"],  # the key verifies two: one key all the same
    )
    async with started(settings) as (app, client):
        assert idp.fetches == 1  # at start
        old = token(RSA_KEY, "rsa-1")
        assert (await get_with(app, old)).status_code == 200  # and now remembered as verified
        # The provider withdraws the key (compromised, say), and for a moment fails to serve
        # the set at all: the keys held are kept through the failure.
        idp.status = 500
        await wait_for_fetches(idp, 2)
        assert (await get_with(app, old)).status_code == 200
        # Then with a key PyJWT cannot read (and raises what it does not wrap): left out, and
        # the refreshes go on.
        idp.status = 200
        idp.publish(jwk(RSA_KEY, "rsa-1"), {"kty": "RSA", "kid": "odd", "alg": "none"})
        await wait_for_fetches(idp, idp.fetches + 1)
        assert (await get_with(app, old)).status_code == 200
        idp.publish(jwk(OTHER_RSA_KEY, "rsa-2"))
        await wait_for_fetches(idp, idp.fetches + 1)
        await asyncio.sleep(0.1)  # the fetch's answer parsed
        assert_invalid_token(await get_with(app, old))
        assert (await get_with(app, token(OTHER_RSA_KEY, "rsa-2"))).status_code == 200
        # What an operator's alert watches: fetches by outcome, when one last succeeded.
        scraped = (await client.get("/metrics")).text
        failed = sample(scraped, "jwks_fetches_total", outcome="failed")
        succeeded = sample(scraped, "jwks_fetches_total", outcome="ok")
        assert failed >= 1
        assert succeeded >= 3
        assert idp.fetches - 1 <= failed + succeeded <= idp.fetches  # (one may be under way)
        assert (
            time.time() - 5 < sample(scraped, "jwks_last_success_timestamp_seconds") <= time.time()
        )
        assert sample(scraped, "jwks_keys") == 1


async def wait_for_fetches(idp: JWKSServer, count: int) -> None:
    deadline = time.monotonic() + 10
    while idp.fetches < count:
        assert time.monotonic() < deadline, f"{idp.fetches} fetches, not {count}"
        await asyncio.sleep(0.05)


async def test_an_answer_that_is_no_key_set_keeps_the_keys_held(
    app_with: Callable[..., FastAPI], idp: JWKSServer, cooldown: float
) -> None:
    app = app_with(jwt_jwks_url=idp.url)
    assert (await get_with(app, token(RSA_KEY, "rsa-1"))).status_code == 200
    key = json.dumps(jwk(RSA_KEY, "rsa-1")).encode()
    deep = b'{"keys": [' + key + b'], "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    answers = (
        b"",
        b"<html>login</html>",
        b"\xff\xfe{}",
        b"[" * 100_000,  # nested deeper than a parser's recursion
        {"keys": "none"},
        # A set, nested as deep as the parser goes (twice: compared with the one held).
        deep,
        deep,
    )
    for answer in answers:
        idp.document = answer
        await asyncio.sleep(cooldown)
        # Fetched again: a key id unknown is a 503 where the set could not be read, a 401 where
        # it was, and does not hold it.
        made_up = await get_with(app, token(RSA_KEY, "made-up"))
        assert made_up.status_code == (401 if answer == deep else 503), repr(answer)[:40]
        assert (await get_with(app, token(RSA_KEY, "rsa-1"))).status_code == 200
    assert idp.fetches == 1 + len(answers)
    # A set sent packed (Content-Encoding: gzip): refused, however small, so not taken.
    idp.gzip = True
    idp.publish(jwk(OTHER_RSA_KEY, "rsa-2"))
    await asyncio.sleep(cooldown)
    assert (await get_with(app, token(OTHER_RSA_KEY, "rsa-2"))).status_code == 503
    assert (await get_with(app, token(RSA_KEY, "rsa-1"))).status_code == 200
    assert idp.fetches == 2 + len(answers)


async def test_a_set_without_a_key_for_the_algorithms_is_taken_as_published(
    app_with: Callable[..., FastAPI],
    idp: JWKSServer,
    cooldown: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The provider withdraws its key for one this service may not use: the withdrawn one stops
    # verifying all the same.
    app = app_with(jwt_jwks_url=idp.url, jwt_algorithms=["RS256"])
    old = token(RSA_KEY, "rsa-1")
    assert (await get_with(app, old)).status_code == 200
    idp.publish(jwk(OTHER_RSA_KEY, "rsa-2", alg="RS512"))
    await asyncio.sleep(cooldown)
    with caplog.at_level(logging.ERROR, logger="service.jwks"):
        assert_invalid_token(await get_with(app, token(OTHER_RSA_KEY, "rsa-2")))
    assert "holds no key for JWT_ALGORITHMS (RS256)" in caplog.text
    assert idp.fetches == 2
    assert_invalid_token(await get_with(app, old))


def without_kid(key: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in key.items() if name != "kid"}


async def test_keys_without_a_kid_verify_tokens_with_or_without_one(
    app_with: Callable[..., FastAPI], idp: JWKSServer, cooldown: float
) -> None:
    idp.publish(without_kid(jwk(RSA_KEY, "")), jwk(EC_KEY, "ec-1"))
    app = app_with(jwt_jwks_url=idp.url, jwt_algorithms=["RS256", "ES256"])
    for kid in (None, "a-kid-the-set-does-not-name"):
        assert (await get_with(app, token(RSA_KEY, kid))).status_code == 200, kid
    assert (await get_with(app, token(EC_KEY, "ec-1", "ES256"))).status_code == 200
    assert idp.fetches == 1
    # The provider rolls to a new key, without a kid too: a token its keys held do not verify
    # is looked up as one of an unknown kid (once the cooldown allows a fetch).
    idp.publish(without_kid(jwk(RSA_KEY, "")), without_kid(jwk(OTHER_RSA_KEY, "")))
    for kid in (None, "a-kid"):
        assert_invalid_token(await get_with(app, token(OTHER_RSA_KEY, kid)))
    assert idp.fetches == 1
    await asyncio.sleep(cooldown)
    for kid in (None, "a-kid"):
        assert (await get_with(app, token(OTHER_RSA_KEY, kid))).status_code == 200, kid
    assert idp.fetches == 2
    # Forged: refused, without a fetch of its own.
    forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_invalid_token(await get_with(app, token(forged, None)))
    assert idp.fetches == 2


async def test_a_provider_back_with_the_same_set_is_current_again(
    app_with: Callable[..., FastAPI], idp: JWKSServer, cooldown: float
) -> None:
    app = app_with(jwt_jwks_url=idp.url)
    remembered = token(RSA_KEY, "rsa-1")
    assert (await get_with(app, remembered)).status_code == 200
    idp.status = 500
    await asyncio.sleep(cooldown)
    assert (await get_with(app, token(RSA_KEY, "made-up"))).status_code == 503
    idp.status = 200
    await asyncio.sleep(cooldown)
    assert_invalid_token(await get_with(app, token(RSA_KEY, "made-up")))  # current: a 401
    assert idp.fetches == 3
    # The same set again: the tokens remembered as verified are kept.
    verifier = app.state.token_verifier
    assert remembered in verifier._verified


async def test_a_failed_fetch_a_request_made_is_tried_again_soon_on_schedule(
    database_url: str, idp: JWKSServer, cooldown: float
) -> None:
    settings = settings_for(database_url, jwt_jwks_url=idp.url)  # the schedule: 300 s
    async with started(settings) as (app, _):
        await asyncio.sleep(cooldown)
        idp.status = 500
        assert (await get_with(app, token(RSA_KEY, "made-up"))).status_code == 503
        assert idp.fetches == 2
        idp.status = 200
        await wait_for_fetches(idp, 3)  # by the schedule, within the cooldown: no request
        assert_invalid_token(await get_with(app, token(RSA_KEY, "made-up")))


async def test_an_empty_answer_at_first_is_a_failed_fetch(
    app_with: Callable[..., FastAPI], idp: JWKSServer
) -> None:
    idp.document = b""
    app = app_with(jwt_jwks_url=idp.url)
    assert (await get_with(app, token(RSA_KEY, "rsa-1"))).status_code == 503
    assert app.state.token_verifier.jwks.fetches == {"ok": 0, "failed": 1}


async def test_a_set_larger_than_a_provider_s_is_refused(
    app_with: Callable[..., FastAPI],
    idp: JWKSServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(jwks, "JWKS_MAX_BYTES", 500)
    app = app_with(jwt_jwks_url=idp.url)
    assert len(json.dumps(idp.document)) > 500
    with caplog.at_level(logging.WARNING, logger="service.jwks"):
        assert (await get_with(app, token(RSA_KEY, "rsa-1"))).status_code == 503
    assert "larger than 500 bytes" in caplog.text


async def test_a_slow_provider_holds_the_start_and_a_request_up_for_the_fetch_timeout_at_most(
    database_url: str, idp: JWKSServer, cooldown: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An answer a byte at a time: every read succeeds, the whole never comes.
    monkeypatch.setattr(jwks, "FETCH_TIMEOUT", 0.5)
    idp.trickle = 5
    settings = settings_for(database_url, jwt_jwks_url=idp.url)
    began = time.monotonic()
    async with started(settings) as (app, _):
        assert time.monotonic() - began < 3
        await asyncio.sleep(cooldown)
        asked = time.monotonic()
        response = await get_with(app, token(RSA_KEY, "rsa-1"))
        assert response.status_code == 503
        assert time.monotonic() - asked < 1.5
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 1  # a fetch under way stops with the app


def test_settings_of_a_jwks_url() -> None:
    base = TEST_AUTH_SETTINGS | {"jwt_secret": None}
    settings = Settings(**base | {"jwt_jwks_url": "https://idp.example/certs"})
    assert settings.jwt_secret is None  # not the development secret: a deployment
    assert Settings(**base).jwt_secret == DEVELOPMENT_JWT_SECRET
    for url in ("ftp://idp.example/certs", "idp.example/certs", "https:///certs"):
        with pytest.raises(ValidationError, match="https:// URL"):
            Settings(**base | {"jwt_jwks_url": url})
    with pytest.raises(ValidationError, match="not both"):
        Settings(**base | {"jwt_jwks_url": "https://idp.example/certs", "jwt_public_key": "x"})
    with pytest.raises(ValidationError, match="verify none of JWT_ALGORITHMS"):
        Settings(
            **base | {"jwt_jwks_url": "https://idp.example/certs", "jwt_algorithms": ["HS256"]}
        )


def readme_keycloak_settings() -> dict[str, str]:
    """The settings of the README's Keycloak example, as a reader exports them."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = readme.split("For a Keycloak realm", 1)[1].split("```sh\n", 1)[1].split("```")[0]
    return dict(re.findall(r"^export (\w+)=(\S+)$", example, flags=re.M))


async def test_the_readmes_keycloak_settings_take_a_keycloak_token(
    app_with: Callable[..., FastAPI], idp: JWKSServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = readme_keycloak_settings()
    assert example.keys() == {
        "JWT_JWKS_URL",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "JWT_ALGORITHMS",
        "JWT_ROLES_CLAIM",
    }
    with monkeypatch.context() as environment:
        for name, value in example.items():
            environment.setenv(name, value)
        settings = Settings(_env_file=None)
    overrides = settings.model_dump(include={name.lower() for name in example}) | {
        "jwt_jwks_url": idp.url  # the realm's keys, served here
    }
    app = app_with(**overrides)
    # As Keycloak shapes an access token for a user of the realm.
    keycloak: dict[str, Any] = {
        "iss": example["JWT_ISSUER"],
        "aud": ["sessions-service", "account"],
        "azp": "sessions-service",
        "typ": "Bearer",
        "realm_access": {"roles": ["offline_access", "uma_authorization"]},
        "resource_access": {
            "sessions-service": {"roles": ["admin"]},
            "account": {"roles": ["manage-account"]},
        },
        "organizer_events": [3],
        "preferred_username": "ada",
    }
    principal = await app.state.token_verifier.authenticate(token(RSA_KEY, "rsa-1", **keycloak))
    assert principal.is_admin
    assert principal.organizer_events == {3}
    assert (await post_with(app, token(RSA_KEY, "rsa-1", **keycloak))).status_code == 201
    other_client = keycloak | {"resource_access": {"account": {"roles": ["admin"]}}}
    assert not (
        await app.state.token_verifier.authenticate(token(RSA_KEY, "rsa-1", **other_client))
    ).is_admin
