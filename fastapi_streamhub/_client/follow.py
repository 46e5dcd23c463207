"""What the async and the sync HTTP clients share, free of I/O.

The two clients in :mod:`.clients` only open requests, read bytes and sleep; every decision is
made here, once: which URL and cursor to ask for, what an answer means (final error, retry, or
an event stream), what the bytes of a stream mean, and how long to wait before the next attempt.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .._errors import SessionNotFound, StreamHubError
from .._types import Chunk, End, GenerationEnd, GenerationStart, Metadata, Reset
from .sse_decode import EventParser, Item, ProtocolError, rebuild

__all__ = [
    "Backoff",
    "Follow",
    "ReconnectFailed",
    "ResponseError",
    "Retrier",
    "Target",
]

# Answers worth another attempt: the server is overloaded, restarting or behind a proxy that
# lost it. Every other 4xx is final.
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# A retry: below this is read as this, so that a dead server is not called in a tight loop.
_MIN_BASE = 0.05


class ResponseError(StreamHubError):
    """The server refused the request for good (a 4xx other than 404, or an unexpected answer).

    ``status_code`` is the HTTP status and ``detail`` the server's ``detail`` field (or the
    start of its body).
    """

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class ReconnectFailed(StreamHubError, ConnectionError):
    """The client gave up: ``Backoff.max_attempts`` or ``max_elapsed`` was reached.

    ``attempts`` failed attempts in a row; the last error is the ``__cause__``.
    """

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long the client waits between attempts, and when it gives up.

    The n-th attempt in a row waits a random time in ``[0, min(cap, base * 2**(n-1))]`` seconds
    ("full jitter"; ``jitter=False`` waits the bound itself). Once the server sent ``retry:``
    its value is the base. Any event or keep-alive resets the count. It gives up with
    :class:`ReconnectFailed` after ``max_attempts`` failures in a row or ``max_elapsed`` seconds
    without progress, whichever comes first (None: no such limit; not both).
    """

    base: float = 1.0
    cap: float = 15.0
    max_attempts: int | None = 20
    max_elapsed: float | None = 120.0
    jitter: bool = True

    def __post_init__(self) -> None:
        for name in ("base", "cap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"Backoff.{name} must be a positive number, got {value!r}")
        attempts, elapsed = self.max_attempts, self.max_elapsed
        if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int)):
            raise ValueError(f"Backoff.max_attempts must be an integer, got {attempts!r}")
        if attempts is not None and attempts < 1:
            raise ValueError("Backoff.max_attempts must be at least 1")
        if elapsed is not None and not elapsed > 0:
            raise ValueError("Backoff.max_elapsed must be a positive number of seconds")
        if attempts is None and elapsed is None:
            raise ValueError("Backoff needs max_attempts or max_elapsed: retrying must end")


class Retrier:
    """The attempts of one operation: counts failures, computes waits, gives up."""

    def __init__(self, policy: Backoff, what: str, rng: random.Random) -> None:
        self.policy = policy
        self.what = what
        self.rng = rng
        self.server_base: float | None = None
        self.attempts = 0
        self.error: BaseException | None = None
        self._since: float | None = None
        self._at_least = 0.0

    def progress(self) -> None:
        """The server answered usefully: the next failure counts from one again."""
        self.attempts = 0
        self._since = None

    def failed(self, error: BaseException, *, retry_after: float | None = None) -> None:
        """Record a failed attempt (a connection error, a retryable status, a dropped stream)."""
        self.error = error
        self.attempts += 1
        if self._since is None:
            self._since = time.monotonic()
        self._at_least = retry_after or 0.0

    def waits(self) -> Iterator[float]:
        """Seconds to sleep before each attempt: 0 before the first, then :meth:`pause`'s."""
        yield 0.0
        while True:
            yield self.pause()

    def pause(self) -> float:
        """Seconds to wait before the next attempt; raises ReconnectFailed when out of budget."""
        policy = self.policy
        elapsed = time.monotonic() - (self._since or time.monotonic())
        if (policy.max_attempts is not None and self.attempts >= policy.max_attempts) or (
            policy.max_elapsed is not None and elapsed >= policy.max_elapsed
        ):
            raise ReconnectFailed(
                f"{self.what}: gave up after {self.attempts} failed attempts in "
                f"{elapsed:.1f}s: {self.error}",
                self.attempts,
            ) from self.error
        base = policy.base if self.server_base is None else self.server_base
        bound = min(policy.cap, base * 2 ** (self.attempts - 1))
        delay = self.rng.uniform(0, bound) if policy.jitter else bound
        return max(delay, min(self._at_least, policy.cap))

    def answered(self, status: int, headers: Any, body: bytes, *, not_found: bool) -> None:
        """Judge a non-2xx answer: raise the final error, or record a retryable one.

        ``not_found``: a 404 means the session is unknown (SessionNotFound), not a wrong URL.
        """
        detail = _detail(body)
        if status == 404 and not_found:
            raise SessionNotFound(detail)
        if status not in _RETRY_STATUS:
            raise ResponseError(status, detail)
        self.failed(ResponseError(status, detail), retry_after=_seconds(headers.get("retry-after")))


