"""The README's ACL user is enough: every feature runs as a user with exactly that command list.

The ``ACL SETUSER`` block is read from README.md itself, so the documented list and what the
library sends (directly and inside its scripts) cannot drift apart unnoticed: a missing command
makes Redis answer ``NOPERM`` and the hub raise.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
from pathlib import Path

import anyio
import pytest
from support.conformance import RedisStore, until_compacted
from support.redis_server import RedisServer
from support.sse_client import wait_until

from fastapi_streamhub import Chunk, End, FinishedGeneration, State, StreamHub
from fastapi_streamhub.backends._ds import DsAppend, DsFork, DsOutcome, DsProducer, DsSpec

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

README = Path(__file__).resolve().parent.parent / "README.md"
PASSWORD = "s3cret-acl-test"


def documented_acl() -> list[str]:
    """The arguments of the README's ``ACL SETUSER`` command, with a real password."""
    block = re.search(r"```\n(ACL SETUSER .*?)```", README.read_text(), re.S)
    assert block is not None, "README.md has no ACL SETUSER block"
    args = shlex.split(block.group(1).replace("PASSWORD", PASSWORD))
    assert args[:2] == ["ACL", "SETUSER"]
    return args


async def test_every_feature_runs_as_the_documented_acl_user(
    fresh_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    fresh_redis.execute(*documented_acl())
    url = f"redis://streamhub:{PASSWORD}@127.0.0.1:{fresh_redis.port}/0"
    async with StreamHub.from_url(url) as hub_a, StreamHub.from_url(url) as hub_b:
        # Produce with metadata, follow live on another hub, steer, fan in.
        reg = await hub_a.register("acl", metadata={"model": "m"})
        assert reg.producer is not None
        owner = reg.producer
        items: list[object] = []

        async def follow() -> None:
            async for item in hub_b.subscribe("acl"):
                items.append(item)

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await owner.publish("a")
            await owner.set_metadata({"model": "m2"})
            receipt = await hub_b.send_message("acl", {"steer": 1})
            async for message in owner.messages():
                assert message.data == {"steer": 1} and message.id == receipt.id
                break
            helper = await hub_b.join(await owner.admit("helper"))
            await helper.publish("b")
            await helper.close()
            await owner.send("c")
            await owner.close()
        texts = [i.data for i in items if isinstance(i, Chunk)]
        assert texts == ["a", "b", "c"] and items[-1] == End(State.DONE)
        assert (await hub_b.snapshot("acl"))["text"] == "abc"

        # Compaction (in the background after the close), status, active.
        await until_compacted(RedisStore(url, fresh_redis), "acl")
        info = await hub_a.status("acl")
        assert info is not None and info.chunks == 3
        assert await hub_a.active(["acl"]) == []

        # Cancel, a lapsed lease noticed by a cancel, delete.
        other = (await hub_a.register("acl-2")).producer
        assert other is not None
        await other.publish("x")

        async def stop_when_cancelled() -> None:
            await other.cancelled.wait()
            await other.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_when_cancelled)
            assert await hub_b.cancel("acl-2", wait=5) is State.CANCELLED
        lapsed = (await hub_a.register("acl-3")).producer
        assert lapsed is not None
        hub_a._forget(lapsed)
        fresh_redis.execute("DEL", "streamhub:{acl-3}:lease")
        assert await hub_b.cancel("acl-3") is State.FAILED
        assert await hub_b.delete("acl") is True
        assert await hub_a.status("acl") is None

    # on_finish: the index, the claim, the settled mark, the sweep.
    finished: list[FinishedGeneration] = []
    async with StreamHub.from_url(url, on_finish=finished.append) as hub_c:
        reg = await hub_c.register("acl-4")
        assert reg.producer is not None
        await reg.producer.publish("y")
        await reg.producer.close()
        await hub_c.backend.expect_finish("acl-gone", 1)
        assert ("acl-gone", 1) in await hub_c.backend.unsettled(10, 0.0)
        # Superseded twice before their hooks ran: kept (the log renamed, then copied), each
        # settled (its kept fields and entries dropped).
        turns = []
        for i, turn in enumerate(("a", "b", "c")):
            producer = (await hub_c.register("acl-5", turn=turn)).producer
            assert producer is not None
            turns.append(producer)
            if i < 2:
                await producer.publish(f"turn {i}")
                await producer.flush()
        for producer in turns:
            assert producer is not None
            await producer.close()
    texts = sorted((f.session_id, f.text) for f in finished)
    assert texts == [("acl-4", "y"), ("acl-5", ""), ("acl-5", "turn 0"), ("acl-5", "turn 1")]
    assert fresh_redis.execute("EXISTS", "streamhub:{acl-5}:kept", "streamhub:{acl-5}:klog") == 0
    # Nothing refused on the way (a hook's settle that failed would only be logged).
    refused = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not refused, refused


