"""``python -m fastapi_streamhub`` (also ``streamhub``): look at and act on sessions in Redis
or PostgreSQL.

Commands: ``status SID``, ``tail SID [--from CURSOR]``, ``cancel SID [--wait S]``, ``delete SID``
and ``top``. Each builds a :class:`StreamHub` on ``--redis`` (default ``$STREAMHUB_REDIS_URL``,
else ``redis://127.0.0.1:6379/0``; a ``postgresql://`` or ``postgres://`` URL works too) under
``--prefix`` and uses its public API inside ``async with hub``; ``top`` also lists the sessions
(see :mod:`.top`). ``postgres-schema`` prints the SQL that creates the PostgreSQL schema, for a
DBA who creates it by hand; it connects to nothing. httpx is not needed.

Errors are one line on stderr, never a traceback. Exit codes: see :data:`EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

import anyio
import orjson
from redis.exceptions import RedisError

from .._errors import BackendUnavailable, SessionNotFound, StreamHubError
from .._hub import StreamHub
from .._types import Batch, Chunk, Cursor, End, Metadata, Reset, State

__all__ = ["EXIT_CODES", "main"]

OK, ENDED_NOT_DONE, USAGE, NOT_FOUND, UNAVAILABLE, INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_CODES = {
    OK: "success (tail: the stream ended done; cancel: the stream is finished, or the signal was "
    "sent when no --wait was given)",
    ENDED_NOT_DONE: "tail: the stream ended failed or cancelled; cancel --wait: still active "
    "when the wait ran out",
    USAGE: "usage error (bad option, session id, cursor or URL)",
    NOT_FOUND: "the session does not exist",
    UNAVAILABLE: "the store (Redis or PostgreSQL) could not be reached within --timeout",
    INTERRUPTED: "interrupted (Ctrl-C)",
}
DEFAULT_URL = "redis://127.0.0.1:6379/0"


class _Exit(Exception):
    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamhub",
        description="Look at and act on fastapi-streamhub sessions stored in Redis.",
        epilog="exit codes: " + "; ".join(f"{code} {text}" for code, text in EXIT_CODES.items()),
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get("STREAMHUB_REDIS_URL") or DEFAULT_URL,
        help="redis://, rediss://, unix://, postgresql:// or postgres:// URL "
        "(default: $STREAMHUB_REDIS_URL, else %(default)s)",
    )
    parser.add_argument(
        "--prefix", default="streamhub", help="the hub's key_prefix (default: %(default)s)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the hub does")
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=5.0,
        metavar="S",
        help="seconds to keep retrying an unreachable Redis (default: %(default)s)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = commands.add_parser("status", help="print a session's record as JSON")
    status.add_argument("session_id", metavar="SID")
    tail = commands.add_parser("tail", help="print a session's output, following it live")
    tail.add_argument("session_id", metavar="SID")
    tail.add_argument(
        "--from", dest="after", metavar="CURSOR", help="start after this cursor (an SSE id)"
    )
    cancel = commands.add_parser("cancel", help="stop a session's producer wherever it runs")
    cancel.add_argument("session_id", metavar="SID")
    cancel.add_argument(
        "--wait", type=_seconds, metavar="S", help="wait up to S seconds for the stream to end"
    )
    delete = commands.add_parser("delete", help="stop a session and remove everything stored")
    delete.add_argument("session_id", metavar="SID")
    top = commands.add_parser("top", help="active sessions and their chunk rates")
    top.add_argument(
        "--interval", type=_positive, default=2.0, metavar="S", help="seconds between samples"
    )
    top.add_argument("--once", action="store_true", help="print one table (two samples) and exit")
    top.add_argument("--limit", type=_count, default=20, metavar="N", help="rows to show")
    top.add_argument("--all", action="store_true", help="finished sessions too")
    commands.add_parser(
        "postgres-schema",
        help="print the SQL that creates the PostgreSQL tables and functions of --prefix",
    )
    top.add_argument(
        "--max-keys",
        type=_count,
        default=10000,
        metavar="K",
        help="keys to scan per refresh at most (default: %(default)s)",
    )
    return parser


def _positive(value: str) -> float:
    number = _seconds(value)
    if number == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 <= number <= 3600:
        raise argparse.ArgumentTypeError("must be between 0 and 3600 seconds")
    return number


def _count(value: str) -> int:
    if not value.isdigit() or int(value) == 0:
        raise argparse.ArgumentTypeError(f"not a positive integer: {value!r}")
    return int(value)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line and exit with its code."""
    args = _parser().parse_args(argv)
    if not args.verbose:
        # The hub logs its retries as warnings; a command reports its outcome itself.
        # (psycopg's pool logs each failed connection attempt too.)
        for name in ("fastapi_streamhub", "psycopg"):
            logging.getLogger(name).addHandler(logging.NullHandler())
            logging.getLogger(name).propagate = False
    else:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = anyio.run(_run, args)
    except _Exit as exc:
        code = exc.code
        if exc.message:
            _error(exc.message)
    except KeyboardInterrupt:
        code = INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`streamhub tail s1 | head`): not an error of ours.
        sys.stderr.close()
        code = OK
    sys.exit(code)


