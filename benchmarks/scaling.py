"""``python -m benchmarks --plot``: latency and throughput against concurrent streams.

The ``many_streams`` load (each stream one chunk every 1/30 s, LLM-like pacing, produced on one
hub in this process, one subscriber per stream on a hub in another process) at 100, 300, 1,000,
2,000 and 3,000 concurrent streams. For each: delivered chunks/s against the offered rate,
end-to-end latency p50/p99 (``producer.send`` to the subscriber), Redis commands per chunk.
Writes a PNG (matplotlib, the ``bench`` extra) and returns the rows for the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._common import Context, percentile
from .many_streams import RATE, measure

STREAMS = (100, 300, 1000, 2000, 3000)
PLOT = Path(__file__).with_name("scaling.png")


async def sweep(ctx: Context) -> list[dict[str, Any]]:
    """One ``many_streams`` measurement per stream count."""
    seconds = ctx.pick(3, 6)
    rows = []
    for streams in STREAMS:
        got = await measure(ctx, streams, seconds)
        ctx.redis.flush()
        lat = got["latencies"]
        rows.append(
            {
                "streams": streams,
                "offered": streams * RATE,
                "delivered": got["chunks"] / got["wall"],
                "p50": percentile(lat, 50),
                "p99": percentile(lat, 99),
                "cmds_per_chunk": got["counts"].n_total / got["chunks"],
                "cpu_producer": got["cpu_producer"],
                "cpu_subscriber": got["cpu_subscriber"],
                "failed": sum(got["failures"].values()),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The sweep as a Markdown table."""
    lines = [
        "| streams | offered chunks/s | delivered chunks/s | latency p50 ms | latency p99 ms "
        "| Redis cmds/chunk | producer CPU s/1000 chunks | subscriber CPU s/1000 chunks |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['streams']:,} | {r['offered']:,.0f} | {r['delivered']:,.0f} | {r['p50']:.2f} "
            f"| {r['p99']:.1f} | {r['cmds_per_chunk']:.2f} | {r['cpu_producer']:.3f} "
            f"| {r['cpu_subscriber']:.3f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], title: str, path: Path = PLOT) -> Path:
    """Two panels: throughput (offered vs delivered) and latency (p50, p99), log-log."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit("--plot needs matplotlib: pip install -e '.[bench]'") from exc
    streams = [r["streams"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    left.plot(
        streams, [r["offered"] for r in rows], "--", color="grey", label="offered (30/s each)"
    )
    left.plot(streams, [r["delivered"] for r in rows], "o-", label="delivered")
    left.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent streams",
        ylabel="chunks per second",
        title="Throughput",
    )
    right.plot(streams, [r["p50"] for r in rows], "o-", label="p50")
    right.plot(streams, [r["p99"] for r in rows], "s-", label="p99")
    right.axhline(50, color="grey", linestyle=":", label="50 ms goal (1,000 streams)")
    right.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent streams",
        ylabel="ms, producer.send → subscriber",
        title="End-to-end latency",
    )
    for ax in (left, right):
        ax.set_xticks(streams, [f"{s:,}" for s in streams])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