async def test_durable_streams_run_as_the_documented_acl_user(
    fresh_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every Durable Streams operation, and each path its scripts take (the count's index, an
    idempotent producer, a fork and its release, a soft delete, an expired fork found by its
    soft-deleted source), as the README's ACL user: a command missing from the list is a
    ``NOPERM`` the backend raises."""
    fresh_redis.execute(*documented_acl())
    url = f"redis://streamhub:{PASSWORD}@127.0.0.1:{fresh_redis.port}/0"
    text = DsSpec("text/plain")
    async with StreamHub.from_url(url, ds_max_streams=3) as hub:
        ds = hub.backend
        created = await ds.ds_create("ds-a", text, b"hello ")
        assert created.outcome == "created"
        assert (await ds.ds_create("ds-a", text, b"")).outcome == "exists"
        producer = DsProducer("p", 0, 0)
        appended = await ds.ds_append("ds-a", DsAppend(b"world\n", "text/plain", "1", producer))
        assert appended.outcome is DsOutcome.APPENDED
        duplicate = await ds.ds_append("ds-a", DsAppend(b"world\n", "text/plain", "2", producer))
        assert duplicate.outcome is DsOutcome.DUPLICATE
        read = await ds.ds_read("ds-a", 6, 100, touch=True)
        assert read is not None and read[1] == b"world\n"
        # A fork (counted by its source), then one that expires soon.
        fork = await ds.ds_create("ds-f", DsSpec(""), b"!", DsFork("ds-a", 6))
        assert fork.outcome == "created"
        brief = DsSpec("text/plain", ttl=1)
        assert (await ds.ds_create("ds-b", brief, b"", DsFork("ds-a", None))).outcome == "created"
        # The limit: a fourth stream is refused.
        assert (await ds.ds_create("ds-c", text, b"")).outcome == "full"
        # Forks of it live: a soft delete; its fork is whole.
        assert await ds.ds_delete("ds-a") == "soft"
        forked = await ds.ds_read("ds-f", 0, 100, touch=False)
        assert forked is not None and forked[1] == b"hello !"
        assert await ds.ds_delete("ds-f") == "deleted"
        gone = await ds.ds_append("ds-a", DsAppend(b"x", "text/plain"))
        assert gone.outcome is DsOutcome.GONE

        # The other fork expires: the soft-deleted source finds it and goes with it.
        async def source_went() -> bool:
            return await ds.ds_read("ds-a", 0, 10, touch=False) is None

        await wait_until(source_went, what="the source going with its expired fork")
        assert await ds.ds_delete("ds-a") == "not_found"
        # Places freed: creates succeed again, and closing one works.
        assert (await ds.ds_create("ds-c", text, b"")).outcome == "created"
        closed = await ds.ds_append("ds-c", DsAppend(b"", None, close=True))
        assert closed.outcome is DsOutcome.APPENDED and closed.stream is not None
        assert closed.stream.closed
        assert await ds.ds_delete("ds-c") == "deleted"
        # An absolute expiry (Expires-At) is set as such.
        at_ms = int(time.time() * 1000) + 60_000
        dated = DsSpec("text/plain", expires_at="in a minute", expires_ms=at_ms)
        assert (await ds.ds_create("ds-d", dated, b"d")).outcome == "created"
        assert (await ds.ds_append("ds-d", DsAppend(b"e", "text/plain"))).outcome == "appended"
        pttl = fresh_redis.execute("PTTL", "streamhub:{ds-d}:ds")
        assert isinstance(pttl, int) and 0 < pttl <= 60_000
    refused = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not refused, refused
