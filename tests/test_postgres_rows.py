"""The PostgreSQL backend's page decoding (pure, no server): the one-text-chunk shortcut of
``page_of_rows`` gives exactly what ``decode_entry`` gives, and the page's end and cut."""

from __future__ import annotations

import random

from fastapi_streamhub import End, State
from fastapi_streamhub._codec import decode_entry, encode_chunk
from fastapi_streamhub.backends.postgres_rows import page_of_rows


def _frame(payload: bytes) -> bytes:
    return b"%d:%s" % (len(payload), payload)


def _item(rng: random.Random) -> object:
    return rng.choice(
        ["", "x" * rng.randint(0, 1100), "é" * rng.randint(0, 40), {"a": 1}, [1, 2], "t"]
    )


def test_the_one_text_chunk_shortcut_equals_decode_entry() -> None:
    rng = random.Random(15)
    for _ in range(2000):
        rows: list[tuple[int, int, str, bytes]] = []
        last = 0
        for _ in range(rng.randint(1, 8)):
            k = rng.choice([1, 1, 1, 2, 3])
            last += k
            body = b"".join(_frame(encode_chunk(_item(rng))) for _ in range(k))
            rows.append((7, last, "c", body))
        after = (7, rng.randint(0, last))
        page = page_of_rows(rows, after, 1000)
        assert page.chunks == [c for g, n, _, b in rows for c in decode_entry(g, n, b, after[1])]
        assert page.end is None and page.more is False


def test_a_page_reports_its_end_marker_and_a_cut() -> None:
    text = (1, 1, "c", _frame(encode_chunk("hello")))
    marker = (1, 2, "e", b"done\nfinished")
    page = page_of_rows([text, marker], (1, 0), 1000)
    assert [c.data for c in page.chunks] == ["hello"]
    assert page.end == (1, End(State.DONE, "finished")) and page.more is False
    cut = page_of_rows([text, (1, 2, "c", None)], (1, 0), 1000)
    assert [c.data for c in cut.chunks] == ["hello"] and cut.more is True
    full = page_of_rows([text], (1, 0), 1)
    assert full.more is True
