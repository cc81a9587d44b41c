"""A Python client generated from the committed openapi.json by openapi-python-client, used against
a live server on 127.0.0.1: the spec is proven by code nobody here wrote."""

import importlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest

from service.openapi import SPEC_PATH
from tests.conftest import (
    ADMIN_ID,
    TEST_JWT_SECRET,
    etag_of,
    migrated_database,
    token_for,
)
from tests.processes import free_port, stopped, wait_until_serving
from tests.test_changes import CATCH_UP_SECONDS

PACKAGE = "sessions_client"
UVICORN = [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1"]
OPERATIONS = ["create_session", "get_session", "head_session", "list_sessions"]
OPERATIONS += ["update_session", "delete_session", "list_session_changes"]


@pytest.fixture(scope="module")
def live_server(server_url: str) -> Iterator[str]:
    """The service under uvicorn on a free port of 127.0.0.1, on a database of its own."""
    with (
        migrated_database(server_url, prefix="sessions_client") as database_url,
        # A file, not a pipe nobody reads until the end: a full pipe would stop the server.
        tempfile.TemporaryFile() as log,
    ):
        port = free_port()
        process = subprocess.Popen(
            [*UVICORN, "--port", str(port)],
            env=os.environ | {"DATABASE_URL": database_url, "JWT_SECRET": TEST_JWT_SECRET},
            cwd=SPEC_PATH.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(f"{base_url}/openapi.json", process)
            yield base_url
        finally:
            stopped(process)
        log.seek(0)
        output = log.read()
    # uvicorn re-raises the SIGTERM it handled once it has drained: that is a clean stop.
    assert process.returncode in {0, -signal.SIGTERM}, output.decode()


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModuleType]]:
    """The client package, generated from the committed spec into a temporary directory."""
    root = tmp_path_factory.mktemp("generated")
    config = root / "config.yaml"
    # No post hooks: formatting the generated code is not what this test is about.
    config.write_text(f"package_name_override: {PACKAGE}\npost_hooks: []\n")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "openapi_python_client", "generate"),
            *("--path", str(SPEC_PATH), "--config", str(config)),
            *("--meta", "none", "--output-path", str(root / PACKAGE)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # A warning means part of the spec could not be turned into typed code.
    assert "warning" not in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
    sys.path.insert(0, str(root))
    try:
        names = ["client", "models", "types", *(f"api.sessions.{name}" for name in OPERATIONS)]
        yield {name: importlib.import_module(f"{PACKAGE}.{name}") for name in names}
    finally:
        sys.path.remove(str(root))
        for name in [name for name in sys.modules if name.partition(".")[0] == PACKAGE]:
            del sys.modules[name]


def test_generated_client_creates_reads_lists_patches_and_deletes(
    generated: dict[str, ModuleType], live_server: str
) -> None:
    models: Any = generated["models"]
    api: dict[str, Any] = {name.rpartition(".")[2]: module for name, module in generated.items()}
    client = generated["client"].AuthenticatedClient(
        base_url=live_server, token=token_for(ADMIN_ID, admin=True), raise_on_unexpected_status=True
    )

    starts_at = datetime(2027, 5, 4, 10, tzinfo=timezone(timedelta(hours=2)))
    response = api["create_session"].sync_detailed(
        client=client,
        body=models.SessionCreate(
            event_id=7,
            title="Generated clients",
            starts_at=starts_at,
            level=models.AudienceLevel.EXPERT,
        ),
    )
    assert response.status_code == 201
    created = response.parsed
    assert isinstance(created, models.SessionRead)
    assert response.headers["location"] == f"/sessions/{created.id}"
    for stamp in (created.created_at, created.last_modified_at, created.starts_at):
        assert isinstance(stamp, datetime)
        assert stamp.utcoffset() == timedelta(0)
    assert created.starts_at == starts_at
    assert created.level == models.AudienceLevel.EXPERT
    assert created.state == models.State.DRAFT
    assert created.version == 1

    read = api["get_session"].sync_detailed(session_id=created.id, client=client)
    assert read.parsed.to_dict() == created.to_dict()
    etag = read.headers["etag"]
    assert etag == response.headers["etag"] == etag_of(created.to_dict())
    head = api["head_session"].sync_detailed(session_id=created.id, client=client)
    assert (head.status_code, head.headers["etag"], head.content) == (200, etag, b"")
    not_modified = api["get_session"].sync_detailed(
        session_id=created.id, client=client, if_none_match=etag
    )
    assert (not_modified.status_code, not_modified.parsed) == (304, None)

    page = api["list_sessions"].sync(client=client, event_id=7, limit=10)
    assert isinstance(page, models.SessionPage)
    assert [item.id for item in page.items] == [created.id]
    assert page.next_cursor is None

    patched = api["update_session"].sync(
        session_id=created.id,
        client=client,
        body=models.SessionUpdate(title="Renamed", starts_at=None),
        if_match=etag,
    )
    assert isinstance(patched, models.SessionRead)
    assert (patched.title, patched.starts_at, patched.version) == ("Renamed", None, 2)
    assert patched.last_modified_at > created.last_modified_at
    assert patched.created_at == created.created_at
    assert patched.last_modified_at.tzinfo is not None
    assert patched.last_modified_at <= datetime.now(UTC)

    # The ETag read before the change is stale now: the precondition fails, nothing changes.
    stale = api["update_session"].sync_detailed(
        session_id=created.id,
        client=client,
        body=models.SessionUpdate(title="Lost update"),
        if_match=etag,
    )
    assert stale.status_code == 412
    assert isinstance(stale.parsed, models.Problem)
    assert stale.headers["etag"] == etag_of(patched.to_dict())

    invalid = api["update_session"].sync(
        session_id=created.id, client=client, body=models.SessionUpdate(title="")
    )
    assert isinstance(invalid, models.ValidationProblem)
    assert invalid.errors[0].location == ["body", "title"]

    deleted = api["delete_session"].sync_detailed(
        session_id=created.id, client=client, if_match=etag_of(patched.to_dict())
    )
    assert deleted.status_code == 204
    gone = api["get_session"].sync(session_id=created.id, client=client)
    assert isinstance(gone, models.Problem)
    assert gone.status == 404

    # The feed serves a change once no older transaction is still open on the server (other
    # tests' included): poll as a client does, from the token of the previous poll.
    changes: list[Any] = []
    token = generated["types"].UNSET  # the first poll sends no token
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while not changes and time.monotonic() < deadline:
        feed = api["list_session_changes"].sync(client=client, event_id=7, since=token)
        assert isinstance(feed, models.ChangesPage)
        changes, token = feed.items, feed.next_token
        time.sleep(0 if changes else 0.1)
    (tombstone,) = changes
    assert isinstance(tombstone, models.SessionTombstone)
    assert (tombstone.id, tombstone.version, tombstone.deleted) == (created.id, 3, True)
    assert tombstone.deleted_at.tzinfo is not None


def test_generated_client_retries_a_creation_with_its_idempotency_key(
    generated: dict[str, ModuleType], live_server: str
) -> None:
    models: Any = generated["models"]
    create: Any = generated["api.sessions.create_session"]
    client = generated["client"].AuthenticatedClient(
        base_url=live_server, token=token_for("speaker-9"), raise_on_unexpected_status=True
    )
    key = f'"{uuid.uuid4()}"'
    body = models.SessionCreate(event_id=8, title="Sent twice")
    first, retry = (
        create.sync_detailed(client=client, body=body, idempotency_key=key) for _ in range(2)
    )
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.parsed.to_dict() == first.parsed.to_dict()
    assert retry.headers["location"] == first.headers["location"]
    page = generated["api.sessions.list_sessions"].sync(client=client, event_id=8)
    assert [item.id for item in page.items] == [first.parsed.id]


def test_generated_client_reads_anonymously_and_types_a_403s_rule(
    generated: dict[str, ModuleType], live_server: str
) -> None:
    models: Any = generated["models"]
    api: dict[str, Any] = {name.rpartition(".")[2]: module for name, module in generated.items()}
    organizer = generated["client"].AuthenticatedClient(
        base_url=live_server, token=token_for(ADMIN_ID, admin=True)
    )
    body = models.SessionCreate(event_id=9, title="Public", state=models.State.ACCEPTED)
    public = api["create_session"].sync(client=organizer, body=body)
    # The generator types reads for an AuthenticatedClient (it reads the optional token as a
    # required one); a plain Client, with no Authorization header at all, works (README).
    anonymous = generated["client"].Client(base_url=live_server)
    read = api["get_session"].sync(session_id=public.id, client=anonymous)
    assert read.to_dict() == public.to_dict()
    page = api["list_sessions"].sync(client=anonymous, event_id=9)
    assert [item.id for item in page.items] == [public.id]
    # A speaker may not accept a session: the 403's members are typed (the spec's Problem).
    speaker = generated["client"].AuthenticatedClient(
        base_url=live_server, token=token_for("speaker-10")
    )
    draft = api["create_session"].sync(
        client=speaker, body=models.SessionCreate(event_id=9, title="Mine")
    )
    refused = api["update_session"].sync_detailed(
        session_id=draft.id, client=speaker, body=models.SessionUpdate(state=models.State.ACCEPTED)
    )
    assert refused.status_code == 403
    assert isinstance(refused.parsed, models.Problem)
    assert refused.parsed.rule == models.ProblemRule.SPEAKER_TRANSITIONS
    assert (refused.parsed.from_state, refused.parsed.to_state) == ("draft", "accepted")
