"""Shared pieces: the metric record, goals, the run context, small statistics."""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import re
import statistics
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import anyio

from fastapi_streamhub import StreamHub

from ._redis import BenchRedis

# A chunk of ~8 bytes, like one LLM token.
TOKEN = "tok12345"

T = TypeVar("T")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# The event loop of every benchmark process: uvloop when installed (the ``bench`` extra), as a
# FastAPI app runs it in production (``uvicorn[standard]``; the benchmark's uvicorn servers
# pick it too), else asyncio's. Library and references always share a loop within a run.
EVENT_LOOP = "uvloop" if _installed("uvloop") else "asyncio"

# The HTTP parser of the benchmarks' uvicorn servers (uvicorn's ``--http auto`` picks the same):
# httptools when installed (the ``bench`` extra, as in ``uvicorn[standard]``), else h11 (pure
# Python); ``STREAMHUB_BENCH_HTTP=h11`` forces h11 (to compare the two). Library and references
# always share it within a run.
HTTP_PARSER = os.environ.get("STREAMHUB_BENCH_HTTP") or (
    "httptools" if _installed("httptools") else "h11"
)


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``anyio.run`` on :data:`EVENT_LOOP`."""
    return anyio.run(fn, *args, backend_options={"use_uvloop": EVENT_LOOP == "uvloop"})


@dataclass(frozen=True, slots=True)
class Goal:
    """``value <= 5`` or ``ratio >= 1.0``; ``None`` target means informational only."""

    target: Literal["value", "ratio"] | None = None
    op: Literal["<=", ">="] = "<="
    limit: float = 0.0
    unit: str = ""

    def text(self) -> str:
        if self.target is None:
            return "(info)"
        sign = "≤" if self.op == "<=" else "≥"
        what = "ratio" if self.target == "ratio" else "value"
        unit = f" {self.unit}" if self.unit else ""
        return f"{what} {sign} {self.limit:g}{unit}"

    def met(self, value: float, ratio: float | None) -> bool:
        if self.target is None:
            return True
        x = ratio if self.target == "ratio" else value
        if x is None or math.isnan(x):
            return False
        return x <= self.limit if self.op == "<=" else x >= self.limit


INFO = Goal()


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    value: float
    unit: str
    reference: float | None = None
    goal: Goal = INFO
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.reference is None or self.reference == 0:
            return None
        return self.value / self.reference

    @property
    def met(self) -> bool:
        return self.goal.met(self.value, self.ratio)

    def as_json(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "value": _round(self.value),
            "unit": self.unit,
            "reference": None if self.reference is None else _round(self.reference),
            "ratio": None if ratio is None else _round(ratio),
            "goal": self.goal.text(),
            "met": self.met,
        }


def _round(x: float) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    digits = max(0, 4 - math.floor(math.log10(abs(x))))
    return round(x, digits)


@dataclass
class Context:
    """What every benchmark gets: the private Redis, the mode, and a place for notes."""

    redis: BenchRedis
    quick: bool
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.redis.url

    def pick(self, quick: int, full: int) -> int:
        return quick if self.quick else full

    def note(self, key: str, text: str) -> None:
        self.notes[key] = text


Bench = Callable[[Context], Awaitable[list[Metric]]]


class LogTally(logging.Handler):
    """Counts the library's warnings instead of printing thousands of them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: Counter[str] = Counter()

    @classmethod
    def install(cls) -> LogTally:
        """Route the ``fastapi_streamhub`` loggers of this process to a new tally."""
        tally = cls()
        library = logging.getLogger("fastapi_streamhub")
        library.addHandler(tally)
        library.propagate = False
        return tally

    def emit(self, record: logging.LogRecord) -> None:
        # Grouped by the message up to its first digit (delays, ids and counts vary).
        text = record.getMessage()
        self.messages[re.split(r"[0-9]", text, maxsplit=1)[0].strip()] += 1

    def take(self) -> str:
        """A summary of the most frequent messages; resets the tally."""
        found = ", ".join(f"{n} x '{text}'" for text, n in self.messages.most_common(3))
        self.messages.clear()
        return found


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def hub(ctx: Context, **options: Any) -> StreamHub:
    """A hub with its own Redis client (its own pub/sub connection), as one process would have."""
    return StreamHub.from_url(ctx.url, **options)


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else math.nan
