"""Durable Streams limits on every backend (memory, Redis, a Redis Cluster, PostgreSQL): the
number of streams a store holds (``ds_max_streams``: expired and deleted streams leave the
count, two creates never both take the last place, a refusal loses nothing) and a fork that
expires releasing its source (a deleted source with only expired forks goes away). Over HTTP:
one create past the limit is a 429 and the streams stay readable."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from support.apps import AppServer, serving
from support.sids import new_sid
from support.sse_client import wait_until

from fastapi_streamhub import StreamHub
from fastapi_streamhub.backends._ds import DsFork, DsSpec
from fastapi_streamhub.backends.base import Backend

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

LIMIT = 3
TEXT = DsSpec("text/plain")


def _url(kind: str, request: pytest.FixtureRequest) -> str:
    if kind == "memory":
        return "memory://"
    fixture = {"redis": "redis_url", "cluster": "cluster_url", "postgres": "postgres_url"}[kind]
    url = request.getfixturevalue(fixture)
    assert isinstance(url, str)
    return url


@pytest.fixture(params=["memory", "redis", "cluster", "postgres"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A hub's backend holding at most LIMIT streams, under a key prefix (a schema on
    PostgreSQL) of its own, so that the count starts at zero."""
    url = _url(request.param, request)
    prefix = f"dsl_{uuid.uuid4().hex[:10]}"
    async with StreamHub.from_url(url, key_prefix=prefix, ds_max_streams=LIMIT) as hub:
        yield hub.backend


async def _create(backend: Backend, sid: str, spec: DsSpec = TEXT) -> str:
    return (await backend.ds_create(sid, spec, b"x")).outcome


async def test_one_create_past_the_limit_is_refused_and_loses_nothing(backend: Backend) -> None:
    sids = [new_sid("held") for _ in range(LIMIT)]
    for sid in sids:
        assert await _create(backend, sid) == "created"
    extra = new_sid("extra")
    assert await _create(backend, extra) == "full"
    assert await backend.ds_read(extra, 0, 10, touch=False) is None
    # The held streams are whole, and an idempotent create of one of them still answers.
    for sid in sids:
        read = await backend.ds_read(sid, 0, 10, touch=False)
        assert read is not None and read[1] == b"x"
    assert await _create(backend, sids[0]) == "exists"
    # A fork is a create like any other.
    assert (await backend.ds_create(extra, DsSpec(""), b"", DsFork(sids[0], None))).outcome == (
        "full"
    )
    # A delete frees a place, and the source of the refused fork counts no fork of it.
    assert await backend.ds_delete(sids[1]) == "deleted"
    assert await _create(backend, extra) == "created"
    assert await _create(backend, new_sid("again")) == "full"
    assert await backend.ds_delete(sids[0]) == "deleted"


async def test_expired_streams_leave_the_count_and_read_ones_stay(backend: Backend) -> None:
    kept = new_sid("kept")
    assert await _create(backend, kept, DsSpec("text/plain", ttl=2)) == "created"
    for _ in range(LIMIT - 1):
        assert await _create(backend, new_sid("brief"), DsSpec("text/plain", ttl=1)) == "created"
    assert await _create(backend, new_sid("early")) == "full"
    later = [new_sid("later") for _ in range(LIMIT - 1)]

    async def kept_read_and_later_created() -> bool:
        # Reads restart the kept stream's window, so it never expires while the others do.
        assert await backend.ds_read(kept, 0, 10, touch=True) is not None
        return await _create(backend, later[0]) == "created"

    await wait_until(kept_read_and_later_created, within=20, interval=0.2, what="an expiry")
    assert await backend.ds_read(kept, 0, 10, touch=True) is not None
    assert await _create(backend, later[1]) == "created"
    # The kept stream still counts: the store holds LIMIT again.
    assert await _create(backend, new_sid("past")) == "full"


