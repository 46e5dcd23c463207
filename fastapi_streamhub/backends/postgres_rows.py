"""Rows and answers of the PostgreSQL backend turned into the backend's values (pure: no
I/O), and the statements of its reads. The twin of ``_replies`` for Redis."""

from __future__ import annotations

import logging
from typing import Any

from .._codec import decode_end, decode_entry
from .._errors import BackendUnavailable
from .._trusted import trusted_chunk, trusted_cursor
from .._types import Chunk, End, State
from .base import PART_REFUSALS, Lost, ReadResult, Reason

__all__ = ["INFO_SQL", "PAGE_SQL", "appended", "budgeted", "lost_of", "page_of_rows"]

log = logging.getLogger("fastapi_streamhub.postgres")

# The records of several sessions, with the database clock and the lease's remaining time.
INFO_SQL = (
    "SELECT s.session_id, d.*, s.turn FROM {p}_session s, LATERAL {p}_describe(s) d "
    "WHERE s.session_id = ANY(%s::text[]) AND s.expires_at > clock_timestamp()"
)


def budgeted(rows: str, order: str) -> str:
    """The page of ``rows`` (a query of ``generation, last_offset, kind, body`` ordered by
    ``order``, already limited to the page's count) under the byte budget ``%(budget)s``: its
    first row always, then rows while their running size stays within the budget. The first
    row the budget leaves out comes back without its body (``NULL``), so the reader knows the
    page was cut. One window pass whose frame ends at the current row (it streams: nothing
    waits for the page's last row, as ``count(*) OVER ()`` would make it)."""
    return (
        "SELECT generation, last_offset, kind,"
        " CASE WHEN rn = 1 OR run <= %(budget)s THEN body END FROM ("
        " SELECT generation, last_offset, kind, body,"
        "  sum(octet_length(body)) OVER w AS run, row_number() OVER w AS rn"
        f" FROM ({rows}) l WINDOW w AS (ORDER BY {order} ROWS UNBOUNDED PRECEDING)"
        f") t WHERE rn <= 2 OR run - octet_length(body) <= %(budget)s ORDER BY {order}"
    )


PAGE_SQL = budgeted(
    "SELECT l.generation, l.last_offset, l.kind, l.body FROM {p}_log l"
    " WHERE l.session_id = %(sid)s AND (l.generation, l.last_offset) > (%(g)s, %(o)s)"
    # Rows of the current generation on (a kept generation's rows stay under their own).
    " AND l.generation >= (SELECT s.generation FROM {p}_session s WHERE s.session_id = %(sid)s"
    "  AND s.expires_at > clock_timestamp())"
    " ORDER BY l.generation, l.last_offset LIMIT %(count)s",
    "generation, last_offset",
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


def _one_text_frame(size: int) -> bytes | None:
    """The start of a row of ``size`` bytes that holds one text frame and nothing else: the
    frame's length, ``:`` and ``t`` (``None``: no such row has that size)."""
    for digits in range(1, 5):
        length = size - digits - 1
        if length > 0 and len(str(length)) == digits:
            return b"%d:t" % length
    return None


# By row size: the rows of one token each, which a replay reads by the thousand.
_ONE_TEXT = [_one_text_frame(size) for size in range(1024)]


def page_of_rows(rows: list[Any], after: tuple[int, int], count: int) -> ReadResult:
    """Chunks (and the end marker) of a page's rows (see :func:`budgeted`), the twin of
    ``page_of`` for rows.

    The replay's hot path: most rows hold one text chunk (an LLM's pace writes one chunk per
    round trip); such a row (one frame filling it, recognised by its start, which its size
    fixes) is built here without ``decode_entry``'s general loop. Any other row goes through
    it."""
    chunks: list[Chunk] = []
    append = chunks.append
    end: tuple[int, End] | None = None
    cut = False
    after_gen, after_offset = after
    one_text = _ONE_TEXT
    for gen, last, kind, body in rows:
        if kind == "c" and body is not None and len(body) < 1024:
            head = one_text[len(body)]
            if head is not None and body.startswith(head):
                # Its one chunk is at offset ``last``; the reader may have it already.
                if last > after_offset or gen != after_gen:
                    text = body[len(head) :].decode()
                    append(trusted_chunk(trusted_cursor(gen, last), text, "text", None, None))
                continue
        if body is None:  # the first row the byte budget left out
            cut = True
            break
        if kind == "e" or kind == b"e":
            end = (gen, End(*decode_end(bytes(body))))
            break
        # The cursor may point inside this row: what the reader already has is skipped.
        chunks.extend(decode_entry(gen, last, bytes(body), after_offset if gen == after_gen else 0))
    return ReadResult(chunks, end, end is None and (cut or len(rows) == count))
