"""Fuzzing: the HTTP surface of a real uvicorn app, and the chunk -> store -> SSE pipeline.

- HTTP: hypothesis builds requests from the app's own OpenAPI document (every operation, its
  path, query and header parameters, filled with valid, hostile and random values) plus
  free-form paths, methods, headers and bodies under ``/streams``; every answer must be below
  500, an error must be JSON ``{"detail": ...}`` without a traceback, an event stream must end
  with exactly one ``end``, and the server must log no error. Bounded: about 250 requests.
- Pipeline: any item a generator may yield goes through the stored-payload codec and the SSE
  encoder and comes back exactly through the spec-faithful parser (incrementally, split at any
  byte), or is refused with ``InvalidChunk``; event names and ids cannot be forged.
- Cursors: parsing is total (a cursor or ``InvalidCursor``), and printing then parsing is
  the identity.

schemathesis was not used: it pulls in a large dependency tree for what these ~100 lines do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.apps import AppServer
from support.redis_server import RedisServer
from support.security import LEAK_MARKERS, app_server
from support.sids import new_sid
from support.sse_client import SSEParser, as_rebuilt, parse_sse, rebuild_event
from test_http import check_log

from fastapi_streamhub import Cursor, Event, InvalidChunk, InvalidCursor
from fastapi_streamhub._codec import RESERVED_EVENTS, decode_payload, encode_chunk
from fastapi_streamhub._http.sse import encode_chunk as sse_encode_chunk

_U64 = 2**64 - 1

# --------------------------------------------------------------------------- HTTP fuzz

HOSTILE_PIECES = [
    "",
    " ",
    "..",
    ".",
    "/",
    "%",
    "%00",
    "%2F",
    "*",
    "?",
    "#",
    "{x}",
    "\n",
    "\r\n",
    "\t",
    "\x00",
    "\x7f",
    "é",
    "\u2028",
    "\ufeff",
    "🌍",
    "a" * 201,
    "1-1",
    "-1",
    "18446744073709551616",
    "99999999999999999999999999",
    "active",
    "status",
    "cancel",
]
pieces = st.sampled_from(HOSTILE_PIECES)
valid_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,12}", fullmatch=True)
ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
any_text = st.text(max_size=30)
hostile_text = st.lists(st.one_of(pieces, any_text), max_size=4).map("".join)
values = st.one_of(valid_ids, hostile_text, st.integers(-(2**70), 2**70).map(str))
# Header values: latin-1 without CR/LF/NUL (httpx refuses to send the rest).
header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)
METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]
bodies = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.recursive(
        st.none() | st.booleans() | st.integers() | hostile_text,
        lambda c: st.lists(c, max_size=4) | st.dictionaries(hostile_text, c, max_size=4),
        max_leaves=12,
    ).map(lambda v: json.dumps(v).encode()),
    st.lists(values, max_size=5).map(lambda ids: json.dumps({"session_ids": ids}).encode()),
)


def _encode_segment(value: str) -> str:
    return quote(value, safe="")


@st.composite
def openapi_requests(draw: st.DrawFn, doc: dict[str, Any], known: list[str]) -> dict[str, Any]:
    """One request for an operation of the document, parameters drawn from its schema."""
    # The library's router only: the test app's own routes start generators.
    operations = [
        (path, method.upper(), op)
        for path, ops in sorted(doc["paths"].items())
        if path.startswith("/streams/")
        for method, op in sorted(ops.items())
    ]
    path, method, op = draw(st.sampled_from(operations))
    url = path
    params: dict[str, str] = {}
    headers: dict[str, str] = {}
    for param in op.get("parameters", []):
        name, where = param["name"], param["in"]
        if where == "path":
            value = draw(st.one_of(st.sampled_from(known), valid_ids, values))
            url = url.replace("{" + name + "}", _encode_segment(value) or "%20")
        elif draw(st.booleans()):
            value = draw(st.one_of(values, st.sampled_from(["1-1", "0", "1.5", "nan", ""])))
            if where == "query":
                params[name] = value
            elif where == "header":
                headers[name] = draw(header_values)
    body = draw(bodies) if "requestBody" in op else None
    return {"method": method, "url": url, "params": params, "headers": headers, "content": body}


@st.composite
def free_requests(draw: st.DrawFn, known: list[str]) -> dict[str, Any]:
    """Anything under /streams: random segments, methods, query strings, headers, bodies."""
    segments = draw(
        st.lists(st.one_of(st.sampled_from(known), valid_ids, values), min_size=0, max_size=3)
    )
    raw = draw(st.booleans())  # unencoded segments: whatever httpx sends for them
    url = "/streams/" + "/".join(s if raw else _encode_segment(s) for s in segments)
    params = draw(
        st.dictionaries(st.sampled_from(["last_event_id", "wait", "x"]), values, max_size=2)
    )
    headers = draw(
        st.dictionaries(
            st.sampled_from(["last-event-id", "content-type", "x-anything", "accept"]),
            header_values,
            max_size=2,
        )
    )
    return {
        "method": draw(st.sampled_from(METHODS)),
        "url": url,
        "params": params,
        "headers": headers,
        "content": draw(bodies),
    }


def check_answer(request: dict[str, Any], resp: httpx.Response) -> None:
    where = (request["method"], resp.request.url, resp.status_code)
    assert resp.status_code < 500, (*where, resp.text[:500])
    text = resp.content.decode("utf-8", errors="replace")
    for marker in LEAK_MARKERS:
        assert marker not in text, (*where, text[:500])
    ctype = resp.headers.get("content-type", "")
    if resp.status_code >= 400 and request["method"] != "HEAD":
        assert ctype.startswith("application/json"), (*where, ctype)
        assert resp.json().get("detail"), (*where, text[:300])
    if request["method"] == "HEAD":
        # The headers a GET would get and no body (RFC 9110), an event stream's included.
        assert resp.content == b"", (*where, text[:300])
    elif ctype.startswith("text/event-stream"):
        ends = [e for kind, e in parse_sse(resp.content) if kind == "event" and e.type == "end"]
        assert len(ends) == 1, (*where, text[-300:])


@pytest.fixture(scope="module")
def fuzz_server(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    log_dir: Path = tmp_path_factory.mktemp("fuzz-apps")
    with app_server("fuzz", redis_server, log_dir) as srv:
        yield srv


def _fuzz(server: AppServer, strategy: Any, examples: int) -> None:
    mark = len(server.log())
    # Every session the fuzz can reach is finished, so every answer, event streams included,
    # ends at once; the timeout turns a hang into a failure instead of a stuck run.
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as client:
        known = []
        for _ in range(2):
            sid = new_sid("fz")
            with client.stream("GET", f"/slow/{sid}", params={"n": 3}) as resp:
                assert resp.status_code == 200
                assert b"event: end" in resp.read()
            known.append(sid)
        doc = client.get("/openapi.json").json()

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(request=strategy(doc, known))
        def run(request: dict[str, Any]) -> None:
            try:
                resp = client.request(**request)
            except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
                return  # httpx refused to build the request: nothing reached the server
            check_answer(request, resp)

        run()
    assert server.alive(), server.log()[mark:]
    check_log(server.name, server.log()[mark:])


@pytest.mark.timeout(120)
def test_fuzz_openapi_operations(fuzz_server: AppServer, redis_url: str) -> None:
    _fuzz(fuzz_server, openapi_requests, 150)


@pytest.mark.timeout(120)
def test_fuzz_free_form_requests(fuzz_server: AppServer, redis_url: str) -> None:
    _fuzz(fuzz_server, lambda doc, known: free_requests(known), 120)


# --------------------------------------------------------------------------- pipeline fuzz

SSE_PIECES = [
    "\n",
    "\r",
    "\r\n",
    "\0",
    ":",
    " ",
    "data: ",
    "id: 1-1",
    "event: end",
    "retry: 5",
    "\ufeff",
    "\u2028",
    "\x85",
    "é",
    "🌍",
    "\ud800",
    "\udfff",
]
texts = st.one_of(
    st.text(max_size=40),  # lone surrogates included: they must be refused, not mangled
    st.lists(st.sampled_from(SSE_PIECES) | st.text(max_size=3), max_size=10).map("".join),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(texts, c, max_size=4),
    max_leaves=10,
)
names = st.one_of(
    st.sampled_from(sorted(RESERVED_EVENTS)),
    st.from_regex(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}", fullmatch=True),
    st.text(max_size=70),
    st.lists(st.sampled_from(SSE_PIECES) | st.text(max_size=3), max_size=5).map("".join),
)
items = st.one_of(
    texts,
    st.binary(max_size=30),
    texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
    json_values.filter(lambda v: not isinstance(v, str)),
    st.builds(Event, json_values, names),
)
cursors = st.builds(Cursor, st.integers(1, _U64), st.integers(1, _U64))


def _expected(item: Any) -> tuple[str, Any]:
    if isinstance(item, bytes):
        return ("text", item.decode("utf-8"))
    return as_rebuilt(item)


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=300, deadline=None, database=None)
@given(item=items, cursor=cursors, splits=st.lists(st.integers(0, 10_000), max_size=6))
@example(item="a\r\nid: 9-9\r\n\r\nevent: end\r\n", cursor=Cursor(1, 1), splits=[3, 4])
@example(item=Event("x", "end"), cursor=Cursor(1, 1), splits=[])
@example(item=Event("x", "a\nid: 1-1"), cursor=Cursor(1, 1), splits=[])
@example(item="\ud800", cursor=Cursor(1, 1), splits=[])
@example(item=b"\xed\xa0\x80", cursor=Cursor(1, 1), splits=[])
def test_any_item_round_trips_through_store_and_sse_or_is_refused(
    item: Any, cursor: Cursor, splits: list[int]
) -> None:
    try:
        payload = encode_chunk(item)
    except InvalidChunk:
        # Refused only for a reason: invalid UTF-8/surrogates, or a bad event name.
        if isinstance(item, Event):
            assert (
                item.event in RESERVED_EVENTS
                or not _valid_name(item.event)
                or not _encodable(item.data)
            )
        elif isinstance(item, bytes):
            with pytest.raises(UnicodeDecodeError):
                item.decode("utf-8")
        else:
            assert not _encodable(item)
        return
    chunk = decode_payload(payload, cursor)
    wire = sse_encode_chunk(chunk)
    # Split the bytes anywhere (even inside a UTF-8 sequence) as a network would.
    parser = SSEParser()
    records: list[tuple[str, Any]] = []
    bounds = sorted({s % (len(wire) + 1) for s in splits})
    start = 0
    for end in [*bounds, len(wire)]:
        records += parser.feed(wire[start:end])
        start = end
    records += parser.feed(b"", final=True)
    events = [r for kind, r in records if kind == "event"]
    assert [kind for kind, _ in records] == ["event"]
    (event,) = events
    assert event.own_id == str(cursor) and parser.last_event_id == str(cursor)
    if isinstance(item, Event):
        assert event.type == item.event  # the name is the producer's, never a forged one
    else:
        assert event.type in ("message", "json")
    rebuilt = rebuild_event(event)
    assert rebuilt is not None
    assert (rebuilt.kind, _strict(rebuilt.value)) == _strict_pair(_expected(item))


def _valid_name(name: Any) -> bool:
    return (
        isinstance(name, str) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}", name) is not None
    )


def _strict(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ("list", [_strict(v) for v in value])
    if isinstance(value, dict):
        return ("dict", {k: _strict(v) for k, v in value.items()})
    return (type(value).__name__, value)


def _strict_pair(pair: tuple[str, Any]) -> tuple[str, Any]:
    return (pair[0], _strict(pair[1]))


@settings(max_examples=300, deadline=None, database=None)
@given(
    text=st.one_of(
        st.text(max_size=50), st.from_regex(r"-?[0-9]{1,25}-?-?[0-9]{0,25}", fullmatch=True)
    )
)
@example(text="1-0")
@example(text=f"{_U64}-{_U64}")
@example(text=f"{_U64 + 1}-0")
@example(text="0-0")
def test_cursor_parsing_is_total_and_exact(text: str) -> None:
    try:
        cursor = Cursor.parse(text)
    except InvalidCursor:
        return
    assert str(cursor) == text
    assert 1 <= cursor.generation <= _U64 and 0 <= cursor.offset <= _U64


@settings(max_examples=200, deadline=None, database=None)
@given(
    a=st.tuples(st.integers(1, _U64), st.integers(0, _U64)),
    b=st.tuples(st.integers(1, _U64), st.integers(0, _U64)),
)
def test_cursor_text_round_trips_and_orders_like_its_numbers(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    ca, cb = Cursor(*a), Cursor(*b)
    assert Cursor.parse(str(ca)) == ca
    assert (ca < cb) == (a < b) and (ca == cb) == (a == b)


@settings(max_examples=100, deadline=None, database=None)
@given(value=st.one_of(st.integers(), st.floats(), st.binary(), st.none(), st.lists(st.integers())))
def test_cursor_parse_refuses_non_strings(value: Any) -> None:
    with pytest.raises(InvalidCursor):
        Cursor.parse(value)
