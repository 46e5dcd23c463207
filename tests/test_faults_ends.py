# ruff: noqa: F811  (the fault suite's fixtures are imported, then named as parameters)
"""Over HTTP, with real processes: a refused final write ends the stream ``failed``, not ``done``.

Hostile review H1 (reproduction B): Redis refuses the write that carries the last chunks (here
chunks each over ``proto-max-bulk-len``: the writer splits a refused round trip down to single
chunks, so only a chunk Redis refuses on its own fails), the generator has finished. The
stream used to end ``done`` with the chunks stored before; every reader, on both instances,
now gets ``failed`` with a ``backend`` reason, and ``/status`` agrees. Fixtures and helpers:
``tests/test_faults.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support.redis_server import RedisServer
from support.sids import new_sid
from support.sse_client import read_sse
from test_faults import (  # noqa: F401  (fixtures: used by name)
    Launch,
    clients,
    launch,
    status_of,
)

pytestmark = pytest.mark.anyio

PAD = 1_100_000  # one chunk is over Redis' smallest proto-max-bulk-len (1 MB)
N = 3


@pytest.mark.timeout(90)
async def test_a_refused_final_write_ends_failed_on_every_instance(
    make_redis: Callable[..., RedisServer], launch: Launch
) -> None:
    server = make_redis()
    a, b = await launch(["A", "B"], redis=server.url, OUTAGE_TIMEOUT=1, MAX_CHUNK_BYTES=2 * PAD)
    server.execute("CONFIG", "SET", "proto-max-bulk-len", "1mb")
    sid = new_sid("refused")
    async with clients(a, b) as (ca, cb):
        # The generator yields its chunks without awaiting anything (count=false: no
        # bookkeeping round trip per chunk) and finishes before the writes are refused.
        params = {"n": N, "pad": PAD, "count": "false"}
        started = await read_sse(ca, f"/gen/{sid}", params=params, within=60)
        replay = await read_sse(cb, f"/streams/{sid}", within=30)
        status = await status_of(cb, sid)
    for res in (started, replay):
        assert res.eof and len(res.ends) == 1, res.records[-3:]
        end = res.ends[0]
        assert end["state"] == "failed" and end["reason"].startswith("backend: "), (
            end,
            len(res.chunks),
            status,
        )
        assert str(server.port) not in end["reason"], end
    # What was stored stays readable, and /status tells the same story.
    assert len(replay.chunks) < N, len(replay.chunks)
    assert status["state"] == "failed" and status["reason"] == replay.ends[0]["reason"], status
    assert status["chunks"] == len(replay.chunks), status
