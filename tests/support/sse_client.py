"""A spec-faithful, incremental ``text/event-stream`` parser and an httpx SSE reader for tests.

The parser follows the WHATWG "parse an event stream" / "interpret an event stream" algorithm
(https://html.spec.whatwg.org/multipage/server-sent-events.html): UTF-8 decoding with one
leading BOM stripped, lines split on CRLF, CR or LF (a CR at the end of a network chunk waits
for the next one, it may be half of a CRLF), ``:`` lines are comments, one space after the
field's colon is stripped, ``data`` lines are joined with LF, ``id`` persists across events
(ignored if it holds a NUL), ``retry`` only if all ASCII digits, a blank line dispatches, an
empty data buffer dispatches nothing, and an unterminated event at EOF is discarded.

httpx's ``aiter_lines`` is not used on purpose: it splits lines its own way. Bytes are fed to
the parser as they arrive.

:func:`rebuild` then applies the client rules documented in ``fastapi_streamhub._http.sse`` to turn
events back into the chunks the producer yielded.
"""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

CONTROL_EVENTS = ("metadata", "reset", "end")


@dataclass
class SSEEvent:
    type: str
    data: str
    last_event_id: str
    # The id field of this event's own block, if any (the spec's last_event_id is inherited).
    own_id: str | None = None


class SSEParser:
    """Incremental parser: ``feed(bytes)`` returns the records completed by those bytes.

    A record is ``("event", SSEEvent)``, ``("comment", text)`` or ``("retry", ms)``.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._buf = ""
        self._started = False
        self._data: list[str] = []
        self._type = ""
        self._own_id: str | None = None
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, raw: bytes, *, final: bool = False) -> list[tuple[str, Any]]:
        text = self._decoder.decode(raw, final)
        if not self._started and text:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        self._buf += text
        out: list[tuple[str, Any]] = []
        buf = self._buf
        pos = 0
        while True:
            cr = buf.find("\r", pos)
            lf = buf.find("\n", pos)
            if cr < 0 and lf < 0:
                break
            if cr >= 0 and (lf < 0 or cr < lf):
                if cr == len(buf) - 1 and not final:
                    break  # maybe the first half of a CRLF
                line = buf[pos:cr]
                pos = cr + 2 if buf.startswith("\r\n", cr) else cr + 1
            else:
                line = buf[pos:lf]
                pos = lf + 1
            self._line(line, out)
        self._buf = buf[pos:]
        if final:
            # The end of the stream discards an incomplete event.
            self._buf = ""
            self._data, self._type, self._own_id = [], "", None
        return out

    def _line(self, line: str, out: list[tuple[str, Any]]) -> None:
        if line == "":
            self._dispatch(out)
            return
        if line.startswith(":"):
            out.append(("comment", line[1:]))
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
                self._own_id = value
        elif name == "retry" and value and all("0" <= c <= "9" for c in value):
            self.retry = int(value)
            out.append(("retry", int(value)))
        # any other field is ignored

    def _dispatch(self, out: list[tuple[str, Any]]) -> None:
        data, etype, own_id = self._data, self._type, self._own_id
        self._data, self._type, self._own_id = [], "", None
        if not data:
            return
        out.append(
            ("event", SSEEvent(etype or "message", "\n".join(data), self.last_event_id, own_id))
        )


def parse_sse(raw: bytes) -> list[tuple[str, Any]]:
    """Parse a whole body at once."""
    return SSEParser().feed(raw, final=True)


@dataclass(frozen=True)
class Rebuilt:
    """One chunk as the producer yielded it: ``kind`` is ``text``, ``json`` or an event name."""

    kind: str
    value: Any
    id: str | None


def rebuild_event(event: SSEEvent) -> Rebuilt | None:
    """The chunk an event carries, or None for metadata/reset/end."""
    if event.type in CONTROL_EVENTS:
        return None
    if event.type == "message":
        return Rebuilt("text", event.data, event.own_id)
    value = json.loads(event.data)
    if event.type == "json":
        return Rebuilt("text" if isinstance(value, str) else "json", value, event.own_id)
    return Rebuilt(event.type, value, event.own_id)


def as_rebuilt(item: Any) -> tuple[str, Any]:
    """What a generator item must come back as: ``(kind, value)``."""
    from fastapi_streamhub import Event

    if isinstance(item, Event):
        return (item.event, item.data)
    if isinstance(item, str):
        return ("text", item)
    return ("json", json.loads(json.dumps(item)))


def cursor_key(cursor: str) -> tuple[int, int]:
    """Order of ``<generation>-<offset>`` cursors (only to check they increase)."""
    generation, _, offset = cursor.partition("-")
    return int(generation), int(offset)


@dataclass
class SSEResult:
    """Everything one SSE response delivered, in arrival order."""

    status_code: int | None = None
    headers: httpx.Headers | None = None
    body: bytes = b""  # the raw bytes (an SSE body, or an error's JSON)
    records: list[tuple[str, Any]] = field(default_factory=list)
    eof: bool = False  # the server ended the response

    @property
    def events(self) -> list[SSEEvent]:
        return [r for kind, r in self.records if kind == "event"]

    @property
    def comments(self) -> list[str]:
        return [r for kind, r in self.records if kind == "comment"]

    @property
    def retries(self) -> list[int]:
        return [r for kind, r in self.records if kind == "retry"]

    @property
    def chunks(self) -> list[Rebuilt]:
        return [c for c in map(rebuild_event, self.events) if c is not None]

    @property
    def values(self) -> list[tuple[str, Any]]:
        return [(c.kind, c.value) for c in self.chunks]

    @property
    def text(self) -> str:
        return "".join(c.value for c in self.chunks if c.kind == "text")

    @property
    def ids(self) -> list[str]:
        return [e.own_id for e in self.events if e.own_id is not None]

    @property
    def last_id(self) -> str | None:
        ids = self.ids
        return ids[-1] if ids else None

    def control(self, name: str) -> list[Any]:
        return [json.loads(e.data) for e in self.events if e.type == name]

    @property
    def ends(self) -> list[dict[str, Any]]:
        return self.control("end")

    @property
    def resets(self) -> list[dict[str, Any]]:
        return self.control("reset")

    def json(self) -> Any:
        return json.loads(self.body)


async def read_sse(
    client: httpx.AsyncClient,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    result: SSEResult | None = None,
    stop_after_chunks: int | None = None,
    within: float = 20.0,
) -> SSEResult:
    """GET ``url`` and parse the event stream until the server ends it (``eof``), or until
    ``stop_after_chunks`` chunks arrived (then disconnect). Fills ``result`` as it goes, so a
    concurrent task can watch the progress. Raises TimeoutError after ``within`` seconds."""
    res = result if result is not None else SSEResult()
    parser = SSEParser()
    with anyio.fail_after(within):
        async with client.stream("GET", url, headers=headers, params=params) as response:
            res.status_code = response.status_code
            res.headers = response.headers
            body = bytearray()
            async for raw in response.aiter_raw():
                body += raw
                res.body = bytes(body)
                if response.status_code != 200:
                    continue
                res.records.extend(parser.feed(raw))
                if stop_after_chunks is not None and len(res.chunks) >= stop_after_chunks:
                    return res
            if response.status_code == 200:
                res.records.extend(parser.feed(b"", final=True))
            res.eof = True
    return res


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]],
    *,
    within: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns a truthy value; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await anyio.sleep(interval)
