"""The README's ACL user is enough: every feature runs as a user with exactly that command list.

The ``ACL SETUSER`` block is read from README.md itself, so the documented list and what the
library sends (directly and inside its scripts) cannot drift apart unnoticed: a missing command
makes Redis answer ``NOPERM`` and the hub raise.
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

import anyio
import pytest
from support.conformance import RedisStore, until_compacted
from support.redis_server import RedisServer

from fastapi_streamhub import Chunk, End, FinishedGeneration, State, StreamHub

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
