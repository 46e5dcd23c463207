"""What a hub hands its engine parts: the one object behind ProducerHost and SubscriberHost."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._config import Settings
    from ._fanout import QueueListener
    from ._finish import Finisher
    from ._producer import Producer
    from ._telemetry import Telemetry
    from ._writer import Writer
    from .backends.base import Backend

__all__ = ["Services"]


@dataclass(frozen=True, slots=True)
class Services:
    """The hub's backend, settings and shared machinery, and the hub's own bookkeeping as
    bound methods: producers and subscriptions get this, never the hub itself, so they can
    neither reach its private state nor need its type (see ``ProducerHost``,
    ``SubscriberHost``)."""

    backend: Backend
    settings: Settings
    telemetry: Telemetry
    writer: Writer
    finisher: Finisher
    spawn: Callable[..., None]
    forget: Callable[[Producer], None]
    subscriber_slot: Callable[[str], AbstractAsyncContextManager[None]]
    watch: Callable[[str, int, float, QueueListener], None]
    unwatch: Callable[[str, QueueListener], None]
