"""`sessions-service serve` in a process of its own on 127.0.0.1, as deployed."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, Self, TypeVar

import httpx
import orjson

from tests.conftest import TEST_JWT_SECRET

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def eventually(find: Callable[[], list[T]], timeout: float = 10) -> T:
    """The one item `find` finds, once it is there: a served request's access line (and span,
    where it is traced) is written after its response is sent, so its client may look first."""
    deadline = time.monotonic() + timeout
    while not (found := find()) and time.monotonic() < deadline:
        time.sleep(0.02)
    (item,) = found
    return item


def wait_until_serving(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the service exited before serving"
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"nothing served {url} within {timeout} s")


def stopped(process: subprocess.Popen[bytes], timeout: float = 30) -> bytes:
    """SIGTERM, then the process's output (where it is a pipe) once it has exited; killed if it
    has not within `timeout`, so that a failed test never leaves it running."""
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"still running {timeout} s after SIGTERM: {output!r}") from None
    return output or b""


SERVE = [sys.executable, "-m", "service", "serve"]


class ServiceProcess:
    def __init__(
        self, database_url: str, *, command: Sequence[str] = SERVE, **environment: str
    ) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # A file, not a pipe: a full pipe would block the service's logging, and so the service.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        # Elsewhere than the checkout, whose .env (if a developer keeps one) it would read.
        self.directory = tempfile.TemporaryDirectory()
        env = {
            k: v
            for k, v in os.environ.items()
            if k != "TEST_DATABASE_URL" and not k.startswith("JWT_")
        }
        # The tests' secret, so that conftest's ADMIN_HEADERS sign in.
        env |= {"DATABASE_URL": database_url, "PORT": str(self.port), "JWT_SECRET": TEST_JWT_SECRET}
        env |= environment
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=self.directory.name,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_until_ready(self, timeout: float = 60) -> Self:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the service exited:\n{self.output()}"
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.base_url} was not ready within {timeout} s:\n{self.output()}")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        self.directory.cleanup()

    def output(self) -> str:
        # Read at an offset (pread), leaving the file's position alone: the service writes at the
        # same position, which this process shares with it (one open file). A seek(0) here
        # made the service's next line overwrite the log's first while it was read.
        size = os.fstat(self.log.fileno()).st_size
        return os.pread(self.log.fileno(), size, 0).decode(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """Every line the service wrote, each parsed as JSON (failing on any that is not); not
        one it is still writing."""
        written, _, _ = self.output().rpartition("\n")
        return [orjson.loads(line) for line in written.splitlines() if line.strip()]

    def access_line(self, request_id: str) -> dict[str, Any]:
        """The access log's line of the request, once written."""
        return eventually(
            lambda: [
                line
                for line in self.log_lines()
                if line["logger"] == "service.access" and line.get("request_id") == request_id
            ]
        )