def _error(message: str) -> None:
    print(f"streamhub: {message}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace) -> int:
    from ..backends._urls import redis_client

    if args.command == "postgres-schema":
        return _postgres_schema(args.prefix)
    try:
        client: Any
        owned: list[Any] = []
        if args.redis.partition("://")[0].lower() in ("postgresql", "postgres"):
            client = _postgres_backend(args.redis)
        else:
            # redis://, rediss://, unix://, redis+cluster://, redis+sentinel://
            client, owned = redis_client(args.redis)
        hub = StreamHub(client, key_prefix=args.prefix, outage_timeout=args.timeout)
    except ValueError as exc:
        raise _Exit(USAGE, str(exc)) from None
    try:
        async with hub:
            return await _command(hub, client, args)
    except Exception as exc:
        raise _exit_for(_leaf(exc), args) from None
    finally:
        with anyio.CancelScope(shield=True):
            for owned_client in owned:
                await owned_client.aclose()


def _postgres_backend(url: str) -> Any:
    try:
        from ..backends.postgres import PostgresBackend
    except ImportError:
        raise _Exit(
            USAGE, "PostgreSQL needs psycopg: pip install 'fastapi-streamhub[postgres]'"
        ) from None
    return PostgresBackend.from_url(url, pool_size=2)


def _postgres_schema(prefix: str) -> int:
    from ..backends.postgres_sql import prefix_name, schema_sql

    try:
        name = prefix_name(StreamHub(key_prefix=prefix).settings.key_prefix)
    except ValueError as exc:
        raise _Exit(USAGE, str(exc)) from None
    sys.stdout.write(schema_sql(name))
    sys.stdout.flush()
    return OK


def _leaf(exc: BaseException) -> BaseException:
    # The hub's start can fail inside its task group, which wraps the error in a group.
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _exit_for(exc: BaseException, args: argparse.Namespace) -> BaseException:
    """The exit (code and one line) for an error of a command; anything unforeseen as is."""
    if isinstance(exc, _Exit):
        return exc
    if isinstance(exc, SessionNotFound):
        return _Exit(NOT_FOUND, f"session {getattr(args, 'session_id', '')!r} not found")
    if isinstance(exc, BackendUnavailable):
        return _Exit(
            UNAVAILABLE, f"{_store(args)} at {_redacted(args.redis)} is unavailable: {exc}"
        )
    if isinstance(exc, StreamHubError | ValueError):
        return _Exit(USAGE if isinstance(exc, ValueError) else ENDED_NOT_DONE, str(exc))
    if isinstance(exc, OSError | RedisError):
        return _Exit(UNAVAILABLE, f"{_store(args)} at {_redacted(args.redis)}: {exc}")
    return exc


def _store(args: argparse.Namespace) -> str:
    return "PostgreSQL" if args.redis.lower().startswith("postgres") else "Redis"


def _redacted(url: str) -> str:
    # Never print a password from the URL.
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return scheme + sep + rest


async def _command(hub: StreamHub, client: Any, args: argparse.Namespace) -> int:
    if args.command == "status":
        info = await hub.status(args.session_id)
        if info is None:
            raise SessionNotFound(args.session_id)
        _print_json(sys.stdout, info.as_dict(), indent=True)
        return OK
    if args.command == "tail":
        return await _tail(hub, args.session_id, args.after, sys.stdout)
    if args.command == "cancel":
        state = await hub.cancel(args.session_id, wait=args.wait)
        print(state.value, flush=True)
        return ENDED_NOT_DONE if args.wait is not None and not state.finished else OK
    if args.command == "delete":
        if not await hub.delete(args.session_id):
            raise SessionNotFound(args.session_id)
        print("deleted", flush=True)
        return OK
    from .top import top

    return await top(hub, client, args, sys.stdout)


def _print_json(out: TextIO, value: Any, *, indent: bool = False) -> None:
    option = orjson.OPT_INDENT_2 if indent else 0
    out.write(orjson.dumps(value, option=option).decode() + "\n")
    out.flush()


async def _tail(hub: StreamHub, session_id: str, after: str | None, out: TextIO) -> int:
    """Print text chunks as they come; any other chunk as one JSON line."""
    cursor = Cursor.parse(after) if after is not None else None
    at_line_start = True
    async with hub.subscribe(session_id, after=cursor, batch=True) as subscription:
        async for item in subscription:
            if isinstance(item, Chunk | Batch):
                for chunk in item.chunks if isinstance(item, Batch) else (item,):
                    if chunk.kind == "text" and chunk.event is None:
                        if chunk.data:
                            out.write(chunk.data)
                            at_line_start = chunk.data.endswith("\n")
                        continue
                    if not at_line_start:
                        out.write("\n")
                    value = chunk.data if chunk.event is None else {chunk.event: chunk.data}
                    _print_json(out, value)
                    at_line_start = True
                out.flush()
            elif isinstance(item, Reset):
                _error(f"reset ({item.reason}): the output starts over")
            elif isinstance(item, End):
                if not at_line_start and out.isatty():
                    out.write("\n")
                out.flush()
                if item.state is State.DONE:
                    return OK
                reason = f" ({item.reason})" if item.reason else ""
                _error(f"stream ended {item.state.value}{reason}")
                return ENDED_NOT_DONE
            elif isinstance(item, Metadata):
                continue
    raise AssertionError("unreachable: a subscription ends with End")
