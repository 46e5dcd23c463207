"""Instances of ``tests/http_app.py`` in uvicorn subprocesses, with the faults a process can have.

Each :class:`App` runs ``python -m uvicorn http_app:app --app-dir tests`` on a free loopback port
with its own environment (the current environment, so ``PYTHONPATH`` reaches it, plus the
app's settings). Besides starting and stopping, a test can crash it (SIGKILL), freeze and thaw
it (SIGSTOP/SIGCONT), ask it to shut down (SIGTERM) and read its memory use from ``/proc``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from support.process import read_log, terminate
from support.redis_server import free_port

TESTS_DIR = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0

# Lines of a server log that mean a request or a background task blew up.
SERVER_ERROR_MARKERS = (
    "Exception in ASGI application",
    "Task exception was never retrieved",
    "Exception ignored",
    "Traceback (most recent call last)",
)


class AppServer:
    """``python -m uvicorn http_app:app --app-dir tests`` (or another ``module:app`` of
    ``tests/``) on a free loopback port."""

    graceful_shutdown = "2"  # uvicorn's --timeout-graceful-shutdown, seconds

    def __init__(
        self, name: str, env: Mapping[str, str], log_dir: Path, app: str = "http_app:app"
    ) -> None:
        self.name = name
        self.env = dict(env)
        self.app = app
        self.log_path = log_dir / f"app-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def spawn(self) -> None:
        self.port = free_port()
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            self.app,
            "--app-dir",
            str(TESTS_DIR),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--lifespan",
            "on",
            "--timeout-graceful-shutdown",
            self.graceful_shutdown,
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self) -> bool:
        """Poll ``/healthz`` until it answers; False if the process died (port taken?)."""
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"app {self.name} not ready in {READY_TIMEOUT}s:\n{self.log()}")

    def log(self) -> str:
        return read_log(self.log_path)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Terminate (then kill after 10 s); a no-op when not running."""
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, timeout=10)


def start_servers(servers: Sequence[AppServer]) -> None:
    """Start several servers in parallel; retry one whose port was taken meanwhile."""
    for server in servers:
        server.spawn()
    for server in servers:
        for attempt in range(3):
            if server.wait_ready():
                break
            if attempt == 2:
                raise AssertionError(f"app {server.name} did not start:\n{server.log()}")
            server.stop()
            server.spawn()


class App(AppServer):
    """One uvicorn process serving ``http_app:app``, with the faults a process can have."""

    graceful_shutdown = "3"

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path) -> None:
        super().__init__(name, {"INSTANCE": name, **env}, log_dir)
        self._stopped = False

    def __repr__(self) -> str:
        return f"<App {self.name} port={self.port} pid={self.pid_or_none}>"

    @property
    def pid_or_none(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"app {self.name} is not running"
        return self.proc.pid

    # -- faults ----------------------------------------------------------------------------

    def kill(self) -> None:
        """Crash (SIGKILL): no shutdown, no close, the lease is left to lapse."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets but does nothing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self._stopped = True

    def thaw(self) -> None:
        """SIGCONT."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self._stopped = False

    def terminate(self) -> None:
        """SIGTERM: uvicorn's (and the hub's) graceful shutdown."""
        assert self.proc is not None
        if self._stopped:
            self.thaw()
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit; its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Thaw if frozen, then terminate (then kill after 10 s)."""
        if self._stopped and self.alive():
            self.thaw()
        super().stop()

    # -- observation -----------------------------------------------------------------------

    def memory(self) -> dict[str, int]:
        """``VmRSS`` (resident now) and ``VmHWM`` (peak resident) in bytes, from ``/proc``."""
        out: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
        return out

    def log_since(self, mark: int) -> str:
        return self.log()[mark:]

    def errors(self, since: int = 0, *, allow: Iterable[str] = ()) -> list[str]:
        """Lines of the log (from offset ``since``) that mean something blew up."""
        text = self.log_since(since)
        allowed = tuple(allow)
        return [
            line
            for line in text.splitlines()
            if any(m in line for m in SERVER_ERROR_MARKERS) and not any(a in line for a in allowed)
        ]


@contextmanager
def serving(server: AppServer) -> Iterator[AppServer]:
    """Start ``server``, yield it, stop it; then fail if anything blew up server-side (a
    request whose answer looked right still fails the test)."""
    start_servers([server])
    try:
        yield server
    finally:
        server.stop()
    for marker in SERVER_ERROR_MARKERS:
        assert marker not in server.log(), server.log()[-4000:]


def start_apps(apps: list[App]) -> None:
    """Start several apps in parallel; retry one whose port was taken meanwhile."""
    start_servers(apps)


def decode_record(raw: object) -> dict[str, Any]:
    """What an app's generator recorded in its Redis hash (read with decode_responses), numbers
    as int."""
    assert isinstance(raw, dict)
    record: dict[str, Any] = {}
    for key, value in raw.items():
        assert isinstance(key, str) and isinstance(value, str)
        record[key] = int(value) if value.isdigit() else value
    return record
