"""OpenTelemetry spans and metrics of a hub; no OpenTelemetry call at all while they are off.

The hub decides once, when it starts (``async with hub`` / its lifespan), which signals are on:

- a ``tracer_provider`` / ``meter_provider`` passed to the hub is always used;
- otherwise the global provider is used only if it is not one of the API's own providers (the
  no-op, or the proxy the API hands out while no SDK is configured). An SDK configured *after*
  the hub started is therefore not seen until the hub starts again;
- ``telemetry=True`` uses the global providers whatever they are (the API's proxy forwards to an
  SDK configured later); ``telemetry=False`` turns everything off.

While a signal is off the library never calls OpenTelemetry: call sites test :attr:`enabled`
(one attribute read per writer round trip, per subscription or per call, never per chunk), and
the helpers below return before doing anything. Instruments count in bulk (``add(n)`` per round
trip). Without ``opentelemetry-api`` installed everything is off.

Helpers that run in the hub's background tasks (the writer, the lease keeper) log and drop a
telemetry error rather than let it stop the hub.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

from .__about__ import __version__
from ._errors import SessionNotFound
from ._types import Cursor, SessionInfo, State

try:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace
    from opentelemetry.context import Context
except ImportError:  # pragma: no cover - FastAPI depends on opentelemetry-api
    otel_metrics = otel_trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from .backends.base import Append, Backend, ClaimResult, Lost

__all__ = ["Telemetry"]

log = logging.getLogger("fastapi_streamhub")

T = TypeVar("T")

SCOPE = "fastapi_streamhub"

# Span names.
REGISTER = "streamhub.register"
PUBLISH = "streamhub.publish"
RESUME = "streamhub.resume"
CANCEL = "streamhub.cancel"
LEASE_EXPIRED = "streamhub.lease_expired"

# Attribute keys.
SESSION_ID = "streamhub.session_id"
GENERATION = "streamhub.generation"
STATE = "streamhub.state"
CREATED = "streamhub.created"
REASON = "streamhub.failure.reason"
CAUSE = "streamhub.reset.cause"
OUTCOME = "streamhub.finish.outcome"

# Failure reasons (streamhub.failures) and reset causes (streamhub.resets).
LEASE_EXPIRED_REASON = "lease_expired"
FAILURE_REASONS = ("backend", "generator_error", "lease_expired", "lost", "shutdown")
RESET_CAUSES = ("generation", "lost")
FINISH_OUTCOMES = ("ok", "error")  # streamhub.finish.calls: the on_finish hook returned / raised

# Seconds: a writer round trip is usually well under a millisecond, a stalled one seconds.
_DURATION_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


def _api_default(provider: object, package: str) -> bool:
    """True for the API's own providers (no-op, proxy): an SDK's are defined elsewhere."""
    module = type(provider).__module__
    return module == package or module.startswith(package + ".")


# Counters: (attribute of _Instruments, name, unit, description). The README lists them too.
_COUNTERS = (
    ("chunks", "streamhub.chunks.published", "{chunk}", "Chunks persisted by this instance"),
    (
        "batches",
        "streamhub.batches.published",
        "{batch}",
        "Producer batches persisted (one per session per writer round trip)",
    ),
    ("registrations", "streamhub.registrations", "{registration}", "register calls"),
    ("resumes", "streamhub.resumes", "{resume}", "Subscriptions opened with a cursor"),
    ("resets", "streamhub.resets", "{reset}", "Resets sent to subscribers"),
    ("cancels", "streamhub.cancels", "{cancel}", "Cancels of known sessions"),
    ("failures", "streamhub.failures", "{failure}", "Streams failed, as seen here"),
    ("finishes", "streamhub.finish.calls", "{call}", "Calls of the on_finish hook made here"),
)


class _Instruments:
    """The hub's metric instruments."""

    chunks: Counter
    batches: Counter
    registrations: Counter
    resumes: Counter
    resets: Counter
    cancels: Counter
    failures: Counter
    finishes: Counter

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter(SCOPE, __version__)
        for attribute, name, unit, description in _COUNTERS:
            setattr(self, attribute, meter.create_counter(name, unit, description))
        self.subscribers = meter.create_up_down_counter(
            "streamhub.subscribers", "{subscriber}", "Open subscriptions on this instance"
        )
        self.duration = meter.create_histogram(
            "streamhub.publish.duration",
            "s",
            "Duration of a writer round trip (every pending batch of this instance)",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )


def _attrs(key: str, values: Sequence[Any]) -> dict[Any, Mapping[str, Any]]:
    """One attribute set per value, built once (instruments are called with these)."""
    return {value: {key: value} for value in values}


_CREATED_ATTRS = _attrs(CREATED, (True, False))
_STATE_ATTRS = _attrs(STATE, [state.value for state in State])
_REASON_ATTRS = _attrs(REASON, FAILURE_REASONS)
_CAUSE_ATTRS = _attrs(CAUSE, RESET_CAUSES)
_OUTCOME_ATTRS = _attrs(OUTCOME, FINISH_OUTCOMES)


class Telemetry:
    """A hub's tracer and instruments; each method does nothing while its signal is off."""

    def __init__(
        self,
        mode: bool | None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._mode = mode
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self.tracing = False
        self.metering = False
        self.enabled = False  # tracing or metering: the one test call sites make
        self._tracer: Tracer | None = None
        self._instruments: _Instruments | None = None
        self._meter_source: object = None

    def start(self) -> None:
        """Decide which signals are on (at the hub's start; see the module docstring)."""
        self.tracing = self.metering = self.enabled = False
        if self._mode is False or otel_trace is None:
            return
        tracer_provider = self._tracer_provider or otel_trace.get_tracer_provider()
        if (
            self._tracer_provider is not None
            or self._mode
            or not _api_default(tracer_provider, "opentelemetry.trace")
        ):
            self._tracer = tracer_provider.get_tracer(SCOPE, __version__)
            self.tracing = True
        meter_provider = self._meter_provider or otel_metrics.get_meter_provider()
        if (
            self._meter_provider is not None
            or self._mode
            or not _api_default(meter_provider, "opentelemetry.metrics")
        ):
            if self._meter_source is not meter_provider:
                self._instruments = _Instruments(meter_provider)
                self._meter_source = meter_provider
            self.metering = True
        self.enabled = self.tracing or self.metering

    # -- spans around calls --------------------------------------------------------------

    def _span(self, name: str, session_id: str) -> AbstractContextManager[Span]:
        """A current span for the call, or a no-op one while tracing is off.

        Exceptions are recorded and set the status to ERROR (cancellations are not: they are
        ``BaseException``, which the API leaves alone).
        """
        if self._tracer is None or not self.tracing:
            return nullcontext(otel_trace.INVALID_SPAN)
        return self._tracer.start_as_current_span(name, attributes={SESSION_ID: session_id})

    async def register(
        self, session_id: str, restart: bool, claiming: Awaitable[ClaimResult]
    ) -> ClaimResult:
        """``streamhub.register`` around the claim; counts ``streamhub.registrations``."""
        span: Span
        with self._span(REGISTER, session_id) as span:
            span.set_attribute("streamhub.restart", restart)
            result = await claiming
            span.set_attributes(
                {CREATED: result.created, GENERATION: result.generation, STATE: result.state.value}
            )
        if self._instruments is not None:
            self._instruments.registrations.add(1, _CREATED_ATTRS[result.created])
        return result

    async def resume(
        self, session_id: str, after: Cursor, opening: Awaitable[tuple[SessionInfo | None, T]]
    ) -> tuple[SessionInfo | None, T]:
        """``streamhub.resume`` around a subscription's first read; counts ``streamhub.resumes``."""
        span: Span
        with self._span(RESUME, session_id) as span:
            span.set_attribute("streamhub.cursor", str(after))
            info, page = await opening
            if info is None:
                _not_found(span, session_id)
                return info, page
            reset = after.generation != info.generation or after.offset > info.chunks
            span.set_attributes(
                {
                    GENERATION: info.generation,
                    STATE: info.state.value,
                    "streamhub.reset": reset,
                    # What the replay delivers (as of this read) before following live.
                    "streamhub.replay.chunks": info.chunks - (0 if reset else after.offset),
                }
            )
        if self._instruments is not None:
            self._instruments.resumes.add(1)
        return info, page

    async def cancel(
        self, session_id: str, wait: float | None, cancelling: Awaitable[SessionInfo | None]
    ) -> SessionInfo | None:
        """``streamhub.cancel`` around the cancel request; counts ``streamhub.cancels``."""
        span: Span
        with self._span(CANCEL, session_id) as span:
            if wait is not None:
                span.set_attribute("streamhub.wait", float(wait))
            info = await cancelling
            if info is None:
                _not_found(span, session_id)
                return info
            span.set_attributes({GENERATION: info.generation, STATE: info.state.value})
        if self._instruments is not None:
            self._instruments.cancels.add(1, _STATE_ATTRS[info.state.value])
        return info

    # -- counters ------------------------------------------------------------------------

    def subscribers(self, delta: int) -> None:
        """A subscription opened (+1) or closed (-1)."""
        if self._instruments is not None and self.metering:
            self._instruments.subscribers.add(delta)

    def reset(self, cause: str) -> None:
        """A subscriber was sent a reset: ``generation`` or ``lost`` (trimmed, lost, ahead)."""
        if self._instruments is not None and self.metering:
            self._instruments.resets.add(1, _CAUSE_ATTRS[cause])

    def failure(self, reason: str) -> None:
        """A stream failed here; ``reason`` is one of :data:`FAILURE_REASONS`."""
        if self._instruments is not None and self.metering:
            self._instruments.failures.add(1, _REASON_ATTRS[reason])

    def finish_called(self, outcome: str) -> None:
        """The on_finish hook was called here; ``outcome`` is one of :data:`FINISH_OUTCOMES`."""
        if self._instruments is not None and self.metering:
            self._instruments.finishes.add(1, _OUTCOME_ATTRS[outcome])

    # -- background tasks (never raise) ------------------------------------------------------

    def published(
        self,
        batches: Sequence[Append],
        results: Sequence[Lost | None] | None,
        error: BaseException | None,
        start_ns: int,
    ) -> None:
        """One writer round trip ended (``start_ns``: ``time.time_ns()`` before it)."""
        try:
            self._published(batches, results, error, start_ns, time.time_ns())
        except Exception:
            log.exception("telemetry of a writer round trip failed; the writes are unaffected")

    def _published(
        self,
        batches: Sequence[Append],
        results: Sequence[Lost | None] | None,
        error: BaseException | None,
        start_ns: int,
        end_ns: int,
    ) -> None:
        ok = chunks = 0
        if results is not None:
            for batch, result in zip(batches, results, strict=True):
                if result is None:
                    ok += 1
                    chunks += len(batch.payloads)
        instruments = self._instruments
        if instruments is not None and self.metering:
            if ok:
                instruments.chunks.add(chunks)
                instruments.batches.add(ok)
            instruments.duration.record((end_ns - start_ns) / 1e9)
        if self._tracer is not None and self.tracing:
            # A root span: the writer serves every producer, no request is its parent.
            span = self._tracer.start_span(
                PUBLISH,
                context=Context(),
                start_time=start_ns,
                attributes={
                    "streamhub.batches": len(batches),
                    "streamhub.chunks": chunks,
                    "streamhub.refused": len(batches) - ok if error is None else 0,
                },
            )
            if error is not None:
                span.record_exception(error)
                span.set_status(otel_trace.StatusCode.ERROR, f"{type(error).__name__}: {error}")
            span.end(end_time=end_ns)

    async def leases_lapsed(self, backend: Backend, ended: Sequence[tuple[str, int]]) -> None:
        """The keeper found these followed generations over: report the lease expiries.

        A generation is also over when it closed normally (its end was on its way), so the
        records are read to tell: failed with ``lease_expired`` at that generation.
        """
        try:
            infos = await backend.info([session_id for session_id, _ in ended])
        except Exception as exc:
            log.warning("telemetry: could not read %d ended sessions: %s", len(ended), exc)
            return
        try:
            for (session_id, generation), info in zip(ended, infos, strict=True):
                if (
                    info is None
                    or info.generation != generation
                    or info.state is not State.FAILED
                    or info.reason != LEASE_EXPIRED_REASON
                ):
                    continue
                if self._tracer is not None and self.tracing:
                    self._tracer.start_span(
                        LEASE_EXPIRED,
                        context=Context(),
                        attributes={
                            SESSION_ID: session_id,
                            GENERATION: generation,
                            "streamhub.chunks": info.chunks,
                        },
                    ).end()
                self.failure(LEASE_EXPIRED_REASON)
        except Exception:
            log.exception("telemetry of lease expiries failed")


def _not_found(span: Span, session_id: str) -> None:
    """An unknown session fails its span as a raised error would: the exception event (what
    tracing backends show as the error) and status ERROR."""
    error = SessionNotFound(f"session {session_id!r} not found")
    span.record_exception(error)
    span.set_status(otel_trace.StatusCode.ERROR, f"SessionNotFound: {error}")