async def test_two_creates_race_for_the_last_place(backend: Backend) -> None:
    for _ in range(LIMIT - 1):
        assert await _create(backend, new_sid("fill")) == "created"
    for _ in range(4):
        racers = [new_sid("racer"), new_sid("racer")]
        outcomes: dict[str, str] = {}

        async def create(sid: str, into: dict[str, str]) -> None:
            into[sid] = await _create(backend, sid)

        async with anyio.create_task_group() as tg:
            for sid in racers:
                tg.start_soon(create, sid, outcomes)
        assert sorted(outcomes.values()) == ["created", "full"], outcomes
        winner = next(sid for sid, outcome in outcomes.items() if outcome == "created")
        assert await backend.ds_delete(winner) == "deleted"


async def test_a_deleted_source_goes_when_its_only_fork_expires(backend: Backend) -> None:
    source, fork = new_sid("src"), new_sid("fork")
    assert await _create(backend, source) == "created"
    made = await backend.ds_create(fork, DsSpec("", ttl=1), b"", DsFork(source, None))
    assert made.outcome == "created"
    assert await backend.ds_delete(source) == "soft"
    read = await backend.ds_read(source, 0, 10, touch=False)
    assert read is not None and read[0].gone

    # Nothing reads the fork: its expiry alone must release the source.
    async def source_gone_for_good() -> bool:
        return await backend.ds_read(source, 0, 10, touch=False) is None

    await wait_until(source_gone_for_good, within=15, interval=0.2, what="the source's release")
    assert await backend.ds_read(fork, 0, 10, touch=False) is None
    # Neither counts any more (on Redis the index may count an expired stream up to half its
    # window longer: wait), and the id is free.
    for _ in range(LIMIT):
        fill = new_sid("fill")

        async def created(sid: str = fill) -> bool:
            return await _create(backend, sid) == "created"

        await wait_until(created, within=10, interval=0.1, what="a place in the store")
    assert await _create(backend, source) == "full"


async def test_a_source_whose_forks_expired_is_deleted_outright(backend: Backend) -> None:
    source, fork = new_sid("src"), new_sid("fork")
    assert await _create(backend, source) == "created"
    made = await backend.ds_create(fork, DsSpec("", ttl=1), b"", DsFork(source, 0))
    assert made.outcome == "created"

    async def fork_expired() -> bool:
        return await backend.ds_read(fork, 0, 10, touch=False) is None

    await wait_until(fork_expired, within=15, interval=0.2, what="the fork's expiry")
    assert await backend.ds_delete(source) == "deleted"
    assert await backend.ds_read(source, 0, 10, touch=False) is None
    assert await backend.ds_delete(source) == "not_found"
    # A new stream under the same id counts no fork of the old one.
    assert await _create(backend, source) == "created"
    assert await backend.ds_delete(source) == "deleted"


def test_the_setting_is_checked() -> None:
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="ds_max_streams"):
            StreamHub.from_url("memory://", ds_max_streams=bad)
    assert StreamHub.from_url("memory://", ds_max_streams=None).settings.ds_max_streams is None


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    log_dir: Path = tmp_path_factory.mktemp("ds-limits")
    with serving(AppServer("ds-limits", {"DS_MAX_STREAMS": "2"}, log_dir, "ds_app:app")) as server:
        yield server


def test_a_create_past_the_limit_is_a_429_over_http(app: AppServer) -> None:
    with httpx.Client(base_url=app.url, timeout=10.0, trust_env=False) as http:
        names = [new_sid("h"), new_sid("h")]
        for name in names:
            made = http.put(
                f"/v1/stream/{name}", content=b"hi", headers={"Content-Type": "text/plain"}
            )
            assert made.status_code == 201
        refused = http.put(f"/v1/stream/{new_sid('h')}", headers={"Content-Type": "text/plain"})
        assert refused.status_code == 429
        assert "ds_max_streams" in refused.text
        assert refused.headers["x-content-type-options"] == "nosniff"
        for name in names:
            assert http.get(f"/v1/stream/{name}", params={"offset": "-1"}).content == b"hi"
        assert http.delete(f"/v1/stream/{names[0]}").status_code == 204
        again = http.put(f"/v1/stream/{new_sid('h')}", headers={"Content-Type": "text/plain"})
        assert again.status_code == 201
