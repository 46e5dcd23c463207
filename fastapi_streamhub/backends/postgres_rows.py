"""Rows and answers of the PostgreSQL backend turned into the backend's values (pure: no
I/O), and the statements of its reads. The twin of ``_replies`` for Redis."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from .._codec import decode_end, decode_entry
from .._errors import BackendUnavailable
from .._trusted import trusted_chunk, trusted_cursor
from .._types import Chunk, End, State
from .base import PART_REFUSALS, Lost, ReadResult, Reason

__all__ = [
    "INFO_SQL",
    "PAGE_SQL",
    "PageSql",
    "Partial",
    "appended",
    "complete",
    "lost_of",
    "page_of_rows",
    "page_params",
    "paged",
]

log = logging.getLogger("fastapi_streamhub.postgres")

_BIGINT = 2**63 - 1  # a cursor past it still compares within bigint

# The records of several sessions, with the database clock and the lease's remaining time.
INFO_SQL = (
    "SELECT s.session_id, d.*, s.turn FROM {p}_session s, LATERAL {p}_describe(s) d "
    "WHERE s.session_id = ANY(%s::text[]) AND s.expires_at > clock_timestamp()"
)


@dataclass(frozen=True)
class PageSql:
    """The two statements of a page read (see :func:`paged`): ``rows`` and, rarely, ``bodies``."""

    rows: str
    bodies: str


def paged(where: str, order: str) -> PageSql:
    """A page of log rows (``where``, ordered by ``order``, at most ``%(count)s``) within the
    byte budget (``replay_batch_bytes``), without a window function over the page.

    ``rows`` answers ``generation, last_offset, kind, body, size``, each body only when it is
    at most ``%(share)s`` bytes (the budget over the count: such rows cannot exceed the budget
    together), ``NULL`` otherwise, with its size. Token rows are far below that share, so a
    page is nearly always complete in this one statement. When a larger row comes,
    :func:`page_of_rows` works out from the sizes where the budget cuts the page and asks for
    the bodies it lacks with ``bodies``: the rows after ``(%(g0)s, %(o0)s)`` up to
    ``(%(g2)s, %(o2)s)``, at most ``%(limit)s`` of them, in full. (A running sum over the page
    in SQL costs the server more than the page's own read: about 0.4 ms per 1,000 rows.)"""
    return PageSql(
        "SELECT l.generation, l.last_offset, l.kind,"
        " CASE WHEN octet_length(l.body) <= %(share)s THEN l.body END, octet_length(l.body)"
        f" FROM {{p}}_log l WHERE {where} ORDER BY {order} LIMIT %(count)s",
        "SELECT l.generation, l.last_offset, l.kind, l.body, 0 FROM {p}_log l"
        f" WHERE {where} AND (l.generation, l.last_offset) > (%(g0)s, %(o0)s)"
        " AND (l.generation, l.last_offset) <= (%(g2)s, %(o2)s)"
        f" ORDER BY {order} LIMIT %(limit)s",
    )


def page_params(budget: int, count: int) -> dict[str, int]:
    """The count and each row's share of the byte ``budget``, parameters of :func:`paged`'s
    ``rows``."""
    return {"count": count, "share": max(1, budget // max(1, count))}


PAGE_SQL = paged(
    "l.session_id = %(sid)s AND (l.generation, l.last_offset) > (%(g)s, %(o)s)"
    # Rows of the current generation on (a kept generation's rows stay under their own).
    " AND l.generation >= (SELECT s.generation FROM {p}_session s WHERE s.session_id = %(sid)s"
    "  AND s.expires_at > clock_timestamp())",
    "l.generation, l.last_offset",
)


@dataclass
class Partial:
    """A page whose rows lack bodies (larger than their share) within the budget: the chunks
    decoded so far, and the range of rows to read in full with ``PageSql.bodies``."""

    chunks: list[Chunk]
    params: dict[str, int]
    more: bool


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


def page_of_rows(
    rows: list[Any], after: tuple[int, int], count: int, budget: int
) -> ReadResult | Partial:
    """Chunks (and the end marker) of a page's rows (see :func:`paged`), the twin of
    ``page_of`` for rows; a :class:`Partial` when rows within the budget lack their bodies.

    The replay's hot path: most rows hold one text chunk (an LLM's pace writes one chunk per
    round trip); such a row (one frame filling it, recognised by its start, which its size
    fixes) is built here without ``decode_entry``'s general loop. Any other row goes through
    it."""
    chunks: list[Chunk] = []
    append = chunks.append
    end: tuple[int, End] | None = None
    after_gen, after_offset = after
    one_text = _ONE_TEXT
    for row in rows:
        gen, last, kind, body, _ = row
        if kind == "c" and body is not None and len(body) < 1024:
            head = one_text[len(body)]
            if head is not None and body.startswith(head):
                # Its one chunk is at offset ``last``; the reader may have it already.
                if last > after_offset or gen != after_gen:
                    text = body[len(head) :].decode()
                    append(trusted_chunk(trusted_cursor(gen, last), text, "text", None, None))
                continue
        if body is None:  # larger than its share of the budget
            return _cut(rows, rows.index(row), chunks, after, count, budget)
        if kind == "e" or kind == b"e":
            end = (gen, End(*decode_end(bytes(body))))
            break
        # The cursor may point inside this row: what the reader already has is skipped.
        chunks.extend(decode_entry(gen, last, bytes(body), after_offset if gen == after_gen else 0))
    return ReadResult(chunks, end, end is None and len(rows) == count)


def _cut(
    rows: list[Any], at: int, chunks: list[Chunk], after: tuple[int, int], count: int, budget: int
) -> ReadResult | Partial:
    """The page from ``rows[at]`` on, the first row without its body: where the byte budget
    ends the page (the first row always belongs to it), and the range to read in full."""
    sizes = [row[4] for row in rows]
    used = sum(sizes[:at])
    if at and used + sizes[at] > budget:
        return ReadResult(chunks, None, True)  # the budget ends the page before this row
    keep = at + 1
    used += sizes[at]
    while keep < len(rows) and used + sizes[keep] <= budget:
        used += sizes[keep]
        keep += 1
    low = rows[at - 1][:2] if at else (min(after[0], _BIGINT), min(after[1], _BIGINT))
    high = rows[keep - 1][:2]
    params = {"g0": low[0], "o0": low[1], "g2": high[0], "o2": high[1], "limit": keep - at}
    return Partial(chunks, params, keep < len(rows) or len(rows) == count)


def complete(partial: Partial, rows: list[Any], after: tuple[int, int]) -> ReadResult:
    """The page of a :class:`Partial` once the rows it lacked were read in full."""
    rest = page_of_rows(rows, after, len(rows) + 1, 0)
    assert isinstance(rest, ReadResult), "rows read in full"
    return ReadResult(partial.chunks + rest.chunks, rest.end, rest.end is None and partial.more)
