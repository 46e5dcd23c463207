"""OpenTelemetry spans and metrics, on every backend.

Each hub under test gets its own SDK ``TracerProvider`` (in-memory span exporter) and
``MeterProvider`` (in-memory metric reader) through ``tracer_provider=``/``meter_provider=``:
the global providers are never set, so nothing leaks into other tests, and in this process the
global providers are the API's proxies, i.e. "no SDK configured".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from support.conformance import (
    BASE_OPTIONS,
    STORE_KINDS,
    MemoryStore,
    PostgresStore,
    RedisStore,
    Store,
    chunks_of,
    collect,
    follow,
    make_store,
    start,
)

from fastapi_streamhub import (
    Cursor,
    End,
    FinishedGeneration,
    Reset,
    SessionNotFound,
    State,
    StreamHub,
)

NOT_FOUND = "fastapi_streamhub._errors.SessionNotFound"  # an exception event's type
pytestmark = pytest.mark.anyio


class _Ended(SpanProcessor):
    """Wakes :meth:`Recorder.wait_for` whenever a span ends (on the event loop's thread)."""

    def __init__(self) -> None:
        self.changed: anyio.Event | None = None

    def on_end(self, span: ReadableSpan) -> None:
        if self.changed is not None:
            self.changed.set()


class Recorder:
    """An SDK tracer and meter provider that keep everything in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self._ended = _Ended()
        self.tracer_provider.add_span_processor(self._ended)
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    @property
    def options(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    async def wait_for(self, name: str, within: float = 5.0) -> list[ReadableSpan]:
        """The spans called ``name``, once there is at least one."""
        with anyio.fail_after(within):
            while not self.spans(name):
                self._ended.changed = anyio.Event()
                await self._ended.changed.wait()
        return self.spans(name)

    def metrics(self) -> dict[str, dict[frozenset[tuple[str, Any]], float]]:
        """Every data point: ``{name: {attributes: value}}`` (a histogram's value: its count)."""
        out: dict[str, dict[frozenset[tuple[str, Any]], float]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = out.setdefault(metric.name, {})
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        attrs = frozenset((point.attributes or {}).items())
                        points[attrs] = point.count if value is None else value  # type: ignore[union-attr]
        return out

    def value(self, name: str, **attributes: Any) -> float:
        """The data point of ``name`` with exactly these attributes (0 when absent)."""
        key = frozenset((f"streamhub.{k}".replace("__", "."), v) for k, v in attributes.items())
        return self.metrics().get(name, {}).get(key, 0)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


HubMaker = Callable[..., Any]


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Store:
    """The conformance suite's stores: memory, a real Redis, a Redis Cluster (flushed first) and
    PostgreSQL."""
    return make_store(request)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.shutdown()


@pytest.fixture
async def make_hub(store: Store) -> AsyncIterator[HubMaker]:
    """Started hubs on the shared store (hubs may differ in providers), closed at teardown."""
    async with AsyncExitStack() as stack:

        async def factory(**options: Any) -> StreamHub:
            options = {**BASE_OPTIONS, **options}
            if isinstance(store, MemoryStore):
                hub = StreamHub(store.backend, **options)
            else:
                assert isinstance(store, RedisStore | PostgresStore)
                hub = StreamHub.from_url(store.url, **options)
            await stack.enter_async_context(hub)
            return hub

        yield factory


def attrs(item: ReadableSpan | SpanEvent) -> Mapping[str, Any]:
    assert item.attributes is not None
    return item.attributes


async def test_full_stream_records_register_span_and_published_chunks(
    make_hub: HubMaker, recorder: Recorder
) -> None:
    hub = await make_hub(**recorder.options)
    assert hub._telemetry.tracing and hub._telemetry.metering
    producer = await start(hub, "full")
    words = [f"tok{i} " for i in range(200)]
    for word in words:
        await producer.send(word)
    await producer.flush()
    await producer.close()

    (register,) = recorder.spans("streamhub.register")
    assert dict(attrs(register)) == {
        "streamhub.session_id": "full",
        "streamhub.restart": False,
        "streamhub.created": True,
        "streamhub.generation": producer.generation,
        "streamhub.state": "active",
    }
    assert register.status.status_code is StatusCode.UNSET
    publish = recorder.spans("streamhub.publish")
    assert publish and all(s.parent is None for s in publish)  # roots: the writer serves all
    assert sum(attrs(s)["streamhub.chunks"] for s in publish) == len(words)
    assert sum(attrs(s)["streamhub.refused"] for s in publish) == 0

    assert recorder.value("streamhub.chunks.published") == len(words)
    assert recorder.value("streamhub.batches.published") == len(publish)
    assert recorder.value("streamhub.publish.duration") == len(publish)  # one sample each
    assert recorder.value("streamhub.registrations", created=True) == 1

    # Not created: the session is finished.
    registration = await hub.register("full")
    assert not registration.created
    assert recorder.value("streamhub.registrations", created=False) == 1
    assert attrs(recorder.spans("streamhub.register")[-1])["streamhub.created"] is False


async def test_resume_with_cursor_records_resume_span_and_counter(
    make_hub: HubMaker, recorder: Recorder
) -> None:
    hub = await make_hub(**recorder.options)
    producer = await start(hub, "resume")
    cursors = [await producer.publish(f"c{i}") for i in range(5)]
    await producer.close()

    assert len(chunks_of(await collect(hub.subscribe("resume")))) == 5  # from the start
    assert recorder.spans("streamhub.resume") == []
    assert recorder.value("streamhub.resumes") == 0

    items = await collect(hub.subscribe("resume", after=cursors[2]))
    assert [c.data for c in chunks_of(items)] == ["c3", "c4"]
    (span,) = recorder.spans("streamhub.resume")
    assert dict(attrs(span)) == {
        "streamhub.session_id": "resume",
        "streamhub.cursor": str(cursors[2]),
        "streamhub.generation": producer.generation,
        "streamhub.state": "done",
        "streamhub.reset": False,
        "streamhub.replay.chunks": 2,
    }
    assert recorder.value("streamhub.resumes") == 1
    assert recorder.value("streamhub.resets", reset__cause="generation") == 0

    # An unknown session: the resume span says so.
    with pytest.raises(SessionNotFound):
        await collect(hub.subscribe("unknown", after=cursors[2]))
    failed = recorder.spans("streamhub.resume")[-1]
    assert failed.status.status_code is StatusCode.ERROR
    # As the README says of a span whose operation raised: the exception is recorded too.
    assert [attrs(e)["exception.type"] for e in failed.events] == [NOT_FOUND]
    assert recorder.value("streamhub.resumes") == 1


async def test_cursor_of_earlier_generation_counts_a_reset(
    make_hub: HubMaker, recorder: Recorder
) -> None:
    hub = await make_hub(**recorder.options)
    first = await start(hub, "reset")
    old = await first.publish("old")
    await first.close()
    second = await start(hub, "reset", restart=True)
    await second.publish("new")
    await second.close()

    items = await collect(hub.subscribe("reset", after=old))
    assert isinstance(items[0], Reset) and [c.data for c in chunks_of(items)] == ["new"]
    assert recorder.value("streamhub.resets", reset__cause="generation") == 1
    assert recorder.value("streamhub.resets", reset__cause="lost") == 0
    (span,) = recorder.spans("streamhub.resume")
    assert attrs(span)["streamhub.reset"] is True
    assert attrs(span)["streamhub.replay.chunks"] == 1

    # A cursor ahead of the stored stream: data was lost.
    await collect(hub.subscribe("reset", after=Cursor(second.generation, 9)))
    assert recorder.value("streamhub.resets", reset__cause="lost") == 1


async def test_cancel_records_cancel_span_and_counter(
    make_hub: HubMaker, recorder: Recorder
) -> None:
    hub = await make_hub(**recorder.options)
    producer = await start(hub, "cancel")
    await producer.publish("x")
    assert await hub.cancel("cancel") is State.ACTIVE  # the signal is sent
    with anyio.fail_after(5):
        await producer.cancelled.wait()
    assert await producer.close() is State.CANCELLED
    assert await hub.cancel("cancel") is State.CANCELLED  # already finished

    spans = recorder.spans("streamhub.cancel")
    assert [attrs(s)["streamhub.state"] for s in spans] == ["active", "cancelled"]
    assert attrs(spans[0])["streamhub.generation"] == producer.generation
    assert recorder.value("streamhub.cancels", state="active") == 1
    assert recorder.value("streamhub.cancels", state="cancelled") == 1

    with pytest.raises(SessionNotFound):
        await hub.cancel("unknown", wait=0.1)
    unknown = recorder.spans("streamhub.cancel")[-1]
    assert unknown.status.status_code is StatusCode.ERROR
    assert [attrs(e)["exception.type"] for e in unknown.events] == [NOT_FOUND]
    assert attrs(unknown)["streamhub.wait"] == 0.1
    assert sum(recorder.metrics()["streamhub.cancels"].values()) == 2


async def test_vanished_producer_records_lease_expired_and_failure(
    make_hub: HubMaker, recorder: Recorder
) -> None:
    hub_a = await make_hub(lease_ttl=0.5)  # the producer's instance: no telemetry
    hub_b = await make_hub(lease_ttl=0.5, **recorder.options)
    assert not hub_a._telemetry.enabled
    producer = await start(hub_a, "vanish")
    for i in range(3):
        await producer.publish(f"c{i}")
    async with anyio.create_task_group() as tg:
        follower = follow(tg, hub_b.subscribe("vanish"))
        await follower.until(lambda items: len(chunks_of(items)) == 3)
        assert recorder.value("streamhub.subscribers") == 1
        hub_a._forget(producer)  # stops renewing, never closes: as if its process died
        items = await follower.result(within=10)
    assert items[-1] == End(State.FAILED, "lease_expired")
    assert recorder.value("streamhub.subscribers") == 0

    # The keeper reports after the end is published: the follower may have ended first.
    (span,) = await recorder.wait_for("streamhub.lease_expired")
    assert span.parent is None
    assert dict(attrs(span)) == {
        "streamhub.session_id": "vanish",
        "streamhub.generation": producer.generation,
        "streamhub.chunks": 3,
    }
    assert recorder.value("streamhub.failures", failure__reason="lease_expired") == 1


async def test_failures_by_reason(store: Store, make_hub: HubMaker, recorder: Recorder) -> None:
    hub = await make_hub(**recorder.options)

    with pytest.raises(RuntimeError):
        async with await start(hub, "boom"):
            raise RuntimeError("model error")
    assert (await hub.status("boom")).state is State.FAILED
    assert recorder.value("streamhub.failures", failure__reason="generator_error") == 1

    old = await start(hub, "taken")
    store.lapse_lease("taken")
    new = await start(hub, "taken")  # claimed again: the old producer lost it
    assert old.lost is not None
    assert recorder.value("streamhub.failures", failure__reason="lost") == 1
    await new.close()

    # A delete is not a failure.
    gone = await start(hub, "deleted")
    await hub.delete("deleted")
    with anyio.fail_after(5):
        await gone.cancelled.wait()
    assert recorder.value("streamhub.failures", failure__reason="lost") == 1
    assert set(recorder.metrics()["streamhub.failures"]) == {
        frozenset({("streamhub.failure.reason", "generator_error")}),
        frozenset({("streamhub.failure.reason", "lost")}),
    }


async def test_producer_left_running_at_shutdown_counts_a_shutdown_failure(
    recorder: Recorder,
) -> None:
    hub = StreamHub(shutdown_grace=0.1, **recorder.options)
    async with hub:
        await start(hub, "left")
    assert recorder.value("streamhub.failures", failure__reason="shutdown") == 1


async def test_no_sdk_configured_means_telemetry_off_and_streams_work(make_hub: HubMaker) -> None:
    # This process never sets the global providers: they are the API's proxies.
    hub = await make_hub()
    assert not hub._telemetry.enabled
    assert hub._telemetry._instruments is None and hub._telemetry._tracer is None
    producer = await start(hub, "plain")
    await producer.publish("x")
    await producer.close()
    items = await collect(hub.subscribe("plain", after=Cursor(producer.generation, 0)))
    assert [c.data for c in chunks_of(items)] == ["x"]
    assert await hub.cancel("plain") is State.DONE


async def test_telemetry_false_records_nothing_even_with_providers(
    make_hub: HubMaker, recorder: Recorder
) -> None:
    hub = await make_hub(telemetry=False, **recorder.options)
    assert not hub._telemetry.enabled
    producer = await start(hub, "off")
    await producer.publish("x")
    await producer.close()
    await collect(hub.subscribe("off", after=Cursor(producer.generation, 0)))
    assert recorder.exporter.get_finished_spans() == ()
    assert recorder.metrics() == {}


async def test_telemetry_true_uses_the_global_proxies_without_error(make_hub: HubMaker) -> None:
    hub = await make_hub(telemetry=True)
    assert hub._telemetry.tracing and hub._telemetry.metering
    producer = await start(hub, "forced")
    await producer.publish("x")
    await hub.cancel("forced")
    await producer.close()
    items = await collect(hub.subscribe("forced", after=Cursor(producer.generation, 0)))
    assert isinstance(items[-1], End) and items[-1].state is State.CANCELLED


async def test_telemetry_error_in_the_writer_is_logged_and_writes_go_on(
    make_hub: HubMaker, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await make_hub(**recorder.options)

    def broken(*args: object) -> None:
        raise RuntimeError("exporter bug")

    hub._telemetry._published = broken
    producer = await start(hub, "robust")
    with caplog.at_level(logging.ERROR, logger="fastapi_streamhub"):
        for i in range(3):
            await producer.publish(f"c{i}")
        await producer.close()
    items = await collect(hub.subscribe("robust"))
    assert [c.data for c in chunks_of(items)] == ["c0", "c1", "c2"]
    assert items[-1] == End(State.DONE, None)
    assert "telemetry of a writer round trip failed" in caplog.text


@pytest.mark.parametrize("value", ["yes", 1, 0])
def test_telemetry_setting_is_validated(value: object) -> None:
    with pytest.raises(ValueError, match="telemetry"):
        StreamHub(telemetry=value)


async def test_on_finish_calls_are_counted_by_outcome(
    make_hub: HubMaker, recorder: Recorder
) -> None:
    failed_once = anyio.Event()
    succeeded = anyio.Event()

    async def hook(done: FinishedGeneration) -> None:
        if not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("database away")
        succeeded.set()

    hub = await make_hub(on_finish=hook, finish_backoff=0.01, **recorder.options)
    producer = await start(hub, "finish-counted")
    await producer.close()
    with anyio.fail_after(5):
        await succeeded.wait()
    assert recorder.value("streamhub.finish.calls", finish__outcome="error") == 1
    assert recorder.value("streamhub.finish.calls", finish__outcome="ok") == 1
