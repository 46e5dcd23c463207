"""A real Redis Cluster on loopback ports, built from ``tests/support/redis_server.py`` servers.

``Cluster(primaries=3, replicas=0).start()`` starts ``primaries * (1 + replicas)`` servers with
``--cluster-enabled yes`` and joins them with ``redis-cli --cluster create``; it returns once
every node reports ``cluster_state:ok`` and agrees on who serves every slot. Tests can then move
a slot (:meth:`migrate_slot`), fail a primary over to its replica (:meth:`failover`), or kill a
node (``node.kill()``).
"""

from __future__ import annotations

import subprocess
import time
from typing import Any, cast

from support.process import Started
from support.redis_server import HOST, RedisServer, RedisServerError, free_cluster_port

READY_TIMEOUT = 30.0


class Cluster(Started):
    """``primaries`` shards of one primary and ``replicas`` replicas each."""

    def __init__(self, primaries: int = 3, replicas: int = 0, **config: str | int) -> None:
        self.primaries = primaries
        self.replicas = replicas
        self.nodes = [
            RedisServer(
                cluster_enabled="yes",
                cluster_config_file="nodes.conf",
                cluster_node_timeout=1000,
                # A replica may take over however far behind it is (the failover tests want it).
                cluster_replica_validity_factor=0,
                repl_diskless_sync_delay=0,  # replicas sync at once (default: wait 5 s)
                **cast("dict[str, Any]", config),
            )
            for _ in range(primaries * (1 + replicas))
        ]

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Cluster:
        used: list[int] = []
        for node in self.nodes:
            # A port (or its bus port, +10000) can be taken between choosing and binding it:
            # choose again.
            for attempt in range(3):
                node._port = free_cluster_port(used)
                try:
                    node.start()
                    break
                except RedisServerError:
                    if attempt == 2:
                        raise
            used += [node.port, node.port + 10000]
        argv = [
            "redis-cli",
            "--cluster",
            "create",
            *(f"{HOST}:{node.port}" for node in self.nodes),
            "--cluster-replicas",
            str(self.replicas),
            "--cluster-yes",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RedisServerError(
                f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}"
            )
        self.wait_ready()
        return self

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    # -- introspection -----------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL naming every primary at start."""
        return "redis+cluster://" + ",".join(f"{HOST}:{n.port}" for n in self.nodes)

    def running_nodes(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.running]

    def slots(self) -> dict[int, tuple[int, list[int]]]:
        """Per slot range start: (range end, [primary port, replica ports...]), from a live node."""
        for node in self.running_nodes():
            try:
                reply = node.execute("CLUSTER", "SLOTS")
            except (OSError, RedisServerError):
                continue
            assert isinstance(reply, list)
            return {int(r[0]): (int(r[1]), [int(n[1]) for n in r[2:]]) for r in reply}
        raise RedisServerError("no cluster node answers")

    def owner(self, slot: int) -> RedisServer:
        """The node serving ``slot`` as primary."""
        for start, (end, ports) in self.slots().items():
            if start <= slot <= end:
                return self.by_port(ports[0])
        raise RedisServerError(f"slot {slot} is not served")

    def by_port(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def node_id(self, node: RedisServer) -> str:
        reply = node.execute("CLUSTER", "MYID")
        assert isinstance(reply, bytes)
        return reply.decode()

    def replica_of(self, primary: RedisServer) -> RedisServer:
        primary_id = self.node_id(primary)
        for node in self.running_nodes():
            info = node.execute("INFO", "replication")
            assert isinstance(info, bytes)
            if b"role:slave" in info and self._master_id(node) == primary_id:
                return node
        raise RedisServerError(f"primary on port {primary.port} has no replica")

    def _master_id(self, node: RedisServer) -> str:
        reply = node.execute("CLUSTER", "NODES")
        assert isinstance(reply, bytes)
        for line in reply.decode().splitlines():
            parts = line.split()
            if "myself" in parts[2]:
                return parts[3]
        return "-"

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until every running node says ``cluster_state:ok``, they agree on the slot map and
        every replica is in sync with its primary."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = [n.execute("CLUSTER", "INFO") for n in self.running_nodes()]
                maps = {repr(sorted(self._slot_map(n))) for n in self.running_nodes()}
                links = [n.execute("INFO", "replication") for n in self.running_nodes()]
                synced = all(
                    b"role:master" in r or b"master_link_status:up" in r  # type: ignore[operator]
                    for r in links
                )
                if all(b"cluster_state:ok" in s for s in states) and len(maps) == 1 and synced:  # type: ignore[operator]
                    return
            except (OSError, RedisServerError):
                pass
            if time.monotonic() > deadline:
                raise RedisServerError("the cluster did not become ready")
            time.sleep(0.05)

    @staticmethod
    def _slot_map(node: RedisServer) -> list[tuple[int, int, int]]:
        reply = node.execute("CLUSTER", "SLOTS")
        assert isinstance(reply, list)
        return [(int(r[0]), int(r[1]), int(r[2][1])) for r in reply]

    # -- topology changes ----------------------------------------------------

    def migrate_slot(self, slot: int, target: RedisServer, *, step_keys: int = 1) -> int:
        """Move ``slot`` (and its keys, ``step_keys`` per MIGRATE) to ``target`` the way
        ``redis-cli --cluster reshard`` does; returns how many keys moved."""
        source = self.owner(slot)
        if source is target:
            raise RedisServerError(f"slot {slot} is already on port {target.port}")
        source_id, target_id = self.node_id(source), self.node_id(target)
        target.execute("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.execute("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        while True:
            keys = source.execute("CLUSTER", "GETKEYSINSLOT", slot, step_keys)
            assert isinstance(keys, list)
            if not keys:
                break
            source.execute("MIGRATE", HOST, target.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
        for node in self.running_nodes():
            if b"role:master" in node.execute("INFO", "replication"):  # type: ignore[operator]
                node.execute("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        self.wait_ready()
        return moved

    def failover(self, primary: RedisServer) -> RedisServer:
        """``CLUSTER FAILOVER`` on ``primary``'s replica; returns the new primary."""
        replica = self.replica_of(primary)
        replica.execute("CLUSTER", "FAILOVER")
        deadline = time.monotonic() + READY_TIMEOUT
        while b"role:master" not in replica.execute("INFO", "replication"):  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RedisServerError("the replica did not take over")
            time.sleep(0.05)
        self.wait_ready()
        return replica
