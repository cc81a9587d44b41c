"""Settings the service cannot use are refused when it starts, each named (see test_cli for the
message the commands print)."""

import base64
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from service.settings import Settings


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"host": ""}, "at least 1 character"),
        ({"port": 99_999}, "less than or equal to 65535"),
        ({"port": -1}, "greater than or equal to 0"),
        ({"db_statement_timeout": float("inf")}, "finite number"),
        ({"db_statement_timeout": 3_000_000}, "less than or equal to 86400"),
        ({"db_statement_timeout": 0.0004}, "greater than or equal to 0.001"),
        ({"db_lock_timeout": float("inf")}, "finite number"),
        ({"db_lock_timeout": 0.0004}, "greater than or equal to 0.001"),
        ({"db_lock_timeout": 5, "db_statement_timeout": 5}, "must be shorter than DB_STATEMENT"),
        ({"db_statement_timeout": 0.5}, r"DB_LOCK_TIMEOUT \(1 s\) must be shorter"),
        ({"db_connect_timeout": float("nan")}, "finite number"),
        ({"db_pool_timeout": 1e300}, "less than or equal to 86400"),
        ({"readiness_timeout": float("inf")}, "finite number"),
        ({"jwt_algorithms": ""}, "at least 1 item"),
        ({"db_behind_pooler": True}, "DB_BEHIND_POOLER needs DATABASE_URL"),
        ({"jwt_public_key": "garbage"}, "is not a PEM public key"),
        ({"jwt_public_key_file": Path("/nonexistent/key.pem")}, "cannot be read"),
    ],
)
def test_unusable_settings_are_refused(values: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        Settings(**values)


@pytest.mark.parametrize(
    ("origin", "error"),
    [
        ("https://app.example/", "a path"),
        ("https://app.example/admin", "a path"),
        ("HTTPS://app.example", "send https://app.example"),
        ("https://App.example", "send https://app.example"),
        ("https://app.example:443", "send https://app.example\\)"),
        ("http://app.example:80", "send http://app.example\\)"),
        ("https://app.example:", "send https://app.example\\)"),
        ("https://app.example:08080", "send https://app.example:8080"),
        ("https://bücher.example", "send https://xn--bcher-kva.example"),
        ("http://[0:0:0:0:0:0:0:1]:3000", r"send http://\[::1\]:3000"),
        ("https://app.example:99999", "not a host and a port"),
        ("https://*.example.com", "not a host and a port"),
        ("https://ap p.example", "not a host and a port"),
        ("https://%41pp.example", "not a host and a port"),
        ("https://app.example;x", "not a host and a port"),
        ("app.example", "no scheme://host"),
        ("https://user@app.example", "a user name"),
        ("null", "the opaque origin"),
    ],
)
def test_a_cors_origin_that_no_browser_sends_is_refused(origin: str, error: str) -> None:
    # Browsers send Origin as scheme://host[:port] (RFC 6454 6.2), compared as it is: an entry
    # written otherwise would silently allow no one.
    with pytest.raises(ValidationError, match=error):
        Settings(cors_origins=f"https://ok.example,{origin}")


def test_cors_origins_as_browsers_send_them_are_taken() -> None:
    origins = "https://app.example, http://127.0.0.1:5173,https://[::1]:8443,*"
    origins += ",https://xn--bcher-kva.example,http://localhost,https://a-b.example:8080"
    assert Settings(cors_origins=origins).cors_origins == [
        "https://app.example",
        "http://127.0.0.1:5173",
        "https://[::1]:8443",
        "*",
        "https://xn--bcher-kva.example",
        "http://localhost",
        "https://a-b.example:8080",
    ]


def public_pem(key: Any) -> str:
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


@pytest.mark.parametrize(
    ("key", "algorithms", "error"),
    [
        (x25519.X25519PrivateKey.generate(), "RS256,ES256,HS256", "type X25519, which verifies"),
        (ec.generate_private_key(ec.SECP256K1()), "ES256", "the curve secp256k1, which verifies"),
        (rsa.generate_private_key(65537, 2048), "ES256,HS256", "it verifies PS256,PS384"),
        (ec.generate_private_key(ec.SECP384R1()), "ES256", "it verifies ES384"),
        (ed25519.Ed25519PrivateKey.generate(), "RS256", "it verifies EdDSA"),
    ],
    ids=["x25519", "secp256k1", "rsa without RS or PS", "P-384 for ES256", "ed25519 without EdDSA"],
)
def test_a_public_key_that_verifies_none_of_the_algorithms_is_refused(
    key: Any, algorithms: str, error: str
) -> None:
    # Every token would be a 401 "malformed or its signature does not verify", nothing logged.
    with pytest.raises(ValidationError, match=f"verifies none of JWT_ALGORITHMS.*{error}"):
        Settings(jwt_public_key=public_pem(key), jwt_algorithms=algorithms)


@pytest.mark.parametrize(
    ("key", "algorithms"),
    [
        (rsa.generate_private_key(65537, 2048), "PS256"),
        (ec.generate_private_key(ec.SECP256R1()), "RS256,ES256,HS256"),
        (ec.generate_private_key(ec.SECP521R1()), "ES512"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA,HS256"),
        # No asymmetric algorithm allowed: the key is not used, whatever it is.
        (rsa.generate_private_key(65537, 2048), "HS256"),
        (x25519.X25519PrivateKey.generate(), "HS256,HS512"),
    ],
)
def test_a_public_key_that_verifies_one_of_the_algorithms_is_taken(
    key: Any, algorithms: str
) -> None:
    assert Settings(jwt_public_key=public_pem(key), jwt_algorithms=algorithms).jwt_public_key


def test_an_rsa_public_key_shorter_than_pyjwt_verifies_with_is_refused() -> None:
    # PyJWT refuses every token that such a key verifies, each as a 401 that blamed the token.
    def pem(bits: int) -> str:
        return public_pem(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    with pytest.raises(ValidationError, match="an RSA key of 1024 bits: at least 2048"):
        Settings(jwt_public_key=pem(1024))
    assert Settings(jwt_public_key=pem(2048)).jwt_public_key


@pytest.mark.parametrize("value", [",", " ", " , "])
def test_an_issuer_or_audience_that_names_nothing_is_refused(value: str) -> None:
    # Set, yet it would check nothing: a token of any issuer would pass.
    with pytest.raises(ValidationError, match="names nothing"):
        Settings(jwt_issuer=value)
    with pytest.raises(ValidationError, match="names nothing"):
        Settings(jwt_audience=value)
    assert Settings(jwt_issuer="", jwt_audience="").jwt_issuer == []


def test_each_key_of_several_is_checked() -> None:
    # A key that verifies nothing allowed, or too short, is refused wherever it stands.
    rsa_key = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    p384 = public_pem(ec.generate_private_key(ec.SECP384R1()))
    short = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    assert Settings(jwt_public_key=rsa_key + p384, jwt_algorithms="RS256,ES384")
    with pytest.raises(ValidationError, match=r"key 2 of 2 verifies none of .* it verifies ES384"):
        Settings(jwt_public_key=rsa_key + p384, jwt_algorithms="RS256")
    with pytest.raises(ValidationError, match="key 1 of 2 is an RSA key of 1024 bits"):
        Settings(jwt_public_key=short + rsa_key)
    garbled = rsa_key + "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    with pytest.raises(ValidationError, match=r"key 2 of 2 is not a PEM public key"):
        Settings(jwt_public_key=garbled)


def test_a_pem_block_cut_short_is_refused_and_one_commented_out_left_out(tmp_path: Path) -> None:
    current = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    following = public_pem(ec.generate_private_key(ec.SECP256R1()))
    # A paste cut short: the next key would have been left out silently.
    with pytest.raises(ValidationError, match="a PEM block that does not end"):
        Settings(jwt_public_key=current + following[:120])
    # The old key retired by commenting out its BEGIN line: not a key any more. None left: an
    # error rather than a service that refuses every token.
    retired = "# " + current
    settings = Settings(jwt_public_key=retired + following, jwt_algorithms="RS256,ES256")
    (key,) = settings.public_keys()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    with pytest.raises(ValidationError, match="holds no key: each is commented out"):
        Settings(jwt_public_key=retired, jwt_algorithms="RS256")
    # Other text before a BEGIN: no telling whether it was meant to retire the key.
    with pytest.raises(ValidationError, match="has text before -----BEGIN on its line"):
        Settings(jwt_public_key=current + "key: " + following, jwt_algorithms="RS256,ES256")
    # Files saved on Windows (a byte order mark at the start of each), joined without a line
    # break between them (`cat old.pem new.pem`): each key is a key.
    bom_file = tmp_path / "bom.pem"
    joined = "\ufeff" + current.rstrip("\n") + "\ufeff" + following
    bom_file.write_text(joined, encoding="utf-8")
    settings = Settings(jwt_public_key_file=bom_file, jwt_algorithms="RS256,ES256")
    assert len(settings.public_keys()) == 2
    # The keys are those checked at start: a file changed since changes nothing.
    key_file = tmp_path / "idp.pem"
    key_file.write_text(following)
    settings = Settings(jwt_public_key_file=key_file, jwt_algorithms="ES256")
    key_file.write_text(current)
    assert [type(key) for key in settings.public_keys()] == [type(key)]


def test_a_private_key_or_a_bare_base64_key_is_refused_saying_what_to_give() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(ValidationError, match="is a private key: give the service the public"):
        Settings(jwt_public_key=private_pem)
    # The body of a PEM block without its armour, as Keycloak's console shows a realm's key.
    bare = "".join(public_pem(private).splitlines()[1:-1])
    with pytest.raises(ValidationError, match="bare base64 public key goes between -----BEGIN PUB"):
        Settings(jwt_public_key=bare)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2026, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2027, 1, 1, tzinfo=UTC))
        .sign(private, hashes.SHA256())
    )
    bare = base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()
    with pytest.raises(ValidationError, match="bare base64 certificate goes between -----BEGIN CE"):
        Settings(jwt_public_key=bare)
    # Its line breaks written as \n, as a JSON string or a one-line environment file holds them.
    with pytest.raises(ValidationError, match=r"its lines are joined by \\n escapes"):
        Settings(jwt_public_key=public_pem(private).replace("\n", "\\n"))
    with pytest.raises(
        ValidationError, match="set JWT_PUBLIC_KEY or JWT_PUBLIC_KEY_FILE, not both"
    ):
        Settings(jwt_public_key=public_pem(private), jwt_public_key_file=Path("idp.pem"))


