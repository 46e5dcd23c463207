"""Command line: run the benchmarks, print the table, write the JSON."""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import import_module
from pathlib import Path
from typing import Any

from fastapi_streamhub import __version__

from ._common import EVENT_LOOP, HTTP_PARSER, Bench, Context, LogTally, Metric
from ._common import run as run_loop
from ._redis import BenchRedis

# In priority order: module names under benchmarks/, each with ``async def run(ctx)``.
BENCHES = (
    "persist",
    "e2e_latency",
    "fanout",
    "resume",
    "compaction",
    "idle",
    "http_throughput",
    "http_latency",
    "many_streams",
    "floor",
    "http_many_streams",
    "telemetry",
    "cluster",
    "durable_streams",
    "pg",
)


def _load(name: str) -> Bench:
    module = import_module(f"{__package__}.{name}")
    bench: Bench = module.run
    return bench


def format_table(metrics: dict[str, dict[str, Any]]) -> str:
    """The metrics (as in the JSON) as an aligned text table."""
    rows = [("name", "value", "unit", "reference", "ratio", "goal", "met")]
    for name, m in metrics.items():
        informational = m["goal"] == "(info)"
        rows.append(
            (
                name,
                f"{m['value']:.4g}",
                m["unit"],
                "-" if m["reference"] is None else f"{m['reference']:.4g}",
                "-" if m["ratio"] is None else f"{m['ratio']:.3g}",
                m["goal"],
                "-" if informational else ("yes" if m["met"] else "NO"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def _run_all(ctx: Context, names: list[str]) -> list[Metric]:
    metrics: list[Metric] = []
    tally = LogTally.install()
    for name in names:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            found = await _load(name)(ctx)
        except Exception as exc:  # one broken benchmark must not hide the others
            print(f"[bench] {name} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            ctx.note(f"{name}_error", f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
            continue
        finally:
            ctx.redis.flush()
            gc.collect()
            if tally.messages:
                ctx.note(f"{name}_library_warnings", tally.take())
        metrics.extend(found)
        took = time.perf_counter() - t0
        print(f"[bench] {name} done in {took:.1f}s", file=sys.stderr, flush=True)
        for m in found:
            print(f"         {m.name} = {m.value:.4g} {m.unit}", file=sys.stderr, flush=True)
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run (< 3 minutes)")
    parser.add_argument("--json", metavar="FILE", help="write the metrics as JSON")
    parser.add_argument(
        "--only", metavar="NAME", action="append", choices=BENCHES, help="run only these"
    )
    parser.add_argument(
        "--plot",
        action="store_true",
        help="instead: latency and throughput at 100/300/1,000/3,000 streams, "
        "written to benchmarks/scaling.png",
    )
    args = parser.parse_args(argv)
    if args.plot:
        return _plot(quick=args.quick)
    names = list(args.only or BENCHES)
    t0 = time.perf_counter()
    if len(names) == 1:
        with BenchRedis() as server:
            ctx = Context(redis=server, quick=args.quick)
            version = server.version()
            metrics = {m.name: m.as_json() for m in run_loop(_run_all, ctx, names)}
        notes = ctx.notes
    else:
        metrics, notes, version = _run_isolated(names, quick=args.quick)
    elapsed = time.perf_counter() - t0
    print()
    print(format_table(metrics))
    print()
    for key, text in notes.items():
        print(f"- {key}: {text}")
    mode = "quick" if args.quick else "full"
    print(
        f"\n{mode} run, event loop {EVENT_LOOP}, HTTP {HTTP_PARSER}, redis-server {version}, "
        f"{os.cpu_count()} CPUs, {elapsed:.0f}s"
    )
    if args.json:
        out: dict[str, Any] = {
            "metrics": metrics,
            "notes": notes,
            "run": {
                "mode": mode,
                "redis_version": version,
                "event_loop": EVENT_LOOP,
                "http_parser": HTTP_PARSER,
                "cpus": os.cpu_count(),
                "seconds": round(elapsed, 1),
            },
        }
        Path(args.json).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    return 0


def _run_isolated(
    names: list[str], *, quick: bool
) -> tuple[dict[str, dict[str, Any]], dict[str, str], str]:
    """Each benchmark in a fresh process (and its own redis-server): no heap, connection or
    server state left by one benchmark can weigh on the next."""
    metrics: dict[str, dict[str, Any]] = {}
    notes: dict[str, str] = {}
    version = "?"
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out = Path(tmp) / f"{name}.json"
            command = [sys.executable, "-m", "benchmarks", "--only", name, "--json", str(out)]
            if quick:
                command.append("--quick")
            done = subprocess.run(command, stdout=subprocess.DEVNULL, check=False)
            if done.returncode != 0 or not out.exists():
                notes[f"{name}_error"] = f"the benchmark process exited with {done.returncode}"
                continue
            result = json.loads(out.read_text())
            metrics.update(result["metrics"])
            notes.update(result["notes"])
            version = result["run"]["redis_version"]
    return metrics, notes, version


def _plot(*, quick: bool) -> int:
    from . import scaling

    with BenchRedis() as server:
        ctx = Context(redis=server, quick=quick)
        version = server.version()
        rows = run_loop(scaling.sweep, ctx)
    title = (
        f"fastapi-streamhub {__version__}: streams of 30 chunks/s, subscribers in another "
        f"process; {EVENT_LOOP}, redis-server {version}, {os.cpu_count()} CPUs"
    )
    path = scaling.plot(rows, title)
    print(scaling.table(rows))
    print(f"\nwrote {path}")
    return 0
