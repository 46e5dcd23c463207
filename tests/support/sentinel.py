"""Redis Sentinel processes on loopback, watching a primary started by ``tests/support/redis_server.py``."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from support.process import Started
from support.redis_server import HOST, RedisServer, RedisServerError, _ping, free_port

SERVICE = "streamhub"


class SentinelGroup(Started):
    """``count`` Sentinels (quorum 2) monitoring ``primary`` as service ``streamhub``."""

    def __init__(self, primary: RedisServer, *replicas: RedisServer, count: int = 3) -> None:
        self.primary = primary
        self.replicas = replicas
        self.count = count
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []
        self.dir = Path(tempfile.mkdtemp(prefix="streamhub-sentinel-"))

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"{HOST}:{p}" for p in self.ports) + f"/{SERVICE}"

    def start(self) -> SentinelGroup:
        for i in range(self.count):
            port = free_port()
            conf = self.dir / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind {HOST}\nprotected-mode no\ndir {self.dir}\n"
                f"sentinel monitor {SERVICE} {HOST} {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            log = open(self.dir / f"sentinel-{i}.log", "ab")  # noqa: SIM115 - closed in close()
            self.logs.append(log)
            self.procs.append(
                subprocess.Popen(
                    ["redis-server", str(conf), "--sentinel"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
            self.ports.append(port)
        deadline = time.monotonic() + 10
        while not all(_ping(p) for p in self.ports):
            if time.monotonic() > deadline:
                raise RedisServerError("sentinels did not start")
            time.sleep(0.05)
        # Until every sentinel knows the replicas and the other sentinels.
        while not all(self._ready(p) for p in self.ports):
            if time.monotonic() > deadline + 20:
                raise RedisServerError("sentinels did not discover each other")
            time.sleep(0.1)
        return self

    def _ready(self, port: int) -> bool:
        for replica in self.replicas:
            if b"master_link_status:up" not in replica.execute("INFO", "replication"):  # type: ignore[operator]
                return False
        info = _sentinel(port).execute("SENTINEL", "MASTER", SERVICE)
        assert isinstance(info, list)
        fields = dict(zip(info[::2], info[1::2], strict=True))
        return (
            int(fields[b"num-slaves"]) >= len(self.replicas)
            and int(fields[b"num-other-sentinels"]) >= self.count - 1
        )

    def primary_port(self) -> int:
        reply = _sentinel(self.ports[0]).execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        assert isinstance(reply, list)
        return int(reply[1])

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for log in self.logs:
            log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _sentinel(port: int) -> RedisServer:
    """A handle to run commands on a sentinel's port (the process is not ours to manage)."""
    return RedisServer(port=port)
