"""Chaining SIGTERM/SIGINT to the hub's graceful shutdown, keeping the server's own handlers."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["chain_signals"]


def _nothing() -> None:
    return None


def chain_signals(on_signal: Callable[[], None], *, enabled: bool = True) -> Callable[[], None]:
    """Call ``on_signal`` in the running loop on SIGTERM/SIGINT, then the previous handler;
    returns the function that puts the previous handlers back.

    Servers such as uvicorn wait for open responses to finish before running the lifespan
    shutdown; SSE responses only finish once the hub starts shutting down, so the hub must
    hear the signal first. Signals can only be hooked from the main thread: elsewhere (or when
    not ``enabled``) this does nothing.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        return _nothing
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(on_signal)
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)

    for sig in (signal.SIGTERM, signal.SIGINT):
        current = signal.getsignal(sig)
        if callable(current):
            previous[sig] = current
            signal.signal(sig, handler)

    def restore() -> None:
        for sig, original in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, original)

    return restore
