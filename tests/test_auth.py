"""Bearer tokens: what verifies, and every forged, stale or misdirected token refused with 401."""

import base64
import gc
import hashlib
import hmac
import logging
import random
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.conftest import PROBLEM_JSON, TEST_JWT_SECRET, asgi_client, count_sessions, session_body

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def certificate_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    """A self-signed certificate of the key, as some identity providers publish theirs."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=2))
        .not_valid_after(now - timedelta(days=1))  # expired: its dates are not checked
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "7", "iat": now, "exp": now + 600, "organizer_events": [3]} | overrides


def hs256(secret: str = TEST_JWT_SECRET, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), secret, algorithm="HS256")


def b64(data: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


async def post_with(app: FastAPI, token: str) -> httpx.Response:
    async with asgi_client(app, {"Authorization": f"Bearer {token}"}) as client:
        return await client.post("/sessions", json=session_body())


def assert_invalid_token(response: httpx.Response, error: str = "invalid_token") -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["status"] == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith(f'Bearer error="{error}"'), challenge
    assert challenge.count('"') == 4  # error and error_description, nothing leaking a quote


def alg_none_token() -> str:
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(roles=['admin']))}."


def tampered_token() -> str:
    header, _, signature = hs256().split(".")
    return f"{header}.{b64(claims(sub='8', roles=['admin']))}.{signature}"


def key_confusion_token() -> str:
    # The provider's public key (which is public) used as an HMAC secret, with alg HS256.
    header = b64({"alg": "HS256", "typ": "JWT"})
    body = b64(claims(roles=["admin"]))
    mac = hmac.new(public_pem(RSA_KEY).encode(), f"{header}.{body}".encode(), hashlib.sha256)
    signature = base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")
    return f"{header}.{body}.{signature}"


ATTACKS = [
    pytest.param(alg_none_token, {}, id="alg none"),
    pytest.param(
        lambda: f"{b64({'alg': 'None'})}.{b64(claims(roles=['admin']))}.", {}, id="alg None"
    ),
    pytest.param(
        lambda: f"{b64({'alg': 'HS256'})}.{b64(claims(roles=['admin']))}.", {}, id="no signature"
    ),
    pytest.param(lambda: hs256("another-secret-of-at-least-32-bytes!!"), {}, id="wrong secret"),
    pytest.param(tampered_token, {}, id="tampered payload"),
    pytest.param(
        lambda: jwt.encode(claims(), OTHER_RSA_KEY, algorithm="RS256"),
        {"jwt_public_key": public_pem(RSA_KEY)},
        id="RS256 wrong key",
    ),
    pytest.param(
        key_confusion_token,
        {"jwt_public_key": public_pem(RSA_KEY)},
        id="public key as HMAC secret",
    ),
    pytest.param(
        lambda: jwt.encode(claims(), RSA_KEY, algorithm="RS256"),
        {},
        id="RS256 without a configured key",
    ),
    pytest.param(
        lambda: jwt.encode(claims(), RSA_KEY, algorithm="RS512"),
        {"jwt_public_key": public_pem(RSA_KEY)},
        id="algorithm not on the allow-list",
    ),
    pytest.param(lambda: hs256(), {"jwt_algorithms": ["RS256"]}, id="HS256 turned off"),
    pytest.param(
        lambda: jwt.encode(claims(), RSA_KEY, algorithm="RS256"),
        {"jwt_public_key": public_pem(EC_KEY)},
        id="RS256 against an EC key",
    ),
    pytest.param(
        lambda: jwt.encode(claims(), EC_KEY, algorithm="ES256"),
        {"jwt_public_key": public_pem(RSA_KEY)},
        id="ES256 against an RSA key",
    ),
    pytest.param(lambda: hs256(exp=int(time.time()) - 120), {}, id="expired beyond the leeway"),
    pytest.param(lambda: hs256(nbf=int(time.time()) + 120), {}, id="not valid yet"),
    pytest.param(lambda: hs256(iat=int(time.time()) + 120), {}, id="issued in the future"),
    pytest.param(lambda: hs256(exp=None), {}, id="no exp"),
    pytest.param(lambda: hs256(sub=None), {}, id="no sub"),
    pytest.param(lambda: hs256(sub=7), {}, id="numeric sub"),
    pytest.param(lambda: hs256(sub=""), {}, id="empty sub"),
    pytest.param(lambda: hs256(sub="x" * 256), {}, id="sub too long for creator_id"),
    # PostgreSQL's text holds neither: stored or compared, the subject would fail the query.
    pytest.param(lambda: hs256(sub="a\x00b"), {}, id="sub with NUL"),
    pytest.param(lambda: hs256(sub="a\ud800b"), {}, id="sub with a lone surrogate"),
    pytest.param(
        lambda: hs256(aud="another-service"), {"jwt_audience": "sessions"}, id="other audience"
    ),
    pytest.param(lambda: hs256(), {"jwt_audience": "sessions"}, id="no audience"),
    pytest.param(lambda: hs256(aud="sessions"), {}, id="audience where none is configured"),
    pytest.param(lambda: hs256(aud=""), {}, id="empty audience where none is configured"),
    pytest.param(lambda: hs256(aud=[]), {}, id="no audiences where none is configured"),
    pytest.param(
        lambda: hs256(iss="https://evil.example"),
        {"jwt_issuer": "https://idp.example"},
        id="other issuer",
    ),
    # Part of the issuer configured: PyJWT 2.10.0 compared it as a substring (CVE-2024-53861).
    pytest.param(lambda: hs256(iss="idp"), {"jwt_issuer": "https://idp.example"}, id="issuer part"),
    pytest.param(
        lambda: hs256(iss="https://idp.example"),
        {"jwt_issuer": "https://idp.example/v2.0,https://sts.example"},
        id="issuer on no list",
    ),
    pytest.param(lambda: hs256(organizer_events="3"), {}, id="organizer_events a string"),
    pytest.param(lambda: hs256(organizer_events=[True]), {}, id="organizer_events booleans"),
    pytest.param(lambda: hs256(organizer_events=[2**31]), {}, id="organizer_events too big"),
    # Not lists that happen to be falsy: only a missing (or null) claim means none.
    pytest.param(lambda: hs256(organizer_events=0), {}, id="organizer_events 0"),
    pytest.param(lambda: hs256(organizer_events=False), {}, id="organizer_events false"),
    pytest.param(lambda: hs256(organizer_events=""), {}, id="organizer_events empty string"),
    pytest.param(lambda: hs256(organizer_events={}), {}, id="organizer_events empty object"),
    pytest.param(lambda: hs256(roles=[1]), {}, id="roles not strings"),
    pytest.param(lambda: "not-a-jwt", {}, id="garbage"),
    pytest.param(lambda: "a.b.c", {}, id="three garbage segments"),
    pytest.param(lambda: f"{b64({'alg': 'HS256'})}.e30.", {}, id="empty signature"),
    pytest.param(lambda: f"{b64([1])}.{b64(claims())}.x", {}, id="header not an object"),
]


@pytest.mark.parametrize(("make_token", "settings"), ATTACKS)
async def test_bad_token_is_401_and_stores_nothing(
    app_with: Callable[..., FastAPI],
    connection: AsyncConnection,
    make_token: Callable[[], str],
    settings: dict[str, Any],
) -> None:
    response = await post_with(app_with(**settings), make_token())
    assert_invalid_token(response)
    assert await count_sessions(connection) == 0


async def test_bad_token_on_a_read_is_401_not_anonymous(
    anonymous_client: httpx.AsyncClient,
) -> None:
    response = await anonymous_client.get(
        "/sessions", headers={"Authorization": f"Bearer {alg_none_token()}"}
    )
    assert_invalid_token(response)


def assert_malformed_authorization(response: httpx.Response) -> None:
    # RFC 6750 3.1: invalid_request, "SHOULD respond with the HTTP 400 (Bad Request) status code".
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["header"] == "Authorization"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_request"'), challenge


@pytest.mark.parametrize("header", ["Bearer", "bearer", "BEARER", "Bearer\tabc", "Bearer,abc"])
async def test_authorization_without_a_token_is_400_invalid_request(
    anonymous_client: httpx.AsyncClient, header: str
) -> None:
    response = await anonymous_client.get("/sessions", headers={"Authorization": header})
    assert_malformed_authorization(response)


async def test_an_empty_authorization_header_is_no_credentials(
    anonymous_client: httpx.AsyncClient,
) -> None:
    # As a client sends it to clear a default header: anonymous, as without the header.
    read = await anonymous_client.get("/sessions", headers={"Authorization": ""})
    assert read.status_code == 200, read.text
    write = await anonymous_client.post(
        "/sessions", json=session_body(), headers={"Authorization": ""}
    )
    assert write.status_code == 401, write.text
    assert write.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Token abc", "Digest username=x"])
async def test_authorization_of_another_scheme_is_401_with_the_bare_challenge(
    anonymous_client: httpx.AsyncClient, header: str
) -> None:
    # RFC 6750 3: to a client that "attempted using an unsupported authentication method", the
    # resource server "SHOULD NOT include an error code or other error information".
    response = await anonymous_client.get("/sessions/1", headers={"Authorization": header})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Bearer <token>" in response.json()["detail"]


async def test_two_authorization_headers_are_400_not_the_first_one(
    client: httpx.AsyncClient, connection: AsyncConnection
) -> None:
    # A valid token (the client's own) and another line: which one a proxy checked is unknowable.
    valid = client.headers["authorization"]
    response = await client.post(
        "/sessions",
        json=session_body(),
        headers=[("authorization", valid), ("authorization", "Bearer other")],
    )
    assert_malformed_authorization(response)
    assert await count_sessions(connection) == 0


UNREADABLE_BODIES = [
    pytest.param("POST", "application/json", b'{"title": ', id="malformed JSON"),
    pytest.param("POST", "application/json", b'{"title": "\xff"}', id="not UTF-8"),
    pytest.param("PATCH", "application/merge-patch+json", b"{", id="malformed merge patch"),
    pytest.param(
        "POST",
        "application/json",
        b'{"event_id": 1, "title": "a", "title": "b"}',
        id="a member named twice",
    ),
]


@pytest.mark.parametrize(("method", "content_type", "content"), UNREADABLE_BODIES)
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token"])
async def test_a_refused_caller_is_401_before_their_body_is_read(
    anonymous_client: httpx.AsyncClient,
    client: httpx.AsyncClient,
    method: str,
    content_type: str,
    content: bytes,
    authorization: str | None,
) -> None:
    # FastAPI decodes the body before it authenticates: the refusal must still come first, as
    # for every other request of the caller's, and tell them nothing about their body.
    url = "/sessions" if method == "POST" else f"/sessions/{await created_session_id(client)}"
    headers = {"content-type": content_type}
    if authorization:
        headers["authorization"] = authorization
    response = await anonymous_client.request(method, url, content=content, headers=headers)
    assert response.status_code == 401, response.text
    assert "errors" not in response.json()
    # Signed in, the same body is the 422 it is.
    signed_in = await client.request(
        method,
        url,
        content=content,
        headers=headers | {"authorization": client.headers["authorization"]},
    )
    assert signed_in.status_code == 422, signed_in.text


async def created_session_id(client: httpx.AsyncClient) -> int:
    response = await client.post("/sessions", json=session_body())
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


@pytest.mark.parametrize("exp", [10**309, str(10**400)])
async def test_an_exp_too_large_for_a_float_is_no_500(
    app_with: Callable[..., FastAPI], exp: object
) -> None:
    # PyJWT takes it (a token that never expires); the cache of verified tokens must too.
    response = await post_with(app_with(), hs256(exp=exp))
    assert response.status_code == 201, response.text


async def test_expired_token_message_says_so(app_with: Callable[..., FastAPI]) -> None:
    response = await post_with(app_with(), hs256(exp=int(time.time()) - 120))
    assert_invalid_token(response)
    assert "expired" in response.json()["detail"]


async def test_a_numeric_subject_is_named_in_the_401(app_with: Callable[..., FastAPI]) -> None:
    # PyJWT refuses it once the signature verifies: it was "malformed or its signature does not
    # verify", which sent a provider's operator looking at keys.
    response = await post_with(app_with(), hs256(sub=7))
    assert_invalid_token(response)
    assert response.json()["detail"] == 'The token\'s "sub" claim must be a string.'


@pytest.mark.parametrize(
    ("make_token", "settings"),
    [
        pytest.param(lambda: hs256(), {}, id="HS256 with the secret"),
        pytest.param(
            lambda: jwt.encode(claims(), RSA_KEY, algorithm="RS256"),
            {"jwt_public_key": public_pem(RSA_KEY), "jwt_secret": None},
            id="RS256 with the public key",
        ),
        pytest.param(lambda: hs256(exp=int(time.time()) - 10), {}, id="expired within the leeway"),
        pytest.param(lambda: hs256(nbf=int(time.time()) + 10), {}, id="nbf within the leeway"),
        pytest.param(lambda: hs256(iat=int(time.time()) + 10), {}, id="iat within the leeway"),
        pytest.param(
            lambda: hs256(aud=["other", "sessions"], iss="https://idp.example"),
            {"jwt_audience": "sessions", "jwt_issuer": "https://idp.example"},
            id="audience and issuer",
        ),
        # Either of two names (Entra ID's v1 and v2 tokens), as the environment lists them.
        pytest.param(
            lambda: hs256(aud="6e74172b", iss="https://login.example/t/v2.0"),
            {
                "jwt_audience": "api://sessions,6e74172b",
                "jwt_issuer": "https://sts.example/t/,https://login.example/t/v2.0",
            },
            id="one of the audiences and issuers",
        ),
        # JWT_ISSUER= and JWT_AUDIENCE= in an environment: unset, not an empty claim required.
        pytest.param(hs256, {"jwt_audience": "", "jwt_issuer": ""}, id="empty audience, issuer"),
    ],
)
async def test_valid_token_creates_a_session_owned_by_its_subject(
    app_with: Callable[..., FastAPI], make_token: Callable[[], str], settings: dict[str, Any]
) -> None:
    response = await post_with(app_with(**settings), make_token())
    assert response.status_code == 201, response.text
    assert response.json()["creator_id"] == "7"


async def test_es256_public_key_from_a_pem_file(
    app_with: Callable[..., FastAPI], tmp_path: Path
) -> None:
    pem_file = tmp_path / "idp.pem"
    pem_file.write_text(public_pem(EC_KEY))
    app = app_with(jwt_public_key_file=pem_file, jwt_algorithms=["ES256"])
    response = await post_with(app, jwt.encode(claims(sub="ec-user"), EC_KEY, algorithm="ES256"))
    assert response.status_code == 201, response.text
    assert response.json()["creator_id"] == "ec-user"
    # The same app refuses an HS256 token, though its secret is set: not on its allow-list.
    assert_invalid_token(await post_with(app, hs256()))


async def test_every_key_of_a_pem_file_verifies_so_a_rotation_refuses_no_token(
    app_with: Callable[..., FastAPI], tmp_path: Path
) -> None:
    # The identity provider signs with a new key while tokens signed with the old one are still
    # in use: the file holds both, as a PEM bundle (text around the blocks allowed), and a key
    # may come as a certificate, as some providers publish theirs.
    pem_file = tmp_path / "idp.pem"
    pem_file.write_text(
        f"# the current key\n{public_pem(OTHER_RSA_KEY)}# the next one\n{public_pem(RSA_KEY)}"
        + certificate_pem(EC_KEY)
    )
    app = app_with(jwt_public_key_file=pem_file, jwt_algorithms=["RS256", "ES256"])
    for key, algorithm in ((OTHER_RSA_KEY, "RS256"), (RSA_KEY, "RS256"), (EC_KEY, "ES256")):
        response = await post_with(app, jwt.encode(claims(), key, algorithm=algorithm))
        assert response.status_code == 201, (algorithm, response.text)
    # A key not in the file: refused for its signature, before its claims are looked at.
    unknown = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for stale in (claims(), claims(exp=int(time.time()) - 3600)):
        response = await post_with(app, jwt.encode(stale, unknown, algorithm="RS256"))
        assert_invalid_token(response)
        assert response.json()["detail"].endswith("its signature does not verify.")
    # A token of the old key whose claims are refused says why, as with one key.
    expired = jwt.encode(claims(exp=int(time.time()) - 3600), OTHER_RSA_KEY, algorithm="RS256")
    response = await post_with(app, expired)
    assert_invalid_token(response)
    assert response.json()["detail"] == "The token has expired."


@pytest.mark.parametrize(
    ("token", "detail"),
    [
        (lambda: jwt.encode(claims(), RSA_KEY, algorithm="RS256"), "signed with RS256, which"),
        (lambda: jwt.encode(claims(), EC_KEY, algorithm="ES256"), "ES256, for which this s"),
        (lambda: alg_none_token(), 'not signed (its "alg" is "none")'),
        (lambda: f"{b64({'alg': 'X' * 100})}.{b64(claims())}.c2ln", '"alg" is no signing algo'),
    ],
    ids=["not allowed", "no key for it", "none", "no algorithm"],
)
async def test_a_token_of_an_algorithm_refused_says_which(
    app_with: Callable[..., FastAPI], token: Callable[[], str], detail: str
) -> None:
    # Where the identity provider signs otherwise than configured, the 401 says so, rather than
    # that the token is malformed.
    app = app_with(jwt_public_key=public_pem(RSA_KEY), jwt_algorithms=["PS256", "ES256", "HS256"])
    response = await post_with(app, token())
    assert_invalid_token(response)
    assert detail in response.json()["detail"]


async def test_a_token_too_long_to_be_one_is_refused_unread(
    app_with: Callable[..., FastAPI],
) -> None:
    # Its verification would hold the event loop, for seconds where it is megabytes long.
    token = hs256(padding="x" * 40_000)
    response = await post_with(app_with(), token)
    assert_invalid_token(response)
    assert response.json()["detail"] == "The token is longer than 32,768 characters."
    assert (await post_with(app_with(), hs256(padding="x" * 20_000))).status_code == 201


@pytest.mark.parametrize(
    ("path", "provider_claims"),
    [
        # Keycloak: the roles of a client named as a domain, its dots escaped.
        (
            r"resource_access.sessions\.example\.com.roles",
            {"resource_access": {"sessions.example.com": {"roles": ["admin"]}, "x": {}}},
        ),
        # Auth0: a claim namespaced with a URL, holding an object; or the claim itself.
        (r"https://example\.com/app.roles", {"https://example.com/app": {"roles": ["admin"]}}),
        ("https://example.com/roles", {"https://example.com/roles": ["admin"]}),
    ],
    ids=["client named as a domain", "namespaced object", "namespaced claim"],
)
async def test_a_claim_path_finds_names_with_dots_of_their_own_escaped(
    app_with: Callable[..., FastAPI], path: str, provider_claims: dict[str, Any]
) -> None:
    token = jwt.encode(claims() | provider_claims, TEST_JWT_SECRET, algorithm="HS256")
    # Admin through that claim: it may create a session in any state.
    headers = {"Authorization": f"Bearer {token}"}
    async with asgi_client(app_with(jwt_roles_claim=path), headers) as client:
        response = await client.post("/sessions", json=session_body(state="confirmed"))
    assert response.status_code == 201, response.text


async def test_a_claim_path_never_takes_a_name_with_dots_for_a_nested_one(
    app_with: Callable[..., FastAPI],
) -> None:
    # A client that someone named "sessions.roles" is not the roles of the client "sessions".
    resource_access = {"sessions": {"roles": ["speaker"]}, "sessions.roles": ["admin"]}
    for access in (resource_access, {"sessions.roles": ["admin"]}):
        token = jwt.encode(claims(resource_access=access), TEST_JWT_SECRET, algorithm="HS256")
        app = app_with(jwt_roles_claim="resource_access.sessions.roles")
        async with asgi_client(app, {"Authorization": f"Bearer {token}"}) as client:
            response = await client.post("/sessions", json=session_body(state="confirmed"))
        assert response.status_code == 403, response.text


async def test_claim_names_are_configurable(app_with: Callable[..., FastAPI]) -> None:
    app = app_with(
        jwt_subject_claim="user_id",
        jwt_roles_claim="realm_access.roles",
        jwt_organizer_events_claim="https://sessions.example/organizes",
        jwt_admin_role="sessions-admin",
    )
    provider_claims = claims(
        sub="provider|abc",
        user_id="u-42",
        realm_access={"roles": ["sessions-admin"]},
        organizer_events=None,
    ) | {"https://sessions.example/organizes": []}
    token = jwt.encode(provider_claims, TEST_JWT_SECRET, algorithm="HS256")
    # Admin through the nested roles claim: it may create a session in any state.
    async with asgi_client(app, {"Authorization": f"Bearer {token}"}) as client:
        response = await client.post("/sessions", json=session_body(state="confirmed"))
    assert response.status_code == 201, response.text
    assert response.json()["creator_id"] == "u-42"


@pytest.mark.parametrize("separator", [" ", "  ", "\u00a0", "\u2003", "\t", "\x1f", "\x85"])
async def test_a_roles_string_is_split_on_spaces_only(
    app_with: Callable[..., FastAPI], separator: str
) -> None:
    # OAuth 2's scope syntax (RFC 6749 3.3): roles separated by U+0020. Another whitespace is
    # part of one role's name, which is not the admin role.
    token = hs256(roles=f"team{separator}admin")
    async with asgi_client(app_with(), {"Authorization": f"Bearer {token}"}) as client:
        response = await client.post("/sessions", json=session_body(state="confirmed"))
    assert response.status_code == (201 if separator.strip(" ") == "" else 403), response.text


async def test_claim_names_may_be_urls_with_dots(app_with: Callable[..., FastAPI]) -> None:
    # Auth0's convention: custom claims namespaced by a URL, whose dots are not a path.
    app = app_with(
        jwt_subject_claim="https://sessions.example/user",
        jwt_roles_claim="https://sessions.example/roles",
        jwt_organizer_events_claim="https://sessions.example/organizes",
    )
    provider_claims = claims(sub="provider|abc", organizer_events=None) | {
        "https://sessions.example/user": "u-43",
        "https://sessions.example/roles": [],
        "https://sessions.example/organizes": [9],
    }
    token = jwt.encode(provider_claims, TEST_JWT_SECRET, algorithm="HS256")
    # An organiser of event 9 only through the URL-named claim: may create it confirmed.
    async with asgi_client(app, {"Authorization": f"Bearer {token}"}) as client:
        created = await client.post("/sessions", json=session_body(event_id=9, state="confirmed"))
        refused = await client.post("/sessions", json=session_body(event_id=8, state="confirmed"))
    assert created.status_code == 201, created.text
    assert created.json()["creator_id"] == "u-43"
    assert refused.status_code == 403


async def test_openapi_declares_the_bearer_scheme(anonymous_client: httpx.AsyncClient) -> None:
    spec = (await anonymous_client.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["HTTPBearer"]["description"],
    }
    paths = spec["paths"]
    # Writes need the token, reads take it if given.
    for path, method in [("/sessions", "post"), ("/sessions/{session_id}", "patch")]:
        assert paths[path][method]["security"] == [{"HTTPBearer": []}]
    assert paths["/sessions/{session_id}"]["delete"]["security"] == [{"HTTPBearer": []}]
    for path, method in [("/sessions", "get"), ("/sessions/{session_id}", "get")]:
        assert paths[path][method]["security"] == [{"HTTPBearer": []}, {}]
    # The workflow reads no token: it says so (an empty list), rather than leaving it absent.
    assert paths["/sessions/states"]["get"]["security"] == []


def test_settings_refuse_alg_none() -> None:
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="none"):
        Settings(jwt_algorithms=["HS256", "none"])
    assert Settings(jwt_algorithms="RS256, ES256").jwt_algorithms == ["RS256", "ES256"]


def test_settings_refuse_an_hmac_secret_shorter_than_its_hash() -> None:
    # RFC 7518 3.2; PyJWT would otherwise refuse every token signed with it, one request at a time.
    from pydantic import ValidationError

    from service.settings import Settings

    with pytest.raises(ValidationError, match="JWT_SECRET must be at least 32 bytes for HS256"):
        Settings(jwt_secret="s" * 31)
    with pytest.raises(ValidationError, match="at least 64 bytes for HS256, HS512"):
        Settings(jwt_secret="s" * 63, jwt_algorithms=["RS256", "HS512"])
    # Bytes, not characters: 16 two-byte characters are 32 bytes.
    assert Settings(jwt_secret="é" * 16).jwt_secret == "é" * 16
    assert Settings(jwt_secret="s" * 64, jwt_algorithms=["HS512"]).jwt_secret == "s" * 64
    assert Settings(jwt_secret="").jwt_secret == ""  # no secret: HS* tokens are refused


def test_settings_refuse_a_cursor_secret_shorter_than_its_hash() -> None:
    # Every client holds cursors signed with it: a short one could be guessed offline.
    from pydantic import ValidationError

    from service.settings import DEVELOPMENT_CURSOR_SECRET, Settings

    with pytest.raises(ValidationError, match="cursor_secret\n  Value error, must be at least 32"):
        Settings(cursor_secret="s" * 31)
    assert Settings(cursor_secret="é" * 16).cursor_secret == "é" * 16
    assert Settings().cursor_secret == DEVELOPMENT_CURSOR_SECRET  # the logged development default


@pytest.mark.parametrize(
    ("settings", "accepted"),
    [
        pytest.param({}, True, id="nothing configured: development"),
        pytest.param({"jwt_public_key": public_pem(RSA_KEY)}, False, id="a provider's key"),
        pytest.param({"jwt_secret": ""}, False, id="an empty secret, as the image sets"),
    ],
)
async def test_the_development_secret_is_accepted_only_where_nothing_is_configured(
    app_with: Callable[..., FastAPI], settings: dict[str, Any], accepted: bool
) -> None:
    # Anyone can sign with it: it is in this repository.
    from service.settings import DEVELOPMENT_JWT_SECRET

    app = app_with(**({"jwt_secret": None} | settings))
    response = await post_with(app, hs256(DEVELOPMENT_JWT_SECRET))
    if accepted:
        assert response.status_code == 201, response.text
    else:
        assert_invalid_token(response)


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        ({"jwt_algorithms": ["RS256"]}, True),  # a secret, but only RS256, and no key for it
        ({"jwt_algorithms": ["RS256"], "jwt_public_key": public_pem(RSA_KEY)}, False),
        ({"jwt_algorithms": ["HS256"], "jwt_secret": ""}, True),
        ({"jwt_algorithms": ["HS256"]}, False),
    ],
    ids=["RS256 without a key", "RS256 with one", "HS256 without a secret", "HS256 with one"],
)
def test_a_start_that_would_refuse_every_token_is_warned_of(
    settings: dict[str, Any], warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from service.auth import create_token_verifier
    from service.settings import Settings

    with caplog.at_level(logging.WARNING, logger="service.auth"):
        create_token_verifier(Settings(**({"jwt_secret": TEST_JWT_SECRET} | settings)))
    messages = [record.getMessage() for record in caplog.records]
    assert any("every bearer token is refused" in message for message in messages) is warned


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens PyJWT decodes, in order: each one the verifier did not remember."""
    tokens: list[str] = []
    decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        tokens.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    return tokens


