"""The router's endpoints as the HTTP clients call them: URLs, parameters, answers.

Free of I/O and of httpx (timeouts are httpx's ``(connect, read, write, pool)`` tuples), shared
by :class:`StreamClient` and :class:`SyncStreamClient`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import orjson

from .._types import SessionInfo, Snapshot, State, validate_session_id
from .follow import Backoff, Follow, Retrier, Target
from .sse_decode import ProtocolError

__all__ = ["Call", "Options", "info_from", "snapshot_from"]

T = TypeVar("T")


class Options:
    """What both clients hold: where the app is, how to wait, and how to build requests."""

    def __init__(
        self,
        base_url: str,
        prefix: str,
        backoff: Backoff | None,
        read_timeout: float,
        timeout: float,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if not prefix.startswith("/") and prefix != "":
            raise ValueError(f"prefix must start with '/', got {prefix!r}")
        self.base_url = base_url.rstrip("/")
        self.prefix = prefix.rstrip("/")
        self.backoff = backoff or Backoff()
        self.rng = random.Random()
        # httpx's (connect, read, write, pool) timeouts.
        self.stream_timeout = (timeout, read_timeout, timeout, timeout)
        self.timeout = timeout

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def retrier(self, what: str) -> Retrier:
        return Retrier(self.backoff, what, self.rng)

    def follow(
        self, session_id: str, after: str | None, conversation: bool = False, turns: bool = False
    ) -> Follow:
        """A stream of ``{prefix}/{session_id}`` from the start or after ``after``."""
        if conversation and turns:
            raise ValueError("conversation=True and turns=True exclude each other")
        mode: Literal["conversation", "turns"] | None = (
            "turns" if turns else "conversation" if conversation else None
        )
        target = Target(self.prefix, validate_session_id(session_id), follow=mode)
        return Follow(target, after, self.retrier(f"stream {session_id!r}"))

    def start(self, path: str, params: Any, session_id: str | None) -> Follow:
        """A stream that first asks the app route ``path``, then follows the session."""
        if session_id is None:
            # The last path segment names the session in the usual `/chat/{session_id}` route.
            session_id = path.partition("?")[0].rstrip("/").rpartition("/")[2]
            try:
                validate_session_id(session_id)
            except ValueError:
                raise ValueError(
                    f"cannot tell the session id from the path {path!r}: pass session_id="
                ) from None
        target = Target(self.prefix, validate_session_id(session_id), path, params)
        return Follow(target, None, self.retrier(f"stream {session_id!r}"))

    def endpoint(self, session_id: str, action: str = "") -> str:
        validate_session_id(session_id)
        return f"{self.prefix}/{session_id}" + (f"/{action}" if action else "")

    def status(self, session_id: str) -> Call[SessionInfo]:
        path = self.endpoint(session_id, "status")
        return Call(f"status of {session_id!r}", "GET", path, info_from)

    def snapshot(self, session_id: str) -> Call[Snapshot]:
        path = self.endpoint(session_id, "snapshot")
        return Call(f"snapshot of {session_id!r}", "GET", path, snapshot_from)

    def cancel(self, session_id: str, wait: float | None) -> Call[State]:
        path = self.endpoint(session_id, "cancel")
        if wait is None:
            return Call(f"cancel of {session_id!r}", "POST", path, _state)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 60:
            raise ValueError("wait must be a number of seconds between 0 and 60")
        # The server holds the answer up to `wait` seconds: read for longer than that.
        timeout = (self.timeout, wait + self.timeout, self.timeout, self.timeout)
        return Call(f"cancel of {session_id!r}", "POST", path, _state, {"wait": wait}, timeout)

    def delete(self, session_id: str) -> Call[None]:
        return Call(f"delete of {session_id!r}", "DELETE", self.endpoint(session_id), _nothing)

    def active(self, session_ids: Sequence[str]) -> Call[list[str]]:
        body = {"session_ids": [validate_session_id(s) for s in session_ids]}
        path = f"{self.prefix}/active"
        return Call("active sessions", "POST", path, _active, json=body)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One plain request: what it is for (error messages), what to send, how to read the JSON."""

    what: str
    method: str
    path: str
    parse: Callable[[Any], T]
    params: Any = None
    timeout: tuple[float, float, float, float] | None = None
    json: Any = None

    def result(self, content: bytes) -> T:
        """The value of a 2xx answer with this body."""
        try:
            body = orjson.loads(content) if content else None
        except orjson.JSONDecodeError:
            raise ProtocolError(f"{self.what}: the answer is not JSON") from None
        return self.parse(body)


def _state(body: Any) -> State:
    try:
        return State(body["state"])
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(f"malformed cancel answer: {body!r}") from None


def _nothing(body: Any) -> None:
    return None


def _active(body: Any) -> list[str]:
    active = body.get("active") if isinstance(body, dict) else None
    if not isinstance(active, list) or not all(isinstance(s, str) for s in active):
        raise ProtocolError(f"malformed active answer: {body!r}")
    return active


def info_from(body: Any) -> SessionInfo:
    """A :class:`SessionInfo` from the JSON of ``GET {prefix}/{sid}/status``."""
    return _parse(SessionInfo.from_dict, body, "status")


def snapshot_from(body: Any) -> Snapshot:
    """A :class:`Snapshot` from the JSON of ``GET {prefix}/{sid}/snapshot``."""
    return _parse(Snapshot.from_dict, body, "snapshot")


def _parse(read: Callable[[Any], T], body: Any, answer: str) -> T:
    # The shapes are the kernel's (_types); only the error the client raises is decided here.
    try:
        return read(body)
    except KeyError as exc:
        raise ProtocolError(f"the answer has no {exc.args[0]!r} field") from None
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"malformed {answer} answer: {exc}") from None
