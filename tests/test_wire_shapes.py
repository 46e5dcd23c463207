"""Each wire fact is defined once (issue 14, point 6) and every layer reads that one definition.

The status and snapshot answers are declared in the kernel (``STATUS_SHAPE``, ``SNAPSHOT_SHAPE``
in ``_types``): the engine's ``as_dict`` writes them, the router's pydantic models are built from
them, and ``from_dict`` reads them back for the HTTP client. The Redis key layout lives in
``backends/_keys.py``, which the CLI's ``top`` scan now uses instead of its own pattern.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest

from fastapi_streamhub import SessionInfo, State
from fastapi_streamhub._client.api import info_from, snapshot_from
from fastapi_streamhub._http.models import SnapshotOut, StatusOut
from fastapi_streamhub._types import SNAPSHOT_SHAPE, STATUS_SHAPE, Snapshot
from fastapi_streamhub.backends._keys import Keys
from fastapi_streamhub.client import ProtocolError
from fastapi_streamhub.client import Snapshot as PublicSnapshot

INFO = SessionInfo(
    session_id="chat:1",
    state=State.CANCELLED,
    generation=3,
    chunks=7,
    metadata={"model": "m"},
    created_at=10.5,
    updated_at=12.25,
    reason="user stopped",
)
SNAP = Snapshot("chat:1", State.DONE, "hello", "3-7", {"k": [1, 2]})


def test_status_is_written_in_the_declared_shape_and_read_back() -> None:
    """as_dict writes exactly STATUS_SHAPE's fields, in order; the client's parser inverts it."""
    body = INFO.as_dict()
    assert list(body) == [f.name for f in STATUS_SHAPE]
    assert body["state"] == "cancelled"
    assert body["last_event_id"] == "3-7"
    assert info_from(body) == INFO


def test_snapshot_is_written_in_the_declared_shape_and_read_back() -> None:
    """The snapshot answer likewise; the client's public Snapshot is the kernel's class."""
    body = SNAP.as_dict()
    assert list(body) == [f.name for f in SNAPSHOT_SHAPE]
    assert body["state"] == "done"
    assert snapshot_from(body) == SNAP
    assert PublicSnapshot is Snapshot


@pytest.mark.parametrize(
    ("model", "shape"), [(StatusOut, STATUS_SHAPE), (SnapshotOut, SNAPSHOT_SHAPE)]
)
def test_router_models_are_built_from_the_shapes(model: Any, shape: Any) -> None:
    """The documented answer has the shape's fields, order and required ones, no more."""
    assert list(model.model_fields) == [f.name for f in shape]
    required = {name for name, info in model.model_fields.items() if info.is_required()}
    assert required == {f.name for f in shape if not f.optional}


def test_router_model_accepts_what_the_engine_writes() -> None:
    """FastAPI filters an answer through its model: nothing the engine writes may be dropped."""
    assert StatusOut.model_validate(INFO.as_dict()).model_dump() == INFO.as_dict()
    assert SnapshotOut.model_validate(SNAP.as_dict()).model_dump() == SNAP.as_dict()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**INFO.as_dict(), "chunks": "x"}, "malformed status answer"),
        ({k: v for k, v in INFO.as_dict().items() if k != "chunks"}, "has no 'chunks' field"),
        ({**INFO.as_dict(), "state": "paused"}, "malformed status answer"),
        ({**INFO.as_dict(), "session_id": "../x"}, "malformed status answer"),
        (["not", "an", "object"], "has no 'session_id' field"),
    ],
)
def test_client_refuses_a_malformed_status_with_protocol_error(body: Any, message: str) -> None:
    """A wrong answer is a ProtocolError naming the problem, never a bare KeyError/ValueError."""
    with pytest.raises(ProtocolError, match=message):
        info_from(body)


def test_client_refuses_a_malformed_snapshot_with_protocol_error() -> None:
    """The snapshot parser reports the same two kinds of error."""
    with pytest.raises(ProtocolError, match="has no 'text' field"):
        snapshot_from({k: v for k, v in SNAP.as_dict().items() if k != "text"})
    with pytest.raises(ProtocolError, match="malformed snapshot answer"):
        snapshot_from({**SNAP.as_dict(), "state": "paused"})


@pytest.mark.parametrize("session_id", ["a", "chat:1", "x.y-z_0", "9" * 200])
def test_top_finds_sessions_by_the_key_layout(session_id: str) -> None:
    """The scan pattern matches every meta key Keys builds, and only meta keys name a session."""
    keys = Keys("hub:p")
    meta = keys.meta(session_id)
    assert fnmatch.fnmatchcase(meta, keys.meta_pattern)
    assert keys.session_of_meta(meta) == session_id
    for other in (keys.log(session_id), keys.lease(session_id), keys.msgs(session_id)):
        assert keys.session_of_meta(other) is None
    assert Keys("other").session_of_meta(meta) is None
