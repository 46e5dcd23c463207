"""Real ``redis-server`` processes for tests.

Independent of ``fastapi_streamhub`` and of redis-py: it talks to the server
over plain sockets so it can be used to observe the library from outside.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from support.process import Started, read_log, terminate

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def free_cluster_port(avoid: Iterable[int] = ()) -> int:
    """A free port for a cluster node: at most 55535, with port + 10000 (its cluster bus) free,
    and neither of them among ``avoid`` (ports of nodes chosen but not started yet)."""
    taken = set(avoid)
    for _ in range(1000):
        port = random.randint(20000, 55535)
        if port in taken or port + 10000 in taken:
            continue
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


class RedisServerError(RuntimeError):
    pass


class RedisServer(Started):
    """One ``redis-server`` subprocess on a private loopback port and data dir.

    ``stop()``/``kill()`` keep the port and the data directory, so ``start()``
    afterwards (or ``restart()``) brings the same server back at the same URL,
    with its data if persistence was enabled (``appendonly=True``).
    ``close()`` stops it and deletes the data directory.
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        save: str = "",
        extra_args: Sequence[str] = (),
        executable: str = "redis-server",
        port: int | None = None,
        **config: str | int,
    ) -> None:
        """Extra server settings can be passed as ``extra_args`` (raw argv,
        e.g. ``["--maxmemory", "10mb"]``) or as keywords (``maxmemory="10mb"``,
        underscores become dashes)."""
        self._executable = executable
        self._args: list[str] = ["--save", save]
        if appendonly:
            self._args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            self._args += ["--appendonly", "no"]
        for key, value in config.items():
            self._args += [f"--{key.replace('_', '-')}", str(value)]
        self._args += list(extra_args)
        self._port: int | None = port
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING.

        The first start picks a free port; later starts reuse it.
        """
        if self.running:
            raise RedisServerError(f"redis-server already running on port {self._port}")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="streamhub-redis-"))
        if self._port is not None:
            self._spawn(self._port)
            return self
        # A port found free can be taken by someone else before redis binds it:
        # retry with another one a few times.
        for attempt in range(3):
            port = free_port()
            try:
                self._spawn(port)
            except RedisServerError:
                if attempt == 2:
                    raise
            else:
                self._port = port
                return self
        raise AssertionError("unreachable")

    def _spawn(self, port: int) -> None:
        assert self._dir is not None
        argv = [
            self._executable,
            "--port",
            str(port),
            "--bind",
            HOST,
            "--dir",
            str(self._dir),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--protected-mode",
            "no",
            *self._args,
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- starting: {' '.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
            )
        self._proc = proc
        self._paused = False
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                self._proc = None
                raise RedisServerError(
                    f"redis-server exited with code {proc.returncode} on port {port}:\n"
                    + self.log()
                )
            if _ping(port):
                # Make sure the answer came from our process and not from another
                # server that grabbed the port first.
                if f"process_id:{proc.pid}\r\n".encode() in self._info_server(port):
                    return
                self._reap(proc)
                self._proc = None
                raise RedisServerError(f"port {port} is taken by another redis-server")
            if time.monotonic() > deadline:
                self._reap(proc)
                self._proc = None
                raise RedisServerError(
                    f"redis-server on port {port} did not answer PING within "
                    f"{START_TIMEOUT:.0f}s:\n" + self.log()
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Graceful shutdown: SIGTERM, then SIGKILL if still alive after 5 s."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused:
                # A stopped process does not act on SIGTERM until continued.
                proc.send_signal(signal.SIGCONT)
            terminate(proc, timeout=STOP_TIMEOUT)
        self._proc = None
        self._paused = False

    def kill(self) -> None:
        """Crash the server (SIGKILL): no shutdown save, clients see a reset."""
        proc = self._proc
        if proc is None:
            return
        self._reap(proc)
        self._proc = None
        self._paused = False

    def restart(self) -> RedisServer:
        """``stop()`` then ``start()`` on the same port and data directory."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections hang instead of failing."""
        self._require_proc().send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Undo ``pause()`` (SIGCONT)."""
        self._require_proc().send_signal(signal.SIGCONT)
        self._paused = False

    def close(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @staticmethod
    def _reap(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        proc.wait()

    @staticmethod
    def _info_server(port: int) -> bytes:
        try:
            with socket.create_connection((HOST, port), timeout=1.0) as sock:
                sock.sendall(_encode_command(["INFO", "server"]))
                reply = _Reader(sock).read_reply()
        except (OSError, RedisServerError):
            return b""
        return reply if isinstance(reply, bytes) else b""

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise RedisServerError("redis-server is not running")
        return self._proc

    # -- introspection -----------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def pid(self) -> int:
        return self._require_proc().pid

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisServerError("redis-server has not been started")
        return self._port

    @property
    def host(self) -> str:
        return HOST

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def data_dir(self) -> Path:
        if self._dir is None:
            raise RedisServerError("redis-server has no data directory (not started)")
        return self._dir

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def log(self) -> str:
        return read_log(self.log_path)

    def ping(self) -> bool:
        """Whether the server answers PING right now (within 0.5 s)."""
        return self._port is not None and _ping(self._port)

    def execute(self, *args: str | bytes | int, timeout: float = 5.0) -> object:
        """Run one command over a fresh raw connection and return the decoded reply.

        Replies: simple/bulk strings as ``bytes`` (``None`` for nil), integers as
        ``int``, arrays as ``list``; an error reply raises ``RedisServerError``.
        """
        with socket.create_connection((HOST, self.port), timeout=timeout) as sock:
            sock.sendall(_encode_command(args))
            reader = _Reader(sock)
            return reader.read_reply()

    def command_stats(self) -> dict[str, int]:
        """``INFO commandstats`` as ``{command: calls}``, command names lowercase.

        Subcommands appear as ``"client|setinfo"``. The ``INFO`` calls made by
        this method are themselves counted (from the next call on), and so is a
        redis-py client's connection handshake (``hello``, ``client|setinfo``):
        compare two snapshots rather than absolute numbers.
        """
        reply = self.execute("INFO", "commandstats")
        assert isinstance(reply, bytes)
        stats: dict[str, int] = {}
        for line in reply.decode().splitlines():
            if not line.startswith("cmdstat_"):
                continue
            name, _, fields = line[len("cmdstat_") :].partition(":")
            for field in fields.split(","):
                key, _, value = field.partition("=")
                if key == "calls":
                    stats[name.lower()] = int(value)
                    break
        return stats

    def total_commands(self, *, exclude: Iterable[str] = ()) -> int:
        """Sum of calls over all commands, minus the ones named in ``exclude``."""
        skip = {name.lower() for name in exclude}
        return sum(calls for name, calls in self.command_stats().items() if name not in skip)

    def reset_stats(self) -> None:
        """``CONFIG RESETSTAT``: zero the command counters.

        The reset itself is counted afterwards: ``{"config|resetstat": 1}``.
        """
        self.execute("CONFIG", "RESETSTAT")

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        if self._paused:
            state = "paused"
        return f"<RedisServer port={self._port} {state} pid={getattr(self._proc, 'pid', None)}>"


# -- minimal RESP client ---------------------------------------------------------


def _ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _encode_command(args: Sequence[str | bytes | int]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise RedisServerError("connection closed by redis-server")
        self._buf += chunk

    def _line(self) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self._buf[:end])
        del self._buf[: end + 2]
        return line

    def _exact(self, n: int) -> bytes:
        while len(self._buf) < n + 2:
            self._fill()
        data = bytes(self._buf[:n])
        del self._buf[: n + 2]
        return data

    def read_reply(self) -> object:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisServerError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise RedisServerError(f"unexpected reply from redis-server: {line!r}")


__all__ = ["RedisServer", "RedisServerError", "free_cluster_port", "free_port"]
