"""The Durable Streams protocol's pure parts (fastapi_streamhub/_http/durable/protocol.py)."""

from __future__ import annotations

import random

import pytest

from fastapi_streamhub._http.durable.protocol import (
    CURSOR_EPOCH,
    CURSOR_INTERVAL,
    OFFSET_ZERO,
    ProtocolError,
    control_event,
    data_event,
    etag,
    format_offset,
    is_binary,
    join_json,
    json_messages,
    normalize_type,
    parse_expires_at,
    parse_offset,
    parse_producer,
    parse_sub_offset,
    parse_ttl,
    stream_cursor,
)
from fastapi_streamhub.backends._ds import DsOutcome, DsProducer, fork_cut, producer_verdict


def test_offsets_are_fixed_width_and_sort_as_strings() -> None:
    assert format_offset(0) == OFFSET_ZERO
    offsets = [format_offset(n) for n in (0, 9, 10, 99, 12345678)]
    assert offsets == sorted(offsets)
    assert parse_offset(format_offset(42)) == 42
    assert parse_offset(None) == parse_offset("-1") == 0
    assert parse_offset("now") is None


@pytest.mark.parametrize(
    "bad", ["", "abc", "1", "0000000000000000_000000000000001", "0000000000000001_0000000000000000"]
)
def test_malformed_offsets_are_refused(bad: str) -> None:
    with pytest.raises(ProtocolError):
        parse_offset(bad)


@pytest.mark.parametrize("bad", ["-1", "+5", "05", "1.0", "3e3", "", " 5"])
def test_ttl_grammar(bad: str) -> None:
    assert parse_ttl("0") == 0 and parse_ttl("3600") == 3600
    with pytest.raises(ProtocolError):
        parse_ttl(bad)
    with pytest.raises(ProtocolError):
        parse_sub_offset(bad)


def test_expires_at_needs_a_zone() -> None:
    assert parse_expires_at("2030-01-01T00:00:00Z") == 1893456000000
    assert parse_expires_at("2030-01-01T01:00:00+01:00") == 1893456000000
    for bad in ("2030-01-01T00:00:00", "2030-01-01", "tomorrow"):
        with pytest.raises(ProtocolError):
            parse_expires_at(bad)


def test_producer_headers_go_together() -> None:
    assert parse_producer(None, None, None) is None
    assert parse_producer("p", "1", "2") == DsProducer("p", 1, 2)
    for bad in (("p", "1", None), ("", "1", "2"), ("p", "-1", "0"), ("p", str(2**53), "0")):
        with pytest.raises(ProtocolError):
            parse_producer(*bad)


def test_producer_verdicts() -> None:
    new = producer_verdict(None, DsProducer("p", 0, 0))
    assert new == (None, 0, 0)
    assert producer_verdict(None, DsProducer("p", 0, 1))[0] is DsOutcome.SEQ_GAP
    assert producer_verdict((2, 5), DsProducer("p", 1, 6)) == (DsOutcome.STALE_EPOCH, 2, 5)
    assert producer_verdict((2, 5), DsProducer("p", 3, 1))[0] is DsOutcome.BAD_EPOCH_SEQ
    assert producer_verdict((2, 5), DsProducer("p", 3, 0)) == (None, 3, 0)
    assert producer_verdict((2, 5), DsProducer("p", 2, 5)) == (DsOutcome.DUPLICATE, 2, 5)
    assert producer_verdict((2, 5), DsProducer("p", 2, 7)) == (DsOutcome.SEQ_GAP, 2, 6)
    assert producer_verdict((2, 5), DsProducer("p", 2, 6)) == (None, 2, 6)


def test_cursor_is_the_interval_and_moves_past_an_echo() -> None:
    now = CURSOR_EPOCH + 1000 * CURSOR_INTERVAL + 3
    assert stream_cursor(now, None) == "1000"
    assert stream_cursor(now, "999") == "1000"
    rng = random.Random(7)
    for echoed in ("1000", "1500"):
        assert int(stream_cursor(now, echoed, rng)) > int(echoed)


def test_etag_names_the_range_and_the_close() -> None:
    assert etag("s", 0, 5, False) == f'"s:{OFFSET_ZERO}:{format_offset(5)}"'
    assert etag("s", 0, 5, True).endswith(':c"')


def test_json_messages_flatten_one_level_and_keep_big_integers() -> None:
    assert json_messages(b'[{"a": 1}, [2, 3]]', allow_empty=False) == b'{"a":1}\n[2,3]\n'
    assert json_messages(b"18446744073709551617", allow_empty=False) == b"18446744073709551617\n"
    assert json_messages(b'"line\\nbreak"', allow_empty=False) == b'"line\\nbreak"\n'
    assert json_messages(b"[]", allow_empty=True) == b""
    for bad in (b"[]", b"{", b"NaN", b"\xff"):
        with pytest.raises(ProtocolError):
            json_messages(bad, allow_empty=False)
    assert join_json(b'{"a":1}\n[2,3]\n') == b'[{"a":1},[2,3]]'
    assert join_json(b"") == b"[]"


def test_fork_cut_counts_bytes_or_messages() -> None:
    assert fork_cut(b"hello", False, 3) == 3
    assert fork_cut(b"hi", False, 5) is None
    assert fork_cut(b"1\n22\n3\n", True, 2) == 5
    assert fork_cut(b"1\n", True, 2) is None


def test_sse_events_split_every_line_break() -> None:
    event = data_event(b"a\rb\r\nc\nevent: control", "text/plain")
    assert event == b"event: data\ndata:a\ndata:b\ndata:c\ndata:event: control\n\n"
    assert data_event(b"\x00\xff", "application/octet-stream") == b"event: data\ndata:AP8=\n\n"
    assert data_event(b"1\n2\n", "application/json") == b"event: data\ndata:[1,2]\n\n"
    closed = control_event(5, "9", up_to_date=True, closed=True)
    assert b'"streamClosed":true' in closed and b"streamCursor" not in closed


def test_content_types() -> None:
    assert normalize_type(None) == "application/octet-stream"
    assert normalize_type("Application/JSON; charset=utf-8") == "application/json;charset=utf-8"
    assert is_binary("application/octet-stream") and not is_binary("text/plain")
    assert not is_binary("application/json")
