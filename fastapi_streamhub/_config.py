"""Settings of a hub, validated once at construction."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["Settings"]

# Redis' defaults: a client's pub/sub output buffer (hard limit) and one bulk argument.
_PUBSUB_HARD_LIMIT = 32 * 1024 * 1024
_BULK_LIMIT = 512 * 1024 * 1024
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _positive_int(name: str, value: int | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable of a hub. Times are in seconds, sizes in bytes."""

    key_prefix: str = "streamhub"
    lease_ttl: float = 10.0
    renew_interval: float | None = None  # default lease_ttl / 3
    retention: float = 86400.0
    maxlen: int | None = None
    max_chunk_bytes: int = 1024 * 1024
    max_metadata_bytes: int = 64 * 1024
    max_message_bytes: int = 64 * 1024  # a steering message's JSON
    # All steering messages one generation may be sent, in count and in JSON bytes.
    max_messages: int = 256
    max_messages_bytes: int = 1024 * 1024
    max_batch: int = 512
    max_pending: int = 4096
    # Byte bounds (README, "Memory sizing"): counts alone let 1 MiB chunks add up to gigabytes.
    max_pending_bytes: int = 16 * 1024 * 1024  # a producer's queued chunks; publish waits
    max_write_bytes: int = 8 * 1024 * 1024  # one writer round trip (one chunk above goes alone)
    max_publish_bytes: int = 1024 * 1024  # one live pub/sub message; bigger batches: a notice
    subscriber_buffer: int = 1024
    subscriber_buffer_bytes: int = 4 * 1024 * 1024  # a reader's live queue, and its output
    max_subscribers: int = 1000
    # Durable Streams one store holds at once (expired ones do not count); one more create is
    # refused (HTTP 429). None: no limit. Read by the instance that creates.
    ds_max_streams: int | None = 100_000
    replay_batch: int = 1000
    replay_batch_bytes: int = 4 * 1024 * 1024  # one replay page (one entry above goes alone)
    stalled_reader_timeout: float = 45.0  # an SSE write blocked this long ends the response
    ping_interval: float = 15.0
    retry_ms: int = 1000
    shutdown_grace: float = 5.0
    outage_timeout: float = 30.0
    # While an HTTP request waits for its answer, store calls retry this long at most (then 503).
    request_timeout: float = 5.0
    # Redis only: replicas that must acknowledge each write (WAIT) before it counts as stored.
    wait_replicas: int = 0
    wait_timeout: float = 1.0
    telemetry: bool | None = None  # None: on when an OpenTelemetry SDK is configured at start
    # Fold a finished generation's log into a few entries (ARCHITECTURE.md, "Compaction").
    compact_finished: bool = True
    # on_finish (README, "Saving finished answers"): calls of a failing hook (with backoff from
    # finish_backoff, doubling), how long a claim on running a hook lasts, and how long the
    # end of a generation waits for its hook (None: the end is recorded first).
    finish_attempts: int = 5
    finish_backoff: float = 0.5
    finish_claim_ttl: float = 60.0
    finish_before_end: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key_prefix, str) or _PREFIX.fullmatch(self.key_prefix) is None:
            raise ValueError("key_prefix must be 1-64 characters of letters, digits and _ . : -")
        _positive("lease_ttl", self.lease_ttl)
        if self.renew_interval is not None:
            _positive("renew_interval", self.renew_interval)
            if self.renew_interval >= self.lease_ttl:
                raise ValueError("renew_interval must be shorter than lease_ttl")
        _positive("retention", self.retention)
        if self.retention < self.lease_ttl:
            raise ValueError("retention must be at least lease_ttl")
        _positive("ping_interval", self.ping_interval)
        _positive("shutdown_grace", self.shutdown_grace)
        _positive("outage_timeout", self.outage_timeout)
        _positive("request_timeout", self.request_timeout)
        _positive("stalled_reader_timeout", self.stalled_reader_timeout)
        _positive("finish_backoff", self.finish_backoff)
        _positive("finish_claim_ttl", self.finish_claim_ttl)
        if self.finish_before_end is not None:
            _positive("finish_before_end", self.finish_before_end)
        _positive_int("maxlen", self.maxlen, allow_none=True)
        _positive_int("ds_max_streams", self.ds_max_streams, allow_none=True)
        if isinstance(self.wait_replicas, bool) or not isinstance(self.wait_replicas, int):
            raise ValueError(f"wait_replicas must be an integer, got {self.wait_replicas!r}")
        if self.wait_replicas < 0:
            raise ValueError(f"wait_replicas must be 0 or more, got {self.wait_replicas!r}")
        _positive("wait_timeout", self.wait_timeout)
        if self.telemetry is not None and not isinstance(self.telemetry, bool):
            raise ValueError(f"telemetry must be True, False or None, got {self.telemetry!r}")
        if not isinstance(self.compact_finished, bool):
            raise ValueError(
                f"compact_finished must be True or False, got {self.compact_finished!r}"
            )
        for name in (
            "max_chunk_bytes",
            "max_metadata_bytes",
            "max_message_bytes",
            "max_messages",
            "max_messages_bytes",
            "max_batch",
            "max_pending",
            "max_pending_bytes",
            "max_write_bytes",
            "max_publish_bytes",
            "subscriber_buffer",
            "subscriber_buffer_bytes",
            "max_subscribers",
            "replay_batch",
            "replay_batch_bytes",
            "retry_ms",
            "finish_attempts",
        ):
            _positive_int(name, getattr(self, name))

        if self.max_publish_bytes > _PUBSUB_HARD_LIMIT:
            raise ValueError(
                f"max_publish_bytes must be at most {_PUBSUB_HARD_LIMIT} bytes (Redis' default "
                f"pub/sub output buffer limit is 32 MiB), got {self.max_publish_bytes}"
            )
        if self.max_write_bytes > _BULK_LIMIT:
            raise ValueError(
                f"max_write_bytes must be at most {_BULK_LIMIT} bytes (Redis refuses an "
                f"argument over proto-max-bulk-len, 512 MiB by default), got {self.max_write_bytes}"
            )

    @property
    def renew_every(self) -> float:
        """Seconds between lease renewals."""
        return self.renew_interval if self.renew_interval is not None else self.lease_ttl / 3

    @property
    def lease_ms(self) -> int:
        """The lease length in milliseconds."""
        return max(1, round(self.lease_ttl * 1000))

    @property
    def wait_timeout_ms(self) -> int:
        """The WAIT timeout in milliseconds."""
        return max(1, round(self.wait_timeout * 1000))

    @property
    def retention_ms(self) -> int:
        """The retention in milliseconds."""
        return max(1, round(self.retention * 1000))
