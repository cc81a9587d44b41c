"""Probes, metrics, request ids and the access log: what the platform sees of the service."""

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event
from sqlalchemy.engine import make_url
from starlette.types import Message

from alembic import command
from service.db import Base, driver_reason
from service.migrations import alembic_config, migrate
from service.ops import SERVICE_PRIVILEGES, SERVICE_TABLES
from service.settings import DEVELOPMENT_JWT_SECRET, Settings
from tests.conftest import (
    PROBLEM_JSON,
    assert_problem,
    asyncpg_dsn,
    create_database,
    database_role,
    drop_database,
    post_sessions_scope,
    sample,
    session_body,
    started,
)


@pytest.fixture
async def service(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its own engine on the tests' database; its requests here write nothing."""
    async with started(Settings(database_url=database_url)) as running:
        yield running


@pytest.fixture
def fresh_database(server_url: str) -> Iterator[str]:
    url = create_database(server_url, prefix="sessions_ready")
    yield url
    drop_database(server_url, url)


async def set_revision(url: str, revision: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("UPDATE alembic_version SET version_num = $1", revision)
    finally:
        await conn.close()


async def test_healthz_answers_without_the_database() -> None:
    # An app whose lifespan never ran has no engine at all: liveness must not need one.
    from service.main import create_app

    app = create_app(Settings(database_url="postgresql://nobody@127.0.0.1:1/none"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_follows_the_schema_through_its_migrations(fresh_database: str) -> None:
    async with started(Settings(database_url=fresh_database)) as (_, client):
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["checks"] == {"database": "ok", "schema": "missing"}
        assert "sessions-service migrate" in response.json()["detail"]

        await asyncio.to_thread(migrate, fresh_database)
        response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {
            "status": "ready",
            "checks": {"database": "ok", "schema": "at head"},
        }

        # A release ahead migrated the database: the replicas of this one keep serving.
        await set_revision(fresh_database, "f00dfeed")
        response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["checks"]["schema"] == "ahead"

        config = alembic_config(fresh_database)
        head = ScriptDirectory.from_config(config).get_current_head()
        assert head is not None
        await set_revision(fresh_database, head)
        await asyncio.to_thread(command.downgrade, config, "-1")
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"] == {"database": "ok", "schema": "behind"}


async def test_a_database_url_in_libpq_spelling_migrates_and_serves(fresh_database: str) -> None:
    # ?sslmode=..., as managed PostgreSQL services print their URLs: asyncpg calls it ssl.
    # (prefer: TLS where the server offers it; the tests' server does not.)
    libpq = make_url(fresh_database).update_query_dict({"sslmode": "prefer"})
    url = libpq.render_as_string(hide_password=False)
    await asyncio.to_thread(migrate, url)
    async with started(Settings(database_url=url)) as (_, client):
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.post("/sessions", json=session_body())).status_code == 201


async def test_readyz_fails_when_the_database_does_not_exist(server_url: str) -> None:
    missing = make_url(server_url).set(database=f"sessions_no_such_{uuid.uuid4().hex[:12]}")
    settings = Settings(database_url=missing.render_as_string(hide_password=False))
    async with started(settings) as (_, client):
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "unavailable"}


async def test_timeouts_left_unchecked_at_start_behind_a_pooler_are_logged(
    server_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The database that did not answer may answer later, without the role's timeouts.
    missing = make_url(server_url).set(database=f"sessions_no_such_{uuid.uuid4().hex[:12]}")
    url = missing.render_as_string(hide_password=False)
    with caplog.at_level(logging.WARNING, logger="service.ops"):
        async with started(Settings(database_url=url, db_behind_pooler=True)):
            pass
    warned = [record.getMessage() for record in caplog.records if record.name == "service.ops"]
    assert any(
        line.startswith("the timeouts of the database's connections are not checked: ")
        and "does not exist" in line
        for line in warned
    ), warned


async def test_readyz_does_not_take_a_schema_it_may_not_read_for_a_missing_one(
    fresh_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A role without SELECT on alembic_version: "run `sessions-service migrate`" would send the
    # operator the wrong way; the database's own reason is logged instead.
    await asyncio.to_thread(migrate, fresh_database)
    async with database_role(fresh_database) as url:
        with caplog.at_level(logging.WARNING, logger="service.ops"):
            async with started(Settings(database_url=url)) as (_, client):
                response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "unavailable"}
    reasons = [record.getMessage() for record in caplog.records]
    assert any("permission denied for table alembic_version" in reason for reason in reasons)
    assert not any("migrate" in reason for reason in reasons)


# Exactly what /readyz asks of the service's role: no sequence privileges (the id is an
# identity column), nothing beyond these four on the service's own tables.
TABLE_GRANTS = [
    f"GRANT {', '.join(SERVICE_PRIVILEGES)} ON {table.name} TO {{role}}"
    for table in Base.metadata.sorted_tables
] + ["GRANT SELECT ON alembic_version TO {role}"]


async def test_readyz_passes_a_role_with_what_it_asks_and_every_write_works(
    fresh_database: str,
) -> None:
    # A table of the models that /readyz would not ask about could be missing its grants.
    assert {model.__tablename__ for model in SERVICE_TABLES} == set(Base.metadata.tables)
    await asyncio.to_thread(migrate, fresh_database)
    async with (
        database_role(fresh_database, *TABLE_GRANTS) as url,
        started(Settings(database_url=url)) as (_, client),
    ):
        assert (await client.get("/readyz")).status_code == 200
        key = {"Idempotency-Key": '"readiness-grants"'}
        created = await client.post("/sessions", json=session_body(event_id=1), headers=key)
        assert created.status_code == 201, created.text
        replayed = await client.post("/sessions", json=session_body(event_id=1), headers=key)
        assert replayed.json() == created.json()
        path = f"/sessions/{created.json()['id']}"
        etag = created.headers["ETag"]
        for event_id in (2, 1):  # a departure from event 1 recorded, then dropped
            moved = await client.patch(
                path, json={"event_id": event_id}, headers={"If-Match": etag}
            )
            assert moved.status_code == 200, moved.text
            etag = moved.headers["ETag"]
        feed = await client.get("/sessions/changes", params={"event_id": 1})
        assert feed.status_code == 200, feed.text
        deleted = await client.delete(path, headers={"If-Match": etag})
        assert deleted.status_code == 204, deleted.text


async def test_readyz_fails_while_the_search_path_finds_another_schemas_table_first(
    fresh_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The role's search_path puts a schema holding a table named sessions ahead of the migrated
    # one: every request would use that table (503s, or writes that land there).
    await asyncio.to_thread(migrate, fresh_database)
    grants = [
        *TABLE_GRANTS,
        "CREATE SCHEMA other",
        "CREATE TABLE other.sessions (id int PRIMARY KEY, title text)",
        "GRANT USAGE ON SCHEMA other TO {role}",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON other.sessions TO {role}",
        "ALTER ROLE {role} SET search_path = other, public",
    ]
    async with database_role(fresh_database, *grants) as url:
        with caplog.at_level(logging.WARNING):
            async with started(Settings(database_url=url)) as (_, client):
                response = await client.get("/readyz")
    body = assert_problem(response, 503)
    assert body["checks"] == {"database": "ok", "schema": "at head", "search_path": "mixed"}
    assert "in several schemas (other, public)" in body["detail"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        "the search_path finds the service's tables in several schemas (other, public) (see "
        "README, Roles): requests would use the wrong ones"
    ]


async def test_readyz_fails_while_the_role_lacks_a_privilege_and_says_which(
    fresh_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Ready, the replica would take traffic and answer 500s to the requests that need it.
    await asyncio.to_thread(migrate, fresh_database)
    grants = [*TABLE_GRANTS, "REVOKE INSERT ON sessions FROM {role}"]
    grants.append("REVOKE DELETE ON idempotency_keys FROM {role}")
    async with database_role(fresh_database, *grants) as url:
        with caplog.at_level(logging.WARNING, logger="service.ops"):
            async with started(Settings(database_url=url)) as (_, client):
                response = await client.get("/readyz")
                assert response.status_code == 503
                assert response.json()["checks"] == {
                    "database": "ok",
                    "schema": "at head",
                    "privileges": "missing",
                }
                detail = response.json()["detail"]
                assert "DELETE on idempotency_keys, INSERT on sessions" in detail

                conn = await asyncpg.connect(asyncpg_dsn(fresh_database))
                try:
                    role = make_url(url).username
                    await conn.execute(f'GRANT INSERT ON sessions TO "{role}"')
                    await conn.execute(f'GRANT DELETE ON idempotency_keys TO "{role}"')
                finally:
                    await conn.close()
                assert (await client.get("/readyz")).status_code == 200
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "the service's database role lacks DELETE on idempotency_keys, INSERT on sessions "
        "(see README, Roles)"
    ]


async def logged_500(
    database_url: str, body: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> str:
    """The text of the one error line that POST /sessions of `body` logs as a 500, traceback
    included."""
    with caplog.at_level(logging.ERROR, logger="service.errors"):
        async with started(Settings(database_url=database_url)) as (_, client):
            response = await client.post("/sessions", json=body)
    assert response.status_code == 500
    (logged,) = [record for record in caplog.records if record.name == "service.errors"]
    assert logged.exc_info is not None
    return logged.getMessage() + logging.Formatter().formatException(logged.exc_info)


async def test_a_database_error_logged_as_a_bug_leaves_out_the_statements_values(
    fresh_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A role that may not insert (a GRANT forgotten after a migration): a 500, whose log line's
    # traceback holds SQLAlchemy's message, which by default lists the statement's values, the
    # client's data.
    await asyncio.to_thread(migrate, fresh_database)
    reader = "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
    async with database_role(fresh_database, reader) as url:
        body = session_body(title="Confidential title", comments="A reviewer's note")
        logged_text = await logged_500(url, body, caplog)
    assert "permission denied for table sessions" in logged_text
    assert "Confidential" not in logged_text
    assert "reviewer" not in logged_text


async def test_a_database_error_logged_as_a_bug_leaves_out_the_row_its_detail_quotes(
    fresh_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A constraint the service does not know (a DBA's): PostgreSQL's DETAIL quotes the row.
    await asyncio.to_thread(migrate, fresh_database)
    conn = await asyncpg.connect(asyncpg_dsn(fresh_database))
    try:
        await conn.execute(
            "ALTER TABLE sessions ADD CONSTRAINT a_dbas CHECK (subtitle <> 'Refused subtitle')"
        )
    finally:
        await conn.close()
    body = session_body(subtitle="Refused subtitle", comments="A reviewer's note")
    logged_text = await logged_500(fresh_database, body, caplog)
    assert 'violates check constraint "a_dbas"' in logged_text
    assert "Refused subtitle" not in logged_text
    assert "reviewer" not in logged_text


async def test_a_driver_reason_logged_leaves_out_the_row_its_detail_and_hint_quote(
    database_url: str,
) -> None:
    # The reason a warning gives (a commit unconfirmed, a 503), whose error may be a deferred
    # constraint's or a trigger's at COMMIT.
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        with pytest.raises(asyncpg.RaiseError) as raised:
            await conn.execute(
                "DO $$ BEGIN RAISE EXCEPTION 'refused' "
                "USING DETAIL = 'Failing row contains (private)', HINT = 'private too'; END $$"
            )
    finally:
        await conn.close()
    assert "private" in str(raised.value)  # asyncpg's own message adds the DETAIL and the HINT
    assert driver_reason(raised.value) == "RaiseError: refused"


async def test_an_unmigrated_database_is_an_error_at_start_and_a_503_to_requests(
    fresh_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # `migrate` never run (or the database recreated under the service): every request that
    # reads the schema was a 500 with a traceback.
    with caplog.at_level(logging.WARNING):
        async with started(Settings(database_url=fresh_database)) as (_, client):
            responses = [
                await client.get("/sessions/1"),
                await client.get("/sessions"),
                await client.get("/sessions/changes"),
                await client.post("/sessions", json=session_body()),
            ]
    for response in responses:
        assert response.status_code == 503, response.text
        assert response.json()["type"] == "urn:sessions-service:problem:database-unavailable"
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert [record.getMessage() for record in errors] == [
        "the database schema is missing: run `sessions-service migrate`"
    ]
    assert all(record.exc_info is None for record in caplog.records)
    # The operator reads why, not only that, the database is unavailable.
    assert any('relation "sessions" does not exist' in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("encoding", ["LATIN1", "SQL_ASCII"])
async def test_a_database_not_in_utf8_is_an_error_at_start_and_not_ready(
    server_url: str, encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    # LATIN1 refuses most characters, SQL_ASCII counts a text's bytes against its limits: valid
    # requests would be 500s. (migrate refuses it too: tests/test_migrations.py.)
    url = await asyncio.to_thread(
        create_database, server_url, prefix="sessions_encoding", encoding=encoding
    )
    try:
        with caplog.at_level(logging.WARNING):
            async with started(Settings(database_url=url)) as (_, client):
                response = await client.get("/readyz")
        body = assert_problem(response, 503)
        assert body["checks"] == {"database": "ok", "encoding": encoding}
        assert f"encoding is {encoding}, not UTF8" in body["detail"]
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [
            f"the database's encoding is {encoding}, not UTF8 (see README, Migrations): texts it "
            "cannot hold would be 500s"
        ]
    finally:
        await asyncio.to_thread(drop_database, server_url, url)


async def test_ops_endpoints_stay_out_of_the_openapi_document(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = service
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert set(paths) == {
        "/sessions",
        "/sessions/changes",
        "/sessions/states",
        "/sessions/{session_id}",
    }
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status_code == 200


async def test_metrics_count_requests_by_route_template_and_status(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = service
    for session_id in (41, 42, 43):
        assert (await client.get(f"/sessions/{session_id}")).status_code == 404
    assert (await client.post("/sessions", json={"title": "no event"})).status_code == 422
    assert (await client.get("/no/such/path")).status_code == 404
    assert (await client.get("/healthz")).status_code == 200

    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    route = {"method": "GET", "route": "/sessions/{session_id}", "status": "404"}
    assert sample(text, "http_requests_total", **route) == 3
    assert sample(text, "http_request_duration_seconds_count", **route) == 3
    assert sample(text, "http_request_duration_seconds_sum", **route) > 0
    assert sample(text, "http_requests_total", method="POST", route="/sessions", status="422") == 1
    assert sample(text, "http_requests_total", method="GET", route="unmatched", status="404") == 1
    # Errors by their problem's type; answers that are no problem (the probe's, the scrape's) add
    # none.
    problems = {
        (found.labels["route"], found.labels["status"], found.labels["type"]): found.value
        for family in text_string_to_metric_families(text)
        for found in family.samples
        if found.name == "http_problems_total"
    }
    assert problems == {
        ("/sessions/{session_id}", "404", "about:blank"): 3,
        ("/sessions", "422", "urn:sessions-service:problem:validation-error"): 1,
        ("unmatched", "404", "about:blank"): 1,
    }
    # Never one time series per URL.
    assert "/sessions/41" not in text
    assert "/no/such/path" not in text


async def test_metrics_read_the_pool_when_scraped(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = service
    await client.get("/sessions/1")  # opens a connection and returns it to the pool
    text = (await client.get("/metrics")).text
    assert sample(text, "db_pool_size") == 20
    assert sample(text, "db_pool_checked_out") == 0
    assert sample(text, "db_pool_checked_in") == 1
    assert sample(text, "db_pool_overflow") == 0

    async with app.state.engine.connect() as held:
        await held.exec_driver_sql("SELECT 1")
        text = (await client.get("/metrics")).text
        assert sample(text, "db_pool_checked_out") == 1
        assert sample(text, "db_pool_checked_in") == 0


async def test_readyz_answers_while_every_pooled_connection_is_busy(database_url: str) -> None:
    # Busy is not unready: a probe waiting in the requests' pool would take every replica out
    # of the load balancer at once under load.
    settings = Settings(database_url=database_url, db_pool_size=1, readiness_timeout=1.0)
    async with started(settings) as (app, client), app.state.engine.connect() as held:
        await held.exec_driver_sql("SELECT 1")  # the pool's only connection, taken
        response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["database"] == "ok"


async def test_probes_at_once_share_one_connection_to_the_database(
    service: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    # /readyz is open to anyone, and each probe took a connection of its own: thirty at once
    # took thirty of the server's.
    app, client = service
    connects = 0

    def count(*_: object) -> None:
        nonlocal connects
        connects += 1

    event.listen(app.state.probe_engine.sync_engine, "connect", count)
    responses = await asyncio.gather(*(client.get("/readyz") for _ in range(30)))
    assert [response.status_code for response in responses] == [200] * 30
    assert connects < 5
    # Asked again once that answer is in: a later probe is not answered from the past.
    before = connects
    assert (await client.get("/readyz")).status_code == 200
    assert connects == before + 1


async def test_readyz_answers_head_as_get(service: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = service
    get, head = await client.get("/readyz"), await client.head("/readyz")
    assert get.status_code == head.status_code == 200
    assert head.content == b""


async def test_request_id_from_the_caller_is_echoed_and_logged(
    service: tuple[FastAPI, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    _, client = service
    caplog.set_level(logging.INFO, logger="service.access")
    response = await client.get("/sessions/7", headers={"X-Request-ID": "trace-7f3a:01"})
    assert response.headers["x-request-id"] == "trace-7f3a:01"
    (record,) = [r for r in caplog.records if r.name == "service.access"]
    assert record.request_id == "trace-7f3a:01"  # type: ignore[attr-defined]
    assert record.method == "GET"  # type: ignore[attr-defined]
    assert record.route == "/sessions/{session_id}"  # type: ignore[attr-defined]
    assert record.path == "/sessions/7"  # type: ignore[attr-defined]
    assert record.status == 404  # type: ignore[attr-defined]
    assert record.duration_ms > 0  # type: ignore[attr-defined]


async def test_an_error_s_access_line_names_its_problem_and_why_a_token_was_refused(
    service: tuple[FastAPI, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    # Why a client is refused, for the operator who is asked: the problem's type on every
    # error's line, and a 401's reason (the token's failing check, never the token).
    _, client = service
    caplog.set_level(logging.INFO, logger="service.access")
    expired = jwt.encode(
        {"sub": "7", "exp": int(time.time()) - 3600}, DEVELOPMENT_JWT_SECRET, algorithm="HS256"
    )
    await client.get("/sessions", headers={"Authorization": f"Bearer {expired}"})
    await client.get("/sessions", params={"limit": "many"})
    await client.get("/sessions", params={"limit": 1})
    await client.get("/sessions/7")
    lines = [r.__dict__ for r in caplog.records if r.name == "service.access"]
    assert [(line["status"], line.get("problem"), line.get("detail")) for line in lines] == [
        (401, "urn:sessions-service:problem:invalid-token", "The token has expired."),
        (422, "urn:sessions-service:problem:validation-error", None),
        (200, None, None),
        (404, "about:blank", None),
    ]
    assert expired not in caplog.text


async def test_a_problem_is_on_its_own_request_s_line_alone(
    service: tuple[FastAPI, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    # Two requests in one task, as an ASGI transport in a test (or an embedding app) runs them:
    # a 401, then one whose client goes away mid-body, answered 499 without a problem.
    app, client = service
    caplog.set_level(logging.INFO, logger="service.access")
    await client.get("/sessions", headers={"Authorization": "Bearer not-a-token"})
    messages: Iterator[Message] = iter(
        [
            {"type": "http.request", "body": b'{"title": ', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        pass

    scope = post_sessions_scope(
        {"content-length": "100", "authorization": client.headers["authorization"]}
    )
    await app(scope, receive, send)
    lines = [r.__dict__ for r in caplog.records if r.name == "service.access"]
    assert [(line["status"], line.get("problem")) for line in lines] == [
        (401, "urn:sessions-service:problem:invalid-token"),
        (499, None),
    ]


@pytest.mark.parametrize(
    "sent",
    [None, "", "x" * 129, "has space", 'quote"d', "new\nline", "ünïcode"],
    ids=["absent", "empty", "too long", "space", "quote", "newline", "non-ascii"],
)
async def test_request_id_absent_or_unsafe_is_replaced_by_a_new_one(
    service: tuple[FastAPI, httpx.AsyncClient], sent: str | None
) -> None:
    _, client = service
    headers = [] if sent is None else [(b"x-request-id", sent.encode())]
    first = await client.get("/healthz", headers=headers)
    second = await client.get("/healthz", headers=headers)
    for response in (first, second):
        assert re.fullmatch("[0-9a-f]{32}", response.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_problem_responses_carry_the_request_id_too(
    service: tuple[FastAPI, httpx.AsyncClient], database_url: str
) -> None:
    _, client = service
    response = await client.post("/sessions", json=session_body(event_id=0))
    assert response.status_code == 422
    assert response.headers["x-request-id"]

    from service.main import create_app

    app = create_app(Settings(database_url=database_url))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as boom_client:
        response = await boom_client.get("/boom", headers={"X-Request-ID": "bug-report-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "bug-report-1"


async def test_probe_access_lines_are_debug_unless_they_fail(
    service: tuple[FastAPI, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    _, client = service
    caplog.set_level(logging.DEBUG, logger="service.access")
    await client.get("/healthz")
    await client.get("/sessions/5")
    levels = {r.route: r.levelno for r in caplog.records if r.name == "service.access"}  # type: ignore[attr-defined]
    assert levels == {"/healthz": logging.DEBUG, "/sessions/{session_id}": logging.INFO}
