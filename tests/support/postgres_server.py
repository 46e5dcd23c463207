"""Real PostgreSQL servers for tests: ``initdb`` into a temporary folder, started on a free
loopback port with ``pg_ctl`` (never the machine's own service), stoppable, restartable on the
same port and data, and freezable (SIGSTOP of every server process); a streaming standby of a
server (``pg_basebackup -R``), promotable; a crash of every process (SIGKILL).

``initdb`` refuses to run as root: as root, the binaries run as the ``postgres`` user
(``runuser``) in a folder that user owns. ``fsync=off``: the tests need no durability against
a machine crash, only against a server crash, which PostgreSQL gives without fsync.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from support.process import Started, read_log
from support.redis_server import HOST, free_port

START_TIMEOUT = 30.0


def bindir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        path = Path(out.stdout.strip())
        if (path / "initdb").exists():
            return path
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class PostgresServer(Started):
    """One private PostgreSQL server; ``url`` connects as the superuser ``postgres``."""

    def __init__(self, *, fsync: bool = False) -> None:
        found = bindir()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
        self.bin = found
        self.host = HOST
        self.port = free_port()
        self.fsync = fsync
        self.dir = Path(tempfile.mkdtemp(prefix="streamhub-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._root = os.geteuid() == 0
        self.paused = False
        self._initialised = False

    @property
    def url(self) -> str:
        return self.url_of("postgres")

    def url_of(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@{HOST}:{self.port}/{database}"

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self._root else list(args)

    def _run(self, *args: str) -> None:
        out = subprocess.run(self._cmd(*args), capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed: {out.stdout}{out.stderr}\n{read_log(self.log)}"
            )

    def start(self) -> PostgresServer:
        if not self._initialised:
            if self._root:
                shutil.chown(self.dir, "postgres")
            self._run(
                str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                "--no-sync", "-E", "UTF8",
            )  # fmt: skip
            self._initialised = True
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses={HOST} "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=300"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(int(START_TIMEOUT)), "-o", options, "start",
        )  # fmt: skip
        self.paused = False
        return self

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def pids(self) -> list[int]:
        """The postmaster and every process it started."""
        try:
            main = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        out = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True)
        return [main, *(int(p) for p in out.stdout.split())]

    def stop(self, mode: str = "fast") -> None:
        """``fast`` (clean) or ``immediate`` (as a crash: no shutdown checkpoint)."""
        if self.paused:
            self.resume()
        if self.running:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "immediate") -> None:
        self.stop(mode)
        self.start()

    def standby(self, *, via_port: int | None = None) -> PostgresServer:
        """A streaming standby of this running server, not started yet: ``pg_basebackup -R``,
        its replication connection to ``via_port`` (a fault proxy) or straight here.
        Asynchronous: nothing names it in ``synchronous_standby_names``."""
        standby = PostgresServer(fsync=self.fsync)
        if standby._root:
            shutil.chown(standby.dir, "postgres")
        standby._run(
            str(self.bin / "pg_basebackup"), "-D", str(standby.data), "-R", "-X", "stream",
            "-c", "fast", "--no-sync", "-h", HOST, "-p", str(via_port or self.port),
            "-U", "postgres",
        )  # fmt: skip
        standby._initialised = True
        return standby

    def promote(self) -> None:
        """End a standby's recovery: it becomes a primary (read-write)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "promote")

    def kill(self) -> None:
        """SIGKILL every server process at once, as a machine crash would stop them."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.01)
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        self.paused = False

    def pause(self) -> None:
        """Freeze every server process (connections stay open and answer nothing)."""
        for pid in self.pids():
            os.kill(pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGCONT)
        self.paused = False

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def execute(
        self, sql: str, params: tuple[object, ...] = (), database: str = "postgres"
    ) -> list[tuple[object, ...]]:
        """One statement in autocommit; its rows (empty for a statement without a result)."""
        with psycopg.connect(self.url_of(database), autocommit=True) as conn:
            cur = conn.execute(sql.encode(), params)
            return list(cur.fetchall()) if cur.description else []

    def reset(self) -> None:
        """An empty ``public`` schema, and no connection of an earlier test left."""
        self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            left = self.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
            if left[0][0] == 0:
                break
            time.sleep(0.01)
        self.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
