"""A loopback TCP proxy for fault injection: forward, drop, stall or refuse connections.

The proxy runs its own asyncio event loop in a daemon thread, so that it keeps forwarding while
the test's loop is busy, and so that the test can drive it with plain synchronous calls
(``proxy.drop()``) from any thread or loop. Clients connect to ``proxy.port``; every accepted
connection gets its own upstream connection to ``target``.

Faults:

- :meth:`drop`: reset every open connection (both sides get an RST), keep accepting new ones;
- :meth:`stall` / :meth:`unstall`: stop moving bytes in both directions (connections stay open,
  new ones are accepted and stalled too), as a network that silently loses packets would;
- :meth:`down` / :meth:`up`: reset every connection and refuse (reset) new ones until ``up``;
- :meth:`blackhole`: the connections open now go silent for good, in both directions, and are
  never closed (neither peer learns: a half-open connection); new ones are forwarded as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from concurrent.futures import Future
from typing import Any

from support.process import Started

HOST = "127.0.0.1"
_READ_SIZE = 65536


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with an RST rather than a FIN: the peer sees a connection reset at once."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    transport.abort()


class _Link:
    """One proxied connection: the client side, the upstream side, two pumps."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task[None]] = []
        self.flowing = asyncio.Event()
        self.flowing.set()

    def abort(self) -> None:
        for task in self.tasks:
            task.cancel()
        _abort(self.client)
        _abort(self.upstream)


class TCPProxy(Started):
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``, with faults on demand."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self._requested_port = port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._flowing: asyncio.Event | None = None
        self._refusing = False
        self.accepted = 0
        self.dropped = 0
        self.refused = 0

    # -- running ---------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, fn: Any, *args: Any, timeout: float = 10.0) -> Any:
        """Run ``fn(*args)`` (a coroutine function or a plain one) on the proxy's loop."""

        async def wrapper() -> Any:
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        future: Future[Any] = asyncio.run_coroutine_threadsafe(wrapper(), self._loop)
        return future.result(timeout)

    def start(self) -> TCPProxy:
        """Start the thread and listen; ``port`` is then the port to connect to."""
        self._thread.start()
        self._call(self._listen)
        return self

    async def _listen(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(
            self._handle, HOST, self._requested_port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Reset every connection, stop listening and stop the thread."""
        if not self._thread.is_alive():
            return
        self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        self._refusing = True
        self._abort_all()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        """A redis:// URL through the proxy (the target is assumed to be Redis)."""
        return f"redis://{HOST}:{self.port}/0"

    # -- faults ----------------------------------------------------------------------------

    def drop(self) -> int:
        """Reset every open connection; return how many there were."""
        return int(self._call(self._abort_all))

    def stall(self) -> None:
        """Stop forwarding bytes in both directions (connections stay open)."""
        self._call(self._set_flowing, False)

    def unstall(self) -> None:
        """Forward again what was held back, and everything after."""
        self._call(self._set_flowing, True)

    def blackhole(self) -> int:
        """Stop forwarding on every open connection without closing it; return how many."""
        return int(self._call(self._blackhole_all))

    def down(self) -> int:
        """Reset every connection and refuse new ones until :meth:`up`."""
        return int(self._call(self._go_down))

    def up(self) -> None:
        """Accept and forward connections again."""
        self._call(self._set_refusing, False)

    def connections(self) -> int:
        """How many proxied connections are open right now."""
        return int(self._call(len, self._links))

    def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    def _set_refusing(self, refusing: bool) -> None:
        self._refusing = refusing

    def _go_down(self) -> int:
        self._refusing = True
        return self._abort_all()

    def _blackhole_all(self) -> int:
        for link in self._links:
            link.flowing.clear()
        return len(self._links)

    def _abort_all(self) -> int:
        links, self._links = self._links, set()
        for link in links:
            link.abort()
        self.dropped += len(links)
        return len(links)

    # -- forwarding ------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.refused += 1
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.refused += 1
            _abort(writer)
            return
        if self._refusing:  # went down while we connected
            _abort(up_writer)
            _abort(writer)
            return
        self.accepted += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.ensure_future(self._pump(reader, up_writer, link)),
            asyncio.ensure_future(self._pump(up_reader, writer, link)),
        ]

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                # Wait before reading: while stalled, bytes stay in the kernel's buffers.
                await self._flowing.wait()
                await link.flowing.wait()
                data = await reader.read(_READ_SIZE)
                if not data:
                    break
                await self._flowing.wait()
                await link.flowing.wait()
                writer.write(data)
                await writer.drain()
        except asyncio.CancelledError:
            return
        except OSError:
            pass
        # One side closed or failed: close the whole link.
        if link in self._links:
            self._links.discard(link)
            for task in link.tasks:
                if task is not asyncio.current_task():
                    task.cancel()
            for side in (link.client, link.upstream):
                with contextlib.suppress(Exception):
                    side.close()


__all__ = ["TCPProxy"]