class WallClock:
    """The wall clock that the verifier's memory of tokens and PyJWT's check of exp read,
    moved by hand: a token's expiry without waiting for it, however slow the machine."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = time.time()
        clock = self

        class ClockDatetime(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> "ClockDatetime":
                return cls.fromtimestamp(clock.now, tz)

        # Before the app is built: the verifier's cache takes service.auth's time.time then.
        monkeypatch.setattr("service.auth.time", SimpleNamespace(time=lambda: self.now))
        monkeypatch.setattr("jwt.api_jwt.datetime", ClockDatetime)


async def test_a_remembered_token_is_refused_once_it_expires(
    app_with: Callable[..., FastAPI], decoded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Verified tokens are remembered until exp (+ leeway): the second request is served from
    # that memory, the third comes after exp and must be refused all the same.
    clock = WallClock(monkeypatch)
    app = app_with(jwt_leeway_seconds=0)
    exp = int(clock.now) + 60
    token = hs256(iat=exp - 120, exp=exp)
    first = await post_with(app, token)
    clock.now = exp - 0.5
    second = await post_with(app, token)
    assert (first.status_code, second.status_code) == (201, 201)
    assert decoded == [token]  # verified once
    clock.now = exp + 0.5
    expired = await post_with(app, token)
    assert_invalid_token(expired)
    assert "expired" in expired.json()["detail"]


async def test_a_token_too_large_to_remember_is_verified_each_time(
    app_with: Callable[..., FastAPI], decoded: list[str]
) -> None:
    from service.auth import REMEMBERED_TOKEN_MAX

    app = app_with()
    large = hs256(padding="x" * REMEMBERED_TOKEN_MAX)
    small = hs256()
    for token in (large, large, small, small):
        assert (await post_with(app, token)).status_code == 201
    assert decoded == [large, large, small]  # the large one is not kept in memory


def _organizer_tokens() -> Iterator[str]:
    # Long organizer_events lists: bounded by count alone (4,096 tokens), such tokens took
    # 350 MB. 600 events each (short enough to be remembered), 6 MB of them.
    events = random.Random(7)
    for i in range(100):
        yield hs256(sub=f"organizer-{i}", organizer_events=events.sample(range(10**6, 10**7), 600))


def _long_subject_tokens() -> Iterator[str]:
    # Many small tokens whose subject is as long as it may be: the subject is held apart from
    # the token's text.
    from service.models import USER_ID_MAX

    for i in range(3000):
        yield hs256(sub=f"{i:06}".ljust(USER_ID_MAX, "s"))


@pytest.mark.parametrize("make_tokens", [_organizer_tokens, _long_subject_tokens])
def test_the_tokens_remembered_are_bounded_by_the_memory_they_take(
    monkeypatch: pytest.MonkeyPatch, make_tokens: Callable[[], Iterator[str]]
) -> None:
    # Made one by one as they are verified, and not kept: what tracemalloc finds held is the
    # verifier's, each token's text included.
    from service import auth
    from service.settings import Settings

    budget = 2 * 1024 * 1024
    monkeypatch.setattr(auth, "VERIFIED_TOKENS_BYTES", budget)
    verifier = auth.TokenVerifier(Settings(jwt_secret=TEST_JWT_SECRET))
    gc.collect()
    tracemalloc.start()
    try:
        for token in make_tokens():
            assert len(token) <= auth.REMEMBERED_TOKEN_MAX
            principal = verifier.verify(token)
            assert principal.user_id is not None
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held <= budget, held
    # The latest are remembered: verified again from memory.
    assert verifier.verify(token) is principal


@pytest.mark.parametrize("exp", ["4102444800", 4102444800.5], ids=["numeric string", "float"])
async def test_exp_of_another_numeric_type_verifies_and_is_remembered(
    app_with: Callable[..., FastAPI], exp: object
) -> None:
    app = app_with()
    token = hs256(exp=exp)
    for _ in range(2):
        response = await post_with(app, token)
        assert response.status_code == 201, response.text


async def test_an_altered_remembered_token_is_refused(app_with: Callable[..., FastAPI]) -> None:
    app = app_with()
    token = hs256()
    assert (await post_with(app, token)).status_code == 201
    header, _, signature = token.split(".")
    forged_payload = b64(
        claims(sub="8") | {"exp": jwt.decode(token, TEST_JWT_SECRET, algorithms=["HS256"])["exp"]}
    )
    assert_invalid_token(await post_with(app, f"{header}.{forged_payload}.{signature}"))


async def test_answers_about_sessions_vary_by_authorization(
    client: httpx.AsyncClient, anonymous_client: httpx.AsyncClient
) -> None:
    draft = (await client.post("/sessions", json=session_body(state="draft"))).json()
    fetched = await client.get(f"/sessions/{draft['id']}")
    answers = {
        "200": fetched,
        "304": await client.get(
            f"/sessions/{draft['id']}", headers={"If-None-Match": fetched.headers["etag"]}
        ),
        "404 to an anonymous caller": await anonymous_client.get(f"/sessions/{draft['id']}"),
        "list": await anonymous_client.get("/sessions"),
        "401": await anonymous_client.post("/sessions", json=session_body()),
    }
    assert answers["304"].status_code == 304
    for name, response in answers.items():
        assert response.headers.get("vary") == "Authorization", name
    assert "vary" not in (await anonymous_client.get("/healthz")).headers
