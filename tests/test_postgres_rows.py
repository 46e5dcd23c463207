"""The PostgreSQL backend's page decoding (pure, no server): the one-text-chunk shortcut of
``page_of_rows`` gives exactly what ``decode_entry`` gives, the page's end, and where the byte
budget cuts a page whose rows came without their bodies (larger than their share)."""

from __future__ import annotations

import random

from fastapi_streamhub import End, State
from fastapi_streamhub._codec import decode_entry, encode_chunk
from fastapi_streamhub.backends.base import ReadResult
from fastapi_streamhub.backends.postgres_rows import Partial, complete, page_of_rows


def _frame(payload: bytes) -> bytes:
    return b"%d:%s" % (len(payload), payload)


def _item(rng: random.Random) -> object:
    return rng.choice(
        ["", "x" * rng.randint(0, 1100), "é" * rng.randint(0, 40), {"a": 1}, [1, 2], "t"]
    )


def test_the_one_text_chunk_shortcut_equals_decode_entry() -> None:
    rng = random.Random(15)
    for _ in range(2000):
        rows: list[tuple[int, int, str, bytes, int]] = []
        last = 0
        for _ in range(rng.randint(1, 8)):
            k = rng.choice([1, 1, 1, 2, 3])
            last += k
            body = b"".join(_frame(encode_chunk(_item(rng))) for _ in range(k))
            rows.append((7, last, "c", body, len(body)))
        after = (7, rng.randint(0, last))
        page = page_of_rows(rows, after, 1000, 1 << 22)
        assert isinstance(page, ReadResult)
        assert page.chunks == [c for g, n, _, b, _ in rows for c in decode_entry(g, n, b, after[1])]
        assert page.end is None and page.more is False


def _row(offset: int, text: str) -> tuple[int, int, str, bytes, int]:
    """A row of one chunk as the page statement answers it."""
    body = _frame(encode_chunk(text))
    return (1, offset, "c", body, len(body))


def test_a_page_reports_its_end_marker_and_whether_more_may_follow() -> None:
    text = _row(1, "hello")
    marker = (1, 2, "e", b"done\nfinished", 13)
    page = page_of_rows([text, marker], (1, 0), 1000, 1 << 22)
    assert isinstance(page, ReadResult)
    assert [c.data for c in page.chunks] == ["hello"]
    assert page.end == (1, End(State.DONE, "finished")) and page.more is False
    full = page_of_rows([text], (1, 0), 1, 1 << 22)
    assert isinstance(full, ReadResult) and full.more is True


def _bodiless(row: tuple[int, int, str, bytes, int]) -> tuple[int, int, str, None, int]:
    """The row as the page statement answers a row above its share: no body, its size."""
    return (*row[:3], None, row[4])


def test_rows_without_their_bodies_are_asked_for_within_the_budget() -> None:
    """Rows over their share come without a body: the page up to the budget is read again in
    full from the first of them (the first row of a page always belongs to it)."""
    small, big, big2, tail = _row(1, "a"), _row(2, "b" * 40), _row(3, "c" * 40), _row(4, "d")
    # The budget holds the small row and the first big one: those rows are asked for again.
    page = page_of_rows([small, _bodiless(big), _bodiless(big2), tail], (1, 0), 1000, 60)
    assert isinstance(page, Partial)
    assert [c.data for c in page.chunks] == ["a"] and page.more is True
    assert page.params == {"g0": 1, "o0": 1, "g2": 1, "o2": 2, "limit": 1}
    done = complete(page, [(*big[:4], 0)], (1, 0))
    assert [c.data for c in done.chunks] == ["a", "b" * 40] and done.more is True
    # The budget ends the page before a big row: no second read.
    cut = page_of_rows([small, _bodiless(big)], (1, 0), 1000, len(big[3]))
    assert isinstance(cut, ReadResult) and [c.data for c in cut.chunks] == ["a"]
    assert cut.more is True
    # A first row above the whole budget is the page alone, read from the cursor.
    alone = page_of_rows([_bodiless(big), tail], (1, 1), 1000, 10)
    assert isinstance(alone, Partial) and alone.chunks == []
    assert alone.params == {"g0": 1, "o0": 1, "g2": 1, "o2": 2, "limit": 1}
    # The last rows of the log, all within the budget: nothing more follows them.
    last = page_of_rows([_bodiless(big), tail], (1, 1), 1000, 1000)
    assert isinstance(last, Partial) and last.more is False
    ended = complete(last, [(*big[:4], 0), (1, 5, "e", b"done\n", 0)], (1, 1))
    assert ended.end == (1, End(State.DONE, None)) and ended.more is False