@pytest.mark.parametrize("content", [b"not a key", b"\xff\xfe\x00\x01"], ids=["text", "binary"])
def test_a_public_key_file_that_is_no_key_is_refused(tmp_path: Path, content: bytes) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(content)
    with pytest.raises(ValidationError, match=r"JWT_PUBLIC_KEY\(_FILE\) is not a PEM public key"):
        Settings(jwt_public_key_file=key_file)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("mysql://app:pw@db/sessions", "must be a postgresql:// or postgresql"),
        ("postgresql://app@db:abc/sessions", "its port must be a number"),
        (
            "postgresql://app@db/sessions?application_name=x",
            "no query parameter 'application_name'",
        ),
        ("postgresql://app@db/sessions?sslmode=bogus", "sslmode .or ssl. must be one of"),
        ("postgresql://app@db/sessions?sslmode=require&ssl=require", "sslmode or ssl, not both"),
        # asyncpg took 70968 for 5432 (70968 - 65536), and raised on the others at connect.
        ("postgresql://app@db:70968/sessions", "a port must be from 1 to 65535"),
        ("postgresql://app@/sessions?host=db1:5432&host=db2:0", "a port must be from 1 to 65535"),
        ("postgresql://app@db/sessions?target_session_attrs=bogus", "must be one of any, primary"),
        (
            "postgresql://app@db/sessions?prepared_statement_cache_size=abc",
            "prepared_statement_cache_size must be a whole number",
        ),
    ],
)
def test_a_database_url_asyncpg_could_not_connect_with_is_refused(url: str, error: str) -> None:
    with pytest.raises(ValidationError, match=error) as refused:
        Settings(database_url=url)
    assert refused.value.errors()[0]["loc"] == ("database_url",)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # libpq's spelling, as managed PostgreSQL services print it, becomes asyncpg's.
        (
            "postgresql://app@db/sessions?sslmode=require",
            "postgresql+asyncpg://app@db/sessions?ssl=require",
        ),
        (
            "postgres://app@/sessions?host=/run/postgresql",
            "postgresql+asyncpg://app@/sessions?host=%2Frun%2Fpostgresql",
        ),
        (
            "postgresql+asyncpg://app:p%40ss@db:6432/sessions",
            "postgresql+asyncpg://app:p%40ss@db:6432/sessions",
        ),
        (
            "postgresql://app@/sessions?host=db1:5432&host=db2:5433&target_session_attrs=primary",
            "postgresql+asyncpg://app@/sessions?host=db1%3A5432&host=db2%3A5433"
            "&target_session_attrs=primary",
        ),
    ],
)
def test_a_database_url_is_normalised_for_asyncpg(url: str, expected: str) -> None:
    assert Settings(database_url=url).database_url == expected


def test_the_tests_take_no_setting_from_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # conftest keeps a developer's own settings out of the tests: a .env in the directory the
    # tests run from is not read (the environment's variables are dropped before any test).
    (tmp_path / ".env").write_text("REQUIRE_PRECONDITIONS=true\nCURSOR_SECRET=" + "x" * 40 + "\n")
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.require_preconditions is False
    assert settings.cursor_secret != "x" * 40


def test_the_compose_file_s_settings_left_unset_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    # compose.yaml passes these through from the shell, empty where it has none.
    compose = yaml.safe_load((Path(__file__).parent.parent / "compose.yaml").read_text())
    environment: dict[str, str] = compose["x-service"]["environment"]
    for name, value in environment.items():
        monkeypatch.setenv(name, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value))
    assert {"JWT_SECRET", "JWT_JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE"} <= environment.keys()
    settings = Settings(_env_file=None)
    assert settings.jwt_secret == ""  # every token refused, as the image
    assert settings.jwt_jwks_url is None
    assert settings.jwt_issuer == settings.jwt_audience == []
