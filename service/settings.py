import base64
import binascii
import ipaddress
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key
from cryptography.x509 import load_der_x509_certificate, load_pem_x509_certificate
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url

# Signs the development tokens of `sessions-service token`; anyone who reads this file can mint
# an admin token with it, so production sets JWT_SECRET to its own value or turns HS256 off.
DEVELOPMENT_JWT_SECRET = "sessions-service-development-secret-replace-me-in-production"  # noqa: S105

# RFC 7518 section 3.2: an HMAC key at least as long as the hash's output. `token` signs HS256.
HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# Each ES algorithm is ECDSA on one curve (RFC 7518 3.4).
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
# The JWS algorithms a deployment may allow; "none" is not one of them, whatever is configured.
SIGNING_ALGORITHMS = (
    frozenset(HMAC_KEY_BYTES) | _RSA_ALGORITHMS | frozenset(_EC_ALGORITHMS.values()) | {"EdDSA"}
)

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
# A wait: finite, and at most a day (PostgreSQL's statement_timeout stops at 2**31 - 1 ms).
Seconds = Annotated[float, Field(allow_inf_nan=False, le=86_400)]
DEVELOPMENT_CURSOR_SECRET = "development-only-cursor-secret"  # noqa: S105 (a documented default)
# Cursors are signed with HMAC-SHA256 and handed to every client: a secret shorter than the hash
# could be guessed offline from any one of them.
CURSOR_SECRET_BYTES = 32
# The shortest RSA key PyJWT verifies with (service.auth enforces its minimum key lengths).
RSA_KEY_BITS_MIN = 2048


def _key_kind(key: PublicKeyTypes) -> str:
    if isinstance(key, EllipticCurvePublicKey):
        return f"an EC key on the curve {key.curve.name}"
    return f"a key of type {type(key).__name__.removesuffix('PublicKey')}"


# A PEM block, from the line that begins with its BEGIN to its END. Several in one text are a
# bundle, which cryptography's loader would read only the first of; other text around them is
# ignored (a comment, a block whose BEGIN line is commented out).
_PEM_BLOCK = re.compile(
    r"^[ \t]*(-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \2-----)", re.DOTALL | re.MULTILINE
)
# Files joined without a line break between them (`cat old.pem new.pem`, the first without its
# last newline): the next BEGIN on the END's line.
_JOINED_BLOCKS = re.compile(r"(-----END [A-Z0-9 ]+-----)[ \t]*(?=-----BEGIN)")
_BEGIN_LINE = re.compile(r"^(.*?)-----BEGIN", re.MULTILINE)
_COMMENT = re.compile(r"[ \t]*(#|//|;)")
_BARE_BASE64 = re.compile(r"\s*[A-Za-z0-9+/]{40,}={0,2}\s*")


def _pem_blocks(pem: str) -> list[str]:
    """The PEM blocks of a text, but those whose BEGIN line is commented out (#, //, ;); the
    whole text where it has no BEGIN at all (then it is no PEM, and loading it says so)."""
    # Byte order marks: of a file saved on Windows, at its start or where files were joined.
    pem = _JOINED_BLOCKS.sub("\\1\n", pem.replace("\ufeff", ""))
    begins = _BEGIN_LINE.findall(pem)
    if not begins:
        return [pem]
    for before in begins:
        if before.strip(" \t") and not _COMMENT.match(before):
            # Else taken for a commented-out key, and left out silently.
            raise ValueError(
                f"JWT_PUBLIC_KEY(_FILE) has text before -----BEGIN on its line ({before[:20]!r})"
            )
    blocks = [block[1] for block in _PEM_BLOCK.finditer(pem)]
    if len(blocks) != sum(not before.strip(" \t") for before in begins):
        # A key pasted short, a file half written: the rest would have been taken silently.
        raise ValueError("JWT_PUBLIC_KEY(_FILE) has a PEM block that does not end (no END line)")
    if not blocks:
        raise ValueError("JWT_PUBLIC_KEY(_FILE) holds no key: each is commented out")
    return blocks


def _not_pem_hint(text: str) -> str:
    """What to do with a key given otherwise than as PEM, where that can be told."""
    if "\\n" in text and "\n" not in text.strip():
        return ": its lines are joined by \\n escapes; give it with its line breaks"
    if not _BARE_BASE64.fullmatch(text):
        return ""
    # A PEM block's base64 without its BEGIN and END lines, as Keycloak's console shows a realm's
    # key and certificate and a JWKS's x5c holds a certificate.
    try:
        der = base64.b64decode(text.strip() + "==")  # padding past the end is ignored
    except binascii.Error:
        return ""
    for label, load in (
        ("PUBLIC KEY", load_der_public_key),
        ("CERTIFICATE", load_der_x509_certificate),
    ):
        try:
            load(der)
        except ValueError:
            continue
        return (
            f": a bare base64 {label.lower()} goes between -----BEGIN {label}----- and "
            f"-----END {label}----- lines"
        )
    return ""


