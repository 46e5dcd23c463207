"""``telemetry_*``: what OpenTelemetry costs on the persist path (``persist_throughput``'s loop).

Four hubs on one Redis, one per mode, measured in turn within each round (the order rotates
each round, so drifts of a noisy machine hit every mode):

- ``off``: ``telemetry=False``, the reference;
- ``no_sdk``: the default, in a process where no OpenTelemetry SDK is configured (the global
  providers are the API's proxies): the hub decides at start that telemetry is off. Goal: the
  same throughput as ``off`` (ratio ≥ 0.97 of the medians);
- ``noop``: ``telemetry=True`` over those proxies: the no-op calls the check above avoids;
- ``sdk``: an SDK ``TracerProvider`` (simple span processor: the export runs in the round trip,
  not in a thread that would weigh on the next mode; in-memory exporter) and
  ``MeterProvider`` (in-memory reader) passed to the hub: the price of recording.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from ._common import Context, Goal, Metric, hub, median
from .persist import producer_send

MODES = ("off", "no_sdk", "noop", "sdk")


def _sdk() -> tuple[dict[str, Any], Any]:
    """Hub options with in-memory SDK providers, and a function that shuts them down."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def shutdown() -> None:
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return {"tracer_provider": tracer_provider, "meter_provider": meter_provider}, shutdown


async def run(ctx: Context) -> list[Metric]:
    # Many short rounds: the modes run the same code but for telemetry, so what varies is the
    # machine; medians over many rounds see through its bursts.
    n = ctx.pick(50_000, 100_000)
    rounds = ctx.pick(15, 25)
    sdk_options, shutdown = _sdk()
    options: dict[str, dict[str, Any]] = {
        "off": {"telemetry": False},
        "no_sdk": {},
        "noop": {"telemetry": True},
        "sdk": sdk_options,
    }
    runs: dict[str, list[float]] = {mode: [] for mode in MODES}
    async with AsyncExitStack() as stack:
        stack.callback(shutdown)
        hubs = {m: await stack.enter_async_context(hub(ctx, **options[m])) for m in MODES}
        enabled = {mode: h._telemetry.enabled for mode, h in hubs.items()}
        assert enabled == {"off": False, "no_sdk": False, "noop": True, "sdk": True}, enabled
        for h in hubs.values():
            await producer_send(h, 1_000)  # warm up: connections, scripts
        for i in range(rounds):
            order = MODES[i % len(MODES) :] + MODES[: i % len(MODES)]
            for mode in order:
                runs[mode].append(n / await producer_send(hubs[mode], n))
            ctx.redis.flush()
    paired = [a / b for a, b in zip(runs["no_sdk"], runs["off"], strict=True)]
    ctx.note(
        "telemetry",
        f"{n} chunks x {rounds} rounds; chunks/s medians "
        + ", ".join(f"{mode} {median(runs[mode]):,.0f}" for mode in MODES)
        + f"; no_sdk/off per round {[round(r, 3) for r in paired]}",
    )
    off = median(runs["off"])
    return [
        Metric(
            "telemetry_no_sdk_throughput",
            median(runs["no_sdk"]),
            "chunks/s",
            reference=off,
            goal=Goal("ratio", ">=", 0.97),
        ),
        Metric("telemetry_noop_forced_throughput", median(runs["noop"]), "chunks/s", off),
        Metric("telemetry_sdk_throughput", median(runs["sdk"]), "chunks/s", off),
    ]
