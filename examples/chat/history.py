"""The chat example's saved answers: SQLite (stdlib ``sqlite3``), written by the hub's
``on_finish`` hook and read by ``GET /history``.

Every call runs in a worker thread (``anyio.to_thread``): ``sqlite3`` blocks. The row of a
generation is keyed by ``(session_id, generation)``, the hook's idempotency key: the hook may run
again after a crash (at least once), and then it rewrites the same row instead of adding one.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from fastapi_streamhub import FinishedGeneration

__all__ = ["History"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    session_id  TEXT    NOT NULL,
    generation  INTEGER NOT NULL,
    prompt      TEXT,
    text        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    reason      TEXT,
    truncated   INTEGER NOT NULL,
    saved_at    REAL    NOT NULL,
    PRIMARY KEY (session_id, generation)
)
"""
_UPSERT = """
INSERT INTO answers (session_id, generation, prompt, text, state, reason, truncated, saved_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id, generation) DO UPDATE SET
    prompt = excluded.prompt, text = excluded.text, state = excluded.state,
    reason = excluded.reason, truncated = excluded.truncated
"""
_LATEST = """
SELECT session_id, generation, prompt, text, state, reason, truncated, saved_at
FROM answers ORDER BY saved_at DESC LIMIT ?
"""


def default_path() -> Path:
    """``CHAT_DB``, else ``streamhub-chat.db`` in the temporary directory (kept across
    restarts of the example, and out of the working tree)."""
    return Path(os.environ.get("CHAT_DB") or Path(tempfile.gettempdir()) / "streamhub-chat.db")


class History:
    """The table of finished answers in the SQLite file ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._connect() as db:
            db.execute(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """One connection for a ``with`` block: committed (or rolled back) and closed after it
        (``sqlite3``'s own ``with`` commits but never closes)."""
        # Several instances of the example may share the file: wait for each other's writes.
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:
                yield db
        finally:
            db.close()

    async def save(self, done: FinishedGeneration) -> None:
        """The ``on_finish`` hook: upsert the answer of one generation."""
        await anyio.to_thread.run_sync(self._save, done)

    def _save(self, done: FinishedGeneration) -> None:
        prompt = done.metadata.get("prompt") if isinstance(done.metadata, dict) else None
        row = (
            done.session_id,
            done.generation,
            prompt,
            done.text,
            done.state.value,
            done.reason,
            int(done.truncated),
            time.time(),
        )
        with self._connect() as db:
            db.execute(_UPSERT, row)

    async def latest(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` answers saved last, newest first."""
        return await anyio.to_thread.run_sync(self._latest, limit)

    def _latest(self, limit: int) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(_LATEST, (limit,)).fetchall()
        keys = ("session_id", "generation", "prompt", "text", "state", "reason", "truncated")
        out = []
        for row in rows:
            item = dict(zip(keys, row[:7], strict=True))
            item["truncated"] = bool(item["truncated"])
            item["saved_at"] = row[7]
            out.append(item)
        return out
