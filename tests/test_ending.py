"""The ending rule as a table: what a producer saw when it stopped -> the stored (state, reason).

``final_state`` is pure; the conformance suite (tests/test_conformance_ends.py) checks that every
exit path feeds it the same facts on every backend.
"""

from __future__ import annotations

import asyncio

import pytest

from fastapi_streamhub import BackendUnavailable, LimitExceeded, State
from fastapi_streamhub._ending import Exit, backend_reason, final_state

pytestmark = pytest.mark.anyio

FROZEN = BackendUnavailable("Redis did not answer within 30s")
DOWN = BackendUnavailable(
    "Redis unreachable for 2.5s: Error 111 connecting to 10.1.2.3:6379. Connection refused."
)
OOM = BackendUnavailable("append failed: OutOfMemoryError: command not allowed when used memory")
# The suite runs on asyncio (conftest.anyio_backend), where this is the cancel exception.
CANCEL = asyncio.CancelledError

TABLE: list[tuple[str, Exit, tuple[State | None, str | None]]] = [
    ("clean end", Exit(), (State.DONE, None)),
    ("close(done)", Exit(State.DONE), (State.DONE, None)),
    ("cancel, then close()", Exit(cancel_reason="cancelled"), (State.CANCELLED, "cancelled")),
    ("cancelled exception", Exit(exc=CANCEL()), (State.CANCELLED, "cancelled")),
    ("close(cancelled)", Exit(State.CANCELLED), (State.CANCELLED, "cancelled")),
    ("close(cancelled, why)", Exit(State.CANCELLED, "user"), (State.CANCELLED, "user")),
    ("close(failed, why)", Exit(State.FAILED, "bad input"), (State.FAILED, "bad input")),
    ("body raised", Exit(exc=ValueError("boom")), (State.FAILED, "ValueError: boom")),
    (
        "raised after cancel",
        Exit(cancel_reason="cancelled", exc=KeyError("k")),
        (State.FAILED, "KeyError: 'k'"),
    ),
    # H1: a lost final write is never done, whatever was requested.
    (
        "write lost, close()",
        Exit(error=FROZEN),
        (State.FAILED, "backend: the store did not answer within 30s"),
    ),
    (
        "write lost, close(done)",
        Exit(State.DONE, error=FROZEN),
        (State.FAILED, "backend: the store did not answer within 30s"),
    ),
    (
        "write lost, cancelled",
        Exit(cancel_reason="error", error=OOM),
        (State.FAILED, "backend: the store refused the write (OutOfMemoryError)"),
    ),
    (
        "write lost, body raised",
        Exit(error=DOWN, exc=ValueError("x")),
        (State.FAILED, "backend: the store was unreachable for 2.5s"),
    ),
    ("shutdown", Exit(cancel_reason="shutdown", shutdown=True), (State.FAILED, "shutdown")),
    (
        "close(failed, shutdown)",
        Exit(State.FAILED, "shutdown", shutdown=True),
        (State.FAILED, "shutdown"),
    ),
    ("shutdown, body cancelled", Exit(shutdown=True, exc=CANCEL()), (State.FAILED, "shutdown")),
    ("lost", Exit(lost=True, cancel_reason="ownership_lost"), (None, None)),
    ("lost, close(done)", Exit(State.DONE, lost=True), (None, None)),
]


@pytest.mark.parametrize(
    ("seen", "expected"), [(e, r) for _, e, r in TABLE], ids=[n for n, _, _ in TABLE]
)
async def test_final_state(seen: Exit, expected: tuple[State | None, str | None]) -> None:
    assert final_state(seen) == expected


@pytest.mark.parametrize(
    "error",
    [
        FROZEN,
        DOWN,
        OOM,
        BackendUnavailable("could not close session 'x': Error at 10.1.2.3:6379"),
        LimitExceeded("x"),
    ],
)
async def test_backend_reasons_never_carry_the_driver_text(error: Exception) -> None:
    reason = backend_reason(error)  # type: ignore[arg-type]
    assert reason.startswith("backend: ")
    assert "10.1.2.3" not in reason and "6379" not in reason and "connecting" not in reason
