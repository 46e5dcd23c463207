"""A private ``redis-server`` for the benchmarks, and command counting.

The server runs on a random loopback port with persistence off (``--save "" --appendonly no``)
in a temporary directory that is removed on exit.

Counting: ``INFO commandstats`` counts **every** command executed, including the ones a Lua
script runs with ``redis.call`` (measured on Redis 7.0: ``EVAL "redis.call('PING')" 0`` adds one
call to both ``eval`` and ``ping``, and ``total_commands_processed`` grows by 2). To also report
the top-level (network) calls, :class:`CommandWindow` runs ``MONITOR`` on a side connection:
Redis 7 tags commands run by scripts with client type ``lua`` there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

HOST = "127.0.0.1"
# Our own bookkeeping commands, never counted.
_OWN = frozenset({"info", "echo", "monitor", "config|resetstat"})


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BenchRedis:
    """``redis-server`` on a free loopback port, persistence off; a context manager."""

    def __init__(self, executable: str = "redis-server", *extra: str) -> None:
        self.executable = executable
        self.extra = list(extra)  # more server arguments (cluster mode, ...)
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._admin: redis.Redis | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def admin(self) -> redis.Redis:
        """A synchronous client for bookkeeping (INFO, FLUSHALL)."""
        if self._admin is None:
            self._admin = redis.Redis(host=HOST, port=self.port, protocol=2)
        return self._admin

    def start(self) -> BenchRedis:
        self._dir = Path(tempfile.mkdtemp(prefix="streamhub-bench-"))
        cluster = "--cluster-enabled" in self.extra
        for _attempt in range(3):
            # A cluster node's bus listens on port + 10000, so its port is at most 55535.
            self.port = free_port()
            while cluster and (self.port > 55535 or not _bindable(self.port + 10000)):
                self.port = free_port()
            argv = [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
                *self.extra,
            ]
            log = open(self._dir / "redis.log", "ab")  # noqa: SIM115 - the child keeps it
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
            log.close()
            if self._wait_ready():
                return self
            self._reap()
        raise RuntimeError("could not start redis-server on a free port")

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                client = redis.Redis(host=HOST, port=self.port, protocol=2, socket_timeout=1)
                info = client.info("server")
                client.close()
            except redis.ConnectionError:
                time.sleep(0.02)
                continue
            return bool(info.get("process_id") == self._proc.pid)
        return False

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        self._reap()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> BenchRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- introspection ---------------------------------------------------------------------

    def version(self) -> str:
        return str(self.admin.info("server")["redis_version"])

    def command_stats(self) -> Counter[str]:
        """``INFO commandstats`` as calls per lower-case command name (``client|setinfo``)."""
        stats: Counter[str] = Counter()
        for key, value in self.admin.info("commandstats").items():
            name = str(key).removeprefix("cmdstat_").lower()
            stats[name] = int(value["calls"])
        return stats

    def flush(self) -> None:
        self.admin.flushall()

    def window(self, *, monitor: bool = True) -> CommandWindow:
        """Count the commands executed between ``__enter__`` and ``__exit__``."""
        return CommandWindow(self, monitor=monitor)


@dataclass
class CommandCounts:
    """What ran in a window: ``total`` from commandstats, ``script`` run inside Lua (MONITOR)."""

    total: Counter[str] = field(default_factory=Counter)
    script: Counter[str] = field(default_factory=Counter)
    monitored: bool = False
    seconds: float = 0.0

    @property
    def n_total(self) -> int:
        return sum(self.total.values())

    @property
    def n_script(self) -> int:
        return sum(self.script.values())

    @property
    def n_top_level(self) -> int:
        return self.n_total - self.n_script

    @property
    def top_level(self) -> Counter[str]:
        out = Counter(self.total)
        out.subtract(self.script)
        return +out

    def describe(self) -> str:
        """``evalsha 3 (hmget 3, time 3, ...)``-style summary."""
        parts = []
        for name, n in self.top_level.most_common():
            parts.append(f"{name} {n}")
        inner = ", ".join(f"{name} {n}" for name, n in self.script.most_common())
        text = ", ".join(parts) or "none"
        return f"{text}; inside scripts: {inner or 'none'}"


class CommandWindow:
    """Context manager: commandstats delta, plus MONITOR to tell script-internal calls apart.

    MONITOR output is in execution order; unique ``ECHO`` markers delimit the window exactly.
    """

    def __init__(self, server: BenchRedis, *, monitor: bool) -> None:
        self._server = server
        self._monitor = monitor
        self._token = uuid.uuid4().hex
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._script: Counter[str] = Counter()
        self._mon_conn: Any = None
        self._before: Counter[str] = Counter()
        self._t0 = 0.0
        self.counts = CommandCounts()

    def __enter__(self) -> CommandWindow:
        if self._monitor:
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
            if not self._started.wait(5):
                raise RuntimeError("MONITOR did not start")
        self._server.admin.echo(f"bench-start-{self._token}")
        self._before = self._server.command_stats()
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        seconds = time.perf_counter() - self._t0
        after = self._server.command_stats()
        self._server.admin.echo(f"bench-end-{self._token}")
        total = Counter(after)
        total.subtract(self._before)
        for name in _OWN:
            total.pop(name, None)
        self.counts = CommandCounts(total=+total, seconds=seconds)
        if self._thread is not None:
            self._thread.join(10)
            if self._thread.is_alive():
                raise RuntimeError("MONITOR did not see the end marker")
            self.counts.script = +self._script
            self.counts.monitored = True

    def _watch(self) -> None:
        client: Any = redis.Redis(host=HOST, port=self._server.port, protocol=2)
        try:
            with client.monitor() as mon:
                self._started.set()
                counting = False
                for entry in mon.listen():
                    command = str(entry.get("command", ""))
                    if command == f"ECHO bench-start-{self._token}":
                        counting = True
                    elif command == f"ECHO bench-end-{self._token}":
                        return
                    elif counting and entry.get("client_type") == "lua":
                        self._script[command.split(" ", 1)[0].lower()] += 1
        finally:
            client.close()
