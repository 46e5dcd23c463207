"""The Durable Streams backend methods (``ds_*``) on every backend: a stream is no session (never
claimed, never failed, never counted), its transitions, forks and deletes, and an ordinary
session's writes and reads touch none of it. The protocol itself is checked end to end by
tests/test_durable_streams.py (the official suite); these are the store's own guarantees.
"""

from __future__ import annotations

import pytest
from support.conformance import HubFactory, RedisStore, Store
from support.sids import new_sid

from fastapi_streamhub import InvalidSessionId, State
from fastapi_streamhub.backends._ds import DsAppend, DsFork, DsOutcome, DsProducer, DsSpec

pytestmark = pytest.mark.anyio

TEXT = DsSpec("text/plain")


async def test_a_stream_is_never_claimed_by_register(make_hub: HubFactory) -> None:
    hub = await make_hub()
    sid = new_sid()
    assert (await hub.backend.ds_create(sid, TEXT, b"abc")).outcome == "created"
    with pytest.raises(InvalidSessionId, match="Durable Streams"):
        await hub.register(sid)
    assert await hub.status(sid) is None  # no session record: nothing to fail or count
    answer = await hub.backend.ds_read(sid, 0, 10, touch=False)
    assert answer is not None and answer[1] == b"abc" and not answer[0].closed


async def test_a_session_id_is_never_created_as_a_stream(make_hub: HubFactory) -> None:
    hub = await make_hub()
    sid = new_sid()
    reg = await hub.register(sid)
    assert reg.producer is not None
    assert (await hub.backend.ds_create(sid, TEXT, b"")).outcome == "conflict"
    await reg.producer.close()


async def test_append_checks_in_order_and_applies_atomically(make_hub: HubFactory) -> None:
    backend = (await make_hub()).backend
    sid = new_sid()
    await backend.ds_create(sid, TEXT, b"")
    first = await backend.ds_append(sid, DsAppend(b"a", "text/plain", "b", DsProducer("p", 0, 0)))
    assert first.outcome is DsOutcome.APPENDED and first.stream is not None
    assert first.stream.tail == 1
    again = await backend.ds_append(sid, DsAppend(b"a", "text/plain", "c", DsProducer("p", 0, 0)))
    assert again.outcome is DsOutcome.DUPLICATE and again.seq == 0
    gap = await backend.ds_append(sid, DsAppend(b"x", "text/plain", None, DsProducer("p", 0, 5)))
    assert gap.outcome is DsOutcome.SEQ_GAP and gap.seq == 1
    stale = await backend.ds_append(sid, DsAppend(b"x", "text/plain", None, DsProducer("q", 3, 0)))
    assert stale.outcome is DsOutcome.APPENDED
    zombie = await backend.ds_append(sid, DsAppend(b"x", "text/plain", None, DsProducer("q", 2, 1)))
    assert zombie.outcome is DsOutcome.STALE_EPOCH and zombie.epoch == 3
    # Stream-Seq compares bytes: "b" then "a" goes back, and nothing of that append is kept.
    back = await backend.ds_append(sid, DsAppend(b"y", "text/plain", "a"))
    assert back.outcome is DsOutcome.STREAM_SEQ
    mismatch = await backend.ds_append(sid, DsAppend(b"z", "application/json"))
    assert mismatch.outcome is DsOutcome.TYPE_MISMATCH
    closed = await backend.ds_append(sid, DsAppend(b"!", "text/plain", close=True))
    assert closed.outcome is DsOutcome.APPENDED and closed.stream is not None
    assert closed.stream.closed and closed.stream.tail == 3
    after = await backend.ds_append(sid, DsAppend(b"late", "text/plain"))
    assert after.outcome is DsOutcome.CLOSED
    answer = await backend.ds_read(sid, 0, 100, touch=True)
    assert answer is not None and answer[1] == b"ax!"


async def test_fork_copies_a_prefix_and_soft_deletes_its_source(make_hub: HubFactory) -> None:
    backend = (await make_hub()).backend
    src, fork, fork2 = new_sid(), new_sid(), new_sid()
    await backend.ds_create(src, DsSpec("application/json", ttl=60), b'{"a":1}\n[2]\n3\n')
    made = await backend.ds_create(fork, DsSpec(""), b"4\n", DsFork(src, 0, 2))
    assert made.outcome == "created" and made.stream is not None
    assert made.stream.spec.content_type == "application/json" and made.stream.spec.ttl == 60
    answer = await backend.ds_read(fork, 0, 100, touch=False)
    assert answer is not None and answer[1] == b'{"a":1}\n[2]\n4\n'
    inside = await backend.ds_create(fork2, DsSpec(""), b"", DsFork(src, 3, 0))
    assert inside.outcome == "bad_fork_offset"  # inside a JSON message
    assert (await backend.ds_create(fork2, DsSpec(""), b"", DsFork(new_sid(), None))).outcome == (
        "source_not_found"
    )
    assert await backend.ds_delete(src) == "soft"
    gone = await backend.ds_read(src, 0, 10, touch=False)
    assert gone is not None and gone[0].gone and gone[1] == b""
    assert (await backend.ds_append(src, DsAppend(b"5\n", "application/json"))).outcome is (
        DsOutcome.GONE
    )
    assert (await backend.ds_create(fork2, DsSpec(""), b"", DsFork(src, None))).outcome == (
        "source_gone"
    )
    assert await backend.ds_delete(src) == "gone"
    assert await backend.ds_delete(fork) == "deleted"
    # Its last fork gone, the soft-deleted source went with it.
    assert await backend.ds_read(src, 0, 10, touch=False) is None
    assert await backend.ds_delete(src) == "not_found"


async def test_ordinary_sessions_touch_no_stream_key(make_hub: HubFactory, store: Store) -> None:
    hub = await make_hub()
    sid = new_sid()
    reg = await hub.register(sid)
    assert reg.producer is not None
    for i in range(5):
        await reg.producer.publish(f"t{i}")
    await reg.producer.close()
    assert await hub.backend.ds_read(sid, 0, 10, touch=False) is None
    if isinstance(store, RedisStore):
        names = store.keys()  # a list of key names (not a dict)
        assert not [k for k in names if k.endswith((":ds", ":dsdata", ":dsprod"))]


async def test_the_redis_hot_path_runs_no_stream_script(
    make_redis_hub: HubFactory, redis_store: RedisStore
) -> None:
    """An ordinary session's appends stay scriptless (XADD and PUBLISH): the Durable Streams
    scripts add nothing to them."""
    hub = await make_redis_hub()
    reg = await hub.register(new_sid())
    assert reg.producer is not None
    server = redis_store.server
    before = server.command_stats()
    for i in range(20):
        await reg.producer.publish(f"t{i}")
    await reg.producer.flush()
    after = server.command_stats()
    grew = {name for name, calls in after.items() if calls > before.get(name, 0)}
    assert grew <= {"xadd", "publish", "info"}, grew
    assert reg.state is State.ACTIVE
    await reg.producer.close()


async def test_appends_compare_media_types(make_hub: HubFactory) -> None:
    backend = (await make_hub()).backend
    sid = new_sid()
    await backend.ds_create(sid, DsSpec("text/plain;charset=utf-8"), b"")
    same = await backend.ds_append(sid, DsAppend(b"a", "text/plain"))
    assert same.outcome is DsOutcome.APPENDED
    other = await backend.ds_append(sid, DsAppend(b"b", "text/html"))
    assert other.outcome is DsOutcome.TYPE_MISMATCH