def _detail(body: bytes) -> str:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip() or "(empty answer)"
    detail = value.get("detail") if isinstance(value, dict) else value
    return detail if isinstance(detail, str) else orjson.dumps(detail).decode()


def _seconds(value: str | None) -> float | None:
    # Retry-After in seconds; the HTTP-date form is ignored (the backoff still applies).
    return float(value) if value is not None and value.strip().isdigit() else None


@dataclass(frozen=True, slots=True)
class Target:
    """Where a stream comes from: the router's ``GET {prefix}/{sid}``, or first an app route."""

    prefix: str
    session_id: str
    path: str | None = None  # an app route returning ResumableStreamingResponse
    params: Any = None
    # ``?follow=conversation`` (on across generations) or ``turns`` (their markers only)
    follow: Literal["conversation", "turns"] | None = None


class Follow:
    """The state of one followed stream across its connections.

    The first request goes to ``target.path`` when set (an app route, which may start the
    producer), else to ``{prefix}/{sid}``; once a stream was accepted, every reconnect goes to
    ``{prefix}/{sid}`` with ``Last-Event-ID`` set to the last chunk's cursor. Reconnecting to
    the router, not the app route, means a reconnect never starts a new generation by itself
    (an app route would, on a session whose producer died).
    """

    def __init__(self, target: Target, after: str | None, retrier: Retrier) -> None:
        self.target = target
        self.retrier = retrier
        self.cursor = after
        self.metadata: Any = None
        self.end: End | None = None
        self.connections = 0
        self._texts: list[str] = []
        self._parser = EventParser()
        self._app_route = target.path is not None
        self._has_metadata = False

    @property
    def text(self) -> str:
        """The text chunks received since the start, the last reset or (in a conversation)
        the last generation's start, joined."""
        return "".join(self._texts)

    def request(self) -> tuple[str, Any, dict[str, str]]:
        """Path, query parameters and headers of the next attempt."""
        self.connections += 1
        self._parser = EventParser()
        headers = {"accept": "text/event-stream", "cache-control": "no-cache"}
        if self.cursor is not None:
            headers["last-event-id"] = self.cursor
        if self._app_route:
            return self.target.path or "", self.target.params, headers
        params = {"follow": self.target.follow} if self.target.follow else None
        return f"{self.target.prefix}/{self.target.session_id}", params, headers

    def accepts(self, status: int, headers: Any) -> bool:
        """True when an event stream follows; False when the caller must read the body and call
        :meth:`refused`. Raises ProtocolError for a 2xx that is not an event stream."""
        if status != 200:
            return False
        content_type = headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise ProtocolError(
                f"expected an event stream, got {content_type or 'no content type'}"
            )
        self._app_route = False
        return True

    def refused(self, status: int, headers: Any, body: bytes) -> None:
        """A non-200 answer: raise the final error or record a retryable one."""
        self.retrier.answered(status, headers, body, not_found=not self._app_route)

    def feed(self, data: bytes) -> list[Item]:
        """The items that ``data`` completes, the client's state updated."""
        return self._items(self._parser.feed(data))

    def closed(self) -> list[Item]:
        """The server ended the response: a stream cut before ``end`` counts as a failure."""
        items = self._items(self._parser.close())
        if self.end is None:
            self.retrier.failed(ConnectionError("the server closed the stream before its end"))
        return items

    def _items(self, events: list[Any]) -> list[Item]:
        parser, retrier = self._parser, self.retrier
        if parser.retry is not None:
            retrier.server_base = max(parser.retry / 1000, _MIN_BASE)
        if parser.activity:
            parser.activity = 0
            retrier.progress()
        out: list[Item] = []
        for event in events:
            item = rebuild(event)
            if isinstance(item, Chunk):
                self.cursor = item.id
                if item.kind == "text" and item.event is None:
                    self._texts.append(item.data)
            elif isinstance(item, Metadata):
                # Sent again on every connection: pass on changes only.
                if self._has_metadata and item.value == self.metadata:
                    continue
                self._has_metadata, self.metadata = True, item.value
            elif isinstance(item, GenerationStart | GenerationEnd):
                # A conversation's next turn, or the end of one: the stream goes on.
                offset = item.offset if isinstance(item, GenerationEnd) else 0
                self.cursor = f"{item.generation}-{offset}"
                if isinstance(item, GenerationStart):
                    self._texts.clear()
                    self._has_metadata = False
            elif isinstance(item, Reset):
                # The replay starts over from what is stored: a reconnect before the next chunk
                # must ask for the start too, not for a cursor the server cannot honour.
                self.cursor = None
                self._texts.clear()
            else:
                self.end = item
                out.append(item)
                break
            out.append(item)
        return out
