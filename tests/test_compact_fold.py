"""The pure parts of compaction: folding a Redis log's entries, the memory backend's packed log."""

from __future__ import annotations

import pytest

from fastapi_streamhub import StreamHub
from fastapi_streamhub._codec import frame, unframe
from fastapi_streamhub.backends._compact import PackedLog, count_frames, fold

GEN = 1700000000000


def entry(last: int, *payloads: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    return b"%d-%d" % (GEN, last), {b"c": frame(list(payloads))}


START = (b"%d-0" % GEN, {b"s": b""})


def end(at: int) -> tuple[bytes, dict[bytes, bytes]]:
    return b"%d-%d" % (GEN, at), {b"e": b"done\n"}


def test_consecutive_entries_fold_into_one_slice_without_the_start_marker() -> None:
    log = [START, entry(1, b"ta"), entry(3, b"tb", b"jc"), entry(4, b"td"), end(5)]
    folded = fold(log, GEN)
    assert folded is not None
    assert folded.entries == 5
    assert folded.slices == [(b"%d-4" % GEN, frame([b"ta", b"tb", b"jc", b"td"]))]
    assert folded.end == (b"%d-5" % GEN, b"done\n")


def test_slices_split_at_holes_and_at_their_size_limits() -> None:
    # Chunks 4-5 are missing (lost in a failover): the hole must stay visible to readers.
    log = [entry(2, b"ta", b"tb"), entry(3, b"tc"), entry(7, b"tf", b"tg"), end(8)]
    folded = fold(log, GEN)
    assert folded is not None
    assert [s[0] for s in folded.slices] == [b"%d-3" % GEN, b"%d-7" % GEN]
    assert [len(unframe(v)) for _, v in folded.slices] == [3, 2]

    log = [START, *(entry(i, b"t%d" % i) for i in range(1, 8)), end(8)]
    by_chunks = fold(log, GEN, slice_chunks=3)
    assert by_chunks is not None
    assert [s[0][-1:] for s in by_chunks.slices] == [b"3", b"6", b"7"]
    by_bytes = fold(log, GEN, slice_bytes=9)  # each frame is 4 bytes: two per slice
    assert by_bytes is not None
    assert [len(unframe(v)) for _, v in by_bytes.slices] == [2, 2, 2, 1]


def test_a_log_not_fully_understood_is_left_alone() -> None:
    assert fold([], GEN) is None
    assert fold([START, entry(1, b"ta")], GEN) is None  # not finished
    assert fold([entry(1, b"ta"), (b"%d-2" % (GEN + 1), {b"e": b"done\n"})], GEN) is None
    assert fold([(b"%d-1" % (GEN - 1), {b"c": frame([b"ta"])}), end(2)], GEN) is None
    assert fold([(b"%d-1" % GEN, {b"c": frame([b"ta"]), b"p": b"x"}), end(2)], GEN) is None
    assert fold([(b"%d-1" % GEN, {b"q": b"?"}), end(2)], GEN) is None
    empty = fold([START, end(1)], GEN)  # no chunk: only the end marker stays
    assert empty is not None and empty.slices == [] and empty.end == (b"%d-1" % GEN, b"done\n")


def test_count_frames() -> None:
    assert count_frames(b"") == 0
    assert count_frames(frame([b"t", b"t:\r\n\x00", b"j12"])) == 3
    with pytest.raises(ValueError):
        count_frames(b"5:tab")


def test_packed_log_reads_like_the_list_it_replaces() -> None:
    items = [(7 + i, b"t" + b"x" * i) for i in range(10)]
    packed = PackedLog(items)
    assert len(packed) == 10
    assert packed[0] == items[0] and packed[-1] == items[-1]
    assert packed[3:6] == items[3:6] and packed[8:20] == items[8:]
    assert list(packed) == items
    with pytest.raises(IndexError):
        packed[10]
    with pytest.raises(TypeError):
        packed.append((17, b"tz"))
    with pytest.raises(TypeError):
        del packed[:2]
    assert len(PackedLog([])) == 0


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_compact_finished_must_be_a_bool(bad: object) -> None:
    with pytest.raises(ValueError, match="compact_finished"):
        StreamHub(compact_finished=bad)