def _load_public_key(pem: str) -> PublicKeyTypes:
    """A PEM public key, or a PEM certificate's, as some identity providers publish theirs (its
    dates and issuer are not checked: the key alone verifies tokens)."""
    if pem.startswith("-----BEGIN CERTIFICATE-----"):
        return load_pem_x509_certificate(pem.encode()).public_key()
    return load_pem_public_key(pem.encode())


def is_plain_http(url: str) -> bool:
    return urlsplit(url).scheme == "http"


def algorithms_verified_by(key: PublicKeyTypes) -> frozenset[str]:
    """The JWS algorithms whose signatures this public key verifies."""
    if isinstance(key, RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(key, EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        return frozenset({algorithm} if algorithm else ())
    if isinstance(key, Ed25519PublicKey | Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()  # X25519, X448, DH, DSA: no JWS algorithm


# What asyncpg takes from a URL's query (beside the host, port, user, password and database):
# a Unix socket's directory or several hosts (host), TLS (ssl), which server (target_session_attrs),
# and SQLAlchemy's asyncpg dialect its statement cache (0 behind PgBouncer's transaction pooling).
# libpq's sslmode, which managed PostgreSQL services print in their URLs, is asyncpg's ssl.
URL_QUERY_PARAMETERS = (
    "host",
    "ssl",
    "sslmode",
    "target_session_attrs",
    "prepared_statement_cache_size",
)
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# asyncpg's (asyncpg.connect_utils.SessionAttribute).
TARGET_SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
PORTS = range(1, 65536)


def _ports(url: URL) -> list[int]:
    """The ports a URL names: its own, and those of the hosts in its query (host=db1:5433)."""
    hosts = url.query.get("host", ())
    named = [host.rpartition(":")[2] for host in ([hosts] if isinstance(hosts, str) else hosts)]
    return ([] if url.port is None else [url.port]) + [int(p) for p in named if p.isdecimal()]


def to_asyncpg_url(url: str) -> str:
    """Accept the usual spellings of a PostgreSQL URL and name the asyncpg driver; refuse one
    that asyncpg could not connect with, rather than fail every connection."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            break
    else:
        raise ValueError("must be a postgresql:// or postgresql+asyncpg:// URL")
    url = "postgresql+asyncpg://" + url.removeprefix(prefix)
    try:
        parsed = make_url(url)
    except ValueError:  # a port that is not a number
        raise ValueError("is not a valid URL: its port must be a number") from None
    query = dict(parsed.query)
    for name in query:
        if name not in URL_QUERY_PARAMETERS:
            raise ValueError(
                f"takes no query parameter {name!r} (only {', '.join(URL_QUERY_PARAMETERS)})"
            )
    if "sslmode" in query:
        if "ssl" in query:
            raise ValueError("takes sslmode or ssl, not both")
        query["ssl"] = query.pop("sslmode")
    if "ssl" in query and query["ssl"] not in SSL_MODES:
        raise ValueError(f"sslmode (or ssl) must be one of {', '.join(SSL_MODES)}")
    if query.get("target_session_attrs", "any") not in TARGET_SESSION_ATTRS:
        raise ValueError(f"target_session_attrs must be one of {', '.join(TARGET_SESSION_ATTRS)}")
    if not str(query.get("prepared_statement_cache_size", "0")).isdecimal():
        raise ValueError("prepared_statement_cache_size must be a whole number, 0 or more")
    if any(port not in PORTS for port in _ports(parsed)):
        raise ValueError("is not a valid URL: a port must be from 1 to 65535")
    return parsed.set(query=query).render_as_string(hide_password=False) if query else url


DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def _not_an_origin(origin: str) -> str | None:
    """What keeps `origin` from being an origin as browsers send it (RFC 6454 6.2: scheme, host
    and port, in lower case, the host in ASCII, a default port left out), or None."""
    if origin == "null":
        return "the opaque origin of sandboxed and file: pages, which any page may send"
    parts = urlsplit(origin)
    if not parts.scheme or not parts.hostname:
        return "no scheme://host"
    if parts.path or parts.query or parts.fragment or origin.endswith(("?", "#")):
        return "a path, a query or a fragment"
    if "@" in parts.netloc:
        return "a user name"
    try:
        port = parts.port
        host = _ascii_host(parts.hostname)
    except ValueError:
        return "not a host and a port"
    if port == DEFAULT_PORTS.get(parts.scheme):
        port = None
    sent = f"{parts.scheme.lower()}://{host}" + ("" if port is None else f":{port}")
    if origin != sent:
        return f"browsers send {sent}"
    return None


def _ascii_host(host: str) -> str:
    """The host as a browser serializes it: an IP address in its shortest form, a name in
    lower-case ASCII (IDNA); ValueError for what is neither, a wildcard (*.example) included."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    try:
        name = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(host) from None
    if not _HOST_NAME.fullmatch(name):
        raise ValueError(host)
    return name


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # None means "no database configured": the CLI then starts an embedded PostgreSQL.
    database_url: str | None = None
    embedded_data_dir: Path = Path(".data/postgres")
    # Not empty, which uvicorn would take for every interface: 0.0.0.0 says so.
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8000, ge=0, le=65_535)  # 0: any free port
    log_level: LogLevel = "info"
    access_log: bool = True
    # uvicorn's wait for in-flight requests after SIGTERM; below Kubernetes' default 30 s grace.
    graceful_shutdown_timeout: int = Field(default=20, ge=0)
    # How long an idle connection is kept open for the client's next request. Longer than a load
    # balancer's own idle timeout (60 s at AWS's and nginx's), else a request it sends on a
    # connection the service is closing is lost (a 502, and a POST is not retried).
    keep_alive_timeout: int = Field(default=75, ge=1, le=3600)
    # Overflow connections are closed as soon as they are returned: under steady load they are
    # opened and closed again request after request, so the pool holds all it may use.
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    # Every wait on the database is bounded, so that an outage answers 503 instead of hanging.
    db_pool_timeout: Seconds = Field(default=5.0, gt=0)
    db_connect_timeout: Seconds = Field(default=5.0, gt=0)
    # In whole milliseconds on the server, where 0 would mean no limit at all.
    db_statement_timeout: Seconds = Field(default=5.0, ge=0.001)
    # Each wait of a statement for a lock (a row another transaction is changing; PostgreSQL's
    # lock_timeout): shorter than the statement timeout, so that writes piled up on one row give
    # their connections back soon. Behind other waiters, a row lock is two waits: for the row,
    # then for the transaction that holds it.
    db_lock_timeout: Seconds = Field(default=1.0, ge=0.001)
    readiness_timeout: Seconds = Field(default=2.0, gt=0)
    # DATABASE_URL points at a connection pooler (PgBouncer, in session or transaction mode),
    # which refuses startup parameters and may run each transaction on another server connection:
    # the timeouts are then the role's (ALTER ROLE … SET, checked at start), and no statement is
    # looked up by a name another server connection prepared it under (service.db).
    db_behind_pooler: bool = False
    # PATCH and DELETE without If-Match or If-Unmodified-Since get 428 (RFC 6585).
    require_preconditions: bool = False
    # Signs list cursors and change-feed tokens. The default is for development only: in
    # production set a long random secret, the same on every replica (a token signed by one is
    # then accepted by all); changing it makes every outstanding cursor and token a 400.
    cursor_secret: str = DEVELOPMENT_CURSOR_SECRET

    # Bearer tokens (JWT). Each algorithm family has its own key: HS* the shared secret, the others
    # the identity provider's public key, so a public key can never be used as an HMAC secret.
    jwt_algorithms: Annotated[list[str], NoDecode, Field(min_length=1)] = [
        "RS256",
        "ES256",
        "HS256",
    ]
    jwt_public_key: str | None = None  # PEM text
    jwt_public_key_file: Path | None = None  # or a PEM file
    _public_keys: tuple[PublicKeyTypes, ...] = PrivateAttr(default=())  # read from either
    # Or the URL of the provider's JWK Set (OpenID Connect's jwks_uri), fetched at start and
    # every JWT_JWKS_REFRESH_SECONDS (service.jwks).
    jwt_jwks_url: str | None = None
    jwt_jwks_refresh_seconds: Seconds = Field(default=300, ge=1)
    # Unset: the development secret, unless the identity provider's key is configured (a
    # deployment). Empty: HS* tokens are refused. The container image sets it empty.
    jwt_secret: str | None = None
    # A token must carry one of these `iss` / `aud` where any is set (comma-separated: an identity
    # provider may issue under two names, as Entra ID's v1 and v2 tokens, or Google's).
    jwt_issuer: Annotated[list[str], NoDecode] = []
    jwt_audience: Annotated[list[str], NoDecode] = []
    jwt_leeway_seconds: float = Field(default=30, ge=0, le=300)
    # Where the claims are, if the identity provider names them differently ("a.b" is nested).
    jwt_subject_claim: str = "sub"
    jwt_roles_claim: str = "roles"
    jwt_organizer_events_claim: str = "organizer_events"
    jwt_admin_role: str = "admin"

    max_body_size: int = Field(default=1024 * 1024, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = []

    @model_validator(mode="after")
    def _lock_timeout_within_statement_timeout(self) -> Self:
        # Else the statement timeout would end every lock wait first, and DB_LOCK_TIMEOUT would
        # say a limit that never applies.
        if self.db_lock_timeout >= self.db_statement_timeout:
            raise ValueError(
                f"DB_LOCK_TIMEOUT ({self.db_lock_timeout:g} s) must be shorter than "
                f"DB_STATEMENT_TIMEOUT ({self.db_statement_timeout:g} s)"
            )
        return self

    @model_validator(mode="after")
    def _pooler_named(self) -> Self:
        # The embedded PostgreSQL is not behind one, and would run without any timeout.
        if self.db_behind_pooler and not self.database_url:
            raise ValueError("DB_BEHIND_POOLER needs DATABASE_URL: the pooler's URL")
        return self

    @field_validator("jwt_algorithms", "cors_origins", "jwt_issuer", "jwt_audience", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        # From the environment: a comma-separated list ("RS256,ES256").
        if isinstance(value, str):
            items = [item.strip() for item in value.split(",") if item.strip()]
            if value and not items:
                # JWT_ISSUER="," or " ": set, yet it would check nothing.
                raise ValueError("names nothing: leave it empty to leave it unset")
            return items
        return value

    @field_validator("cors_origins")
    @classmethod
    def _browser_origins(cls, origins: list[str]) -> list[str]:
        # Compared as the browser sends Origin: an entry written otherwise would match nothing.
        for origin in origins:
            if origin != "*" and (problem := _not_an_origin(origin)):
                raise ValueError(
                    f"{origin!r} is not an origin as browsers send it ({problem}): "
                    "scheme://host[:port], such as https://app.example"
                )
        return origins

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, algorithms: list[str]) -> list[str]:
        unknown = set(algorithms) - SIGNING_ALGORITHMS
        if unknown:
            raise ValueError(f"not signing algorithms this service accepts: {sorted(unknown)}")
        return algorithms

    @model_validator(mode="after")
    def _hmac_secret(self) -> Self:
        if self.jwt_secret is None and not self.has_identity_provider_keys():
            self.jwt_secret = DEVELOPMENT_JWT_SECRET
        # Refused here, when the service starts: PyJWT would refuse every token signed with it.
        if self.jwt_secret:
            hmac = {"HS256", *(name for name in self.jwt_algorithms if name in HMAC_KEY_BYTES)}
            needed = max(HMAC_KEY_BYTES[name] for name in hmac)
            if len(self.jwt_secret.encode()) < needed:
                raise ValueError(
                    f"JWT_SECRET must be at least {needed} bytes for {', '.join(sorted(hmac))} "
                    "(RFC 7518, section 3.2); e.g. python3 -c "
                    f"'import secrets; print(secrets.token_urlsafe({needed}))'"
                )
        return self

    def has_identity_provider_keys(self) -> bool:
        """Whether the identity provider's keys are configured (a deployment)."""
        return bool(self.jwt_public_key or self.jwt_public_key_file or self.jwt_jwks_url)

    def public_key_pem(self) -> str | None:
        """The identity provider's public key: JWT_PUBLIC_KEY, or the file JWT_PUBLIC_KEY_FILE."""
        if self.jwt_public_key_file is not None:
            # utf-8-sig: a byte order mark (a file saved on Windows) is no part of the PEM.
            return self.jwt_public_key_file.read_text(encoding="utf-8-sig")
        return self.jwt_public_key

    def public_keys(self) -> tuple[PublicKeyTypes, ...]:
        """The identity provider's public keys, one per PEM block: several while it rotates its
        signing key (the next one added before it signs with it, the last one kept until the
        tokens it signed have expired). Those checked at start: the file is read once."""
        return self._public_keys

    @model_validator(mode="after")
    def _usable_public_keys(self) -> Self:
        # Checked when the service starts, as every setting, rather than at the first token.
        if self.jwt_public_key and self.jwt_public_key_file:
            raise ValueError("set JWT_PUBLIC_KEY or JWT_PUBLIC_KEY_FILE, not both")
        if self.jwt_jwks_url and (self.jwt_public_key or self.jwt_public_key_file):
            raise ValueError("set JWT_JWKS_URL or JWT_PUBLIC_KEY(_FILE), not both")
        try:
            pem = self.public_key_pem()
        except OSError as exc:
            raise ValueError(f"JWT_PUBLIC_KEY_FILE cannot be read: {exc.strerror}") from None
        except UnicodeDecodeError:  # a DER or other binary file: PEM is ASCII text
            raise ValueError(
                "JWT_PUBLIC_KEY(_FILE) is not a PEM public key or certificate"
            ) from None
        blocks = _pem_blocks(pem) if pem else []
        keys = []
        for number, block in enumerate(blocks, 1):
            name = "JWT_PUBLIC_KEY(_FILE)"
            if len(blocks) > 1:
                name += f"'s key {number} of {len(blocks)}"
            keys.append(self._checked_public_key(block, name))
        self._public_keys = tuple(keys)
        return self

    def _checked_public_key(self, pem: str, name: str) -> PublicKeyTypes:
        if "PRIVATE KEY-----" in pem.partition("\n")[0]:
            raise ValueError(f"{name} is a private key: give the service the public key alone")
        try:
            key = _load_public_key(pem)
        except ValueError:
            hint = _not_pem_hint(pem)
            raise ValueError(f"{name} is not a PEM public key or certificate{hint}") from None
        if isinstance(key, RSAPublicKey) and key.key_size < RSA_KEY_BITS_MIN:
            # PyJWT would refuse every token signed with it (enforce_minimum_key_length).
            raise ValueError(
                f"{name} is an RSA key of {key.key_size} bits: at least "
                f"{RSA_KEY_BITS_MIN} (NIST SP 800-131A)"
            )
        verifies = algorithms_verified_by(key)
        asymmetric = set(self.jwt_algorithms) - set(HMAC_KEY_BYTES)
        if asymmetric and not verifies & asymmetric:
            # Every token of those algorithms would be refused, each as a 401 that blames the
            # token. (Only HS* allowed: the key is not used at all.)
            raise ValueError(
                f"{name} verifies none of JWT_ALGORITHMS ({','.join(self.jwt_algorithms)}): "
                + (
                    f"it verifies {','.join(sorted(verifies))}"
                    if verifies
                    else f"it is {_key_kind(key)}, which verifies no JWS algorithm of these"
                )
            )
        return key

    @field_validator("jwt_jwks_url")
    @classmethod
    def _jwks_url(cls, url: str | None) -> str | None:
        if not url:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(
                "must be the https:// URL of the identity provider's JWK Set (its jwks_uri, "
                "such as https://idp.example/realms/conf/protocol/openid-connect/certs)"
            )
        return url

    @model_validator(mode="after")
    def _jwks_for_an_allowed_algorithm(self) -> Self:
        if self.jwt_jwks_url and set(self.jwt_algorithms) <= set(HMAC_KEY_BYTES):
            raise ValueError(
                f"JWT_JWKS_URL's keys verify none of JWT_ALGORITHMS "
                f"({','.join(self.jwt_algorithms)}): allow the provider's (RS256, ES256...)"
            )
        return self

    @field_validator("cursor_secret")
    @classmethod
    def _long_cursor_secret(cls, secret: str) -> str:
        if secret != DEVELOPMENT_CURSOR_SECRET and len(secret.encode()) < CURSOR_SECRET_BYTES:
            raise ValueError(
                f"must be at least {CURSOR_SECRET_BYTES} bytes; e.g. python3 -c "
                f"'import secrets; print(secrets.token_urlsafe({CURSOR_SECRET_BYTES}))'"
            )
        return secret

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, url: str | None) -> str | None:
        return to_asyncpg_url(url) if url else None

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, level: object) -> object:
        return level.lower() if isinstance(level, str) else level


@lru_cache
def get_settings() -> Settings:
    return Settings()


def configuration_errors(exc: ValidationError) -> str:
    """What is wrong with the settings, by environment variable, without a traceback and without
    the values (pydantic's own message quotes them: a secret or a password, into the logs)."""
    lines = ["invalid configuration (environment or .env):"]
    for error in exc.errors():
        name = str(error["loc"][0]).upper() if error["loc"] else ""
        cause = error.get("ctx", {}).get("error")  # a validator's own message
        message = str(cause) if cause is not None else error["msg"]
        lines.append(f"  {name}: {message}" if name else f"  {message}")
    return "\n".join(lines)
