"""Rows and answers of the PostgreSQL backend turned into the backend's values (pure: no
I/O), and the statements of its reads. The twin of ``_replies`` for Redis."""

from __future__ import annotations

import logging
from typing import Any

from .._codec import decode_end, decode_entry
from .._errors import BackendUnavailable
from .._types import Chunk, End, State
from .base import PART_REFUSALS, Lost, ReadResult, Reason

__all__ = ["INFO_SQL", "PAGE_SQL", "appended", "lost_of", "page_of_rows"]

log = logging.getLogger("fastapi_streamhub.postgres")

# The records of several sessions, with the database clock and the lease's remaining time.
INFO_SQL = (
    "SELECT s.session_id, d.*, s.turn FROM {p}_session s, LATERAL {p}_describe(s) d "
    "WHERE s.session_id = ANY(%s::text[]) AND s.expires_at > clock_timestamp()"
)
PAGE_SQL = (
    "SELECT generation, last_offset, kind, body, total FROM ("
    " SELECT generation, last_offset, kind, body, count(*) OVER () AS total,"
    "  sum(octet_length(body)) OVER (ORDER BY generation, last_offset) AS run,"
    "  row_number() OVER (ORDER BY generation, last_offset) AS rn"
    " FROM (SELECT l.generation, l.last_offset, l.kind, l.body FROM {p}_log l"
    "  WHERE l.session_id = %(sid)s AND (l.generation, l.last_offset) > (%(g)s, %(o)s)"
    # Rows of the current generation on (a kept generation's rows stay under their own).
    "  AND l.generation >= (SELECT s.generation FROM {p}_session s WHERE s.session_id = %(sid)s"
    "   AND s.expires_at > clock_timestamp())"
    "  ORDER BY l.generation, l.last_offset LIMIT %(count)s) l"
    ") t WHERE rn = 1 OR run <= %(budget)s ORDER BY generation, last_offset"
)


def lost_of(code: str) -> Lost | None:
    """A refusal string of the SQL functions (``postgres_sql``) as a :class:`Lost`."""
    if not code:
        return None
    if code.startswith("part "):
        return PART_REFUSALS[code[5:]]
    if code == "lapsed":
        return Lost("closed", State.FAILED, Reason.LEASE_EXPIRED)
    head, _, rest = code.partition("\n")
    if head == "closed":
        state, _, reason = rest.partition("\n")
        return Lost("closed", State(state), reason or None)
    if head == "stale":
        return Lost("stale")
    if head == "gone":
        return Lost("gone")
    raise BackendUnavailable(f"unexpected answer from PostgreSQL: {code!r}")


def appended(code: str, session_id: str, first: int) -> Lost | None:
    """What ``{p}_append`` answered for one batch (starting at offset ``first``)."""
    if code.startswith("hole\n"):
        # Stored, after a hole: chunks this producer had stored are gone from the store. The
        # producer goes on (as on Redis); readers are told by a reset, and so is the operator.
        log.warning(
            "session %r: chunks %d-%d, acknowledged earlier, are no longer stored (a failover "
            "to a standby that had not received them?); readers get a reset",
            session_id,
            int(code[5:]) + 1,
            first - 1,
        )
        return None
    return lost_of(code)


def page_of_rows(rows: list[Any], after: tuple[int, int], count: int) -> ReadResult:
    """Chunks (and the end marker) of the page's rows, the twin of ``page_of`` for rows."""
    chunks: list[Chunk] = []
    end: tuple[int, End] | None = None
    for gen, last, kind, body, _ in rows:
        if kind in ("e", b"e"):
            end = (gen, End(*decode_end(bytes(body))))
            break
        # The cursor may point inside this row: what the reader already has is skipped.
        chunks.extend(decode_entry(gen, last, bytes(body), after[1] if gen == after[0] else 0))
    cut = bool(rows) and len(rows) < int(rows[0][4])
    return ReadResult(chunks, end, end is None and (cut or len(rows) == count))
