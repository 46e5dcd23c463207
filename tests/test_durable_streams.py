"""The Durable Streams server conformance suite (``@durable-streams/server-conformance-tests``,
pinned in ``tests/node/durable_streams/``) against ``tests/ds_app.py`` in uvicorn, on memory,
Redis, a Redis Cluster and PostgreSQL.

The suite runs in vitest with its JSON reporter; this test fails on any failure not listed in
``tests/node/durable_streams/expected_failures.txt`` and on any listed test that now passes
(so the list only ever shrinks to the truth). A line there is ``[backend ]<full test name>
# <reason>``; without a backend it applies to all four. The full name is the suite's
describe titles and the test title joined by `` > ``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.apps import AppServer, start_servers
from support.node import NODE, node_modules
from support.redis_server import RedisServer

SUITE_DIR = Path(__file__).resolve().parent / "node" / "durable_streams"
PACKAGE = "@durable-streams/server-conformance-tests"
EXPECTED = SUITE_DIR / "expected_failures.txt"
LONG_POLL_MS = 1000
SUITE_TIMEOUT = 240  # seconds: the suite takes ~30-60 s here; its TTL tests sleep


def expected_failures(backend: str) -> dict[str, str]:
    """The listed failures that apply to ``backend``: full name -> reason."""
    out: dict[str, str] = {}
    for raw in EXPECTED.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, reason = line.partition("  # ")
        assert sep and reason.strip(), f"{EXPECTED.name}: every line needs '  # reason': {raw!r}"
        if name.startswith("["):
            only, _, name = name[1:].partition("] ")
            if only != backend:
                continue
        out[name.strip()] = reason.strip()
    return out


def run_suite(base_url: str, log_dir: Path) -> dict[str, str]:
    """Run the suite against ``base_url``: full test name -> status (passed, failed, ...)."""
    modules = node_modules(SUITE_DIR, PACKAGE)
    assert NODE is not None
    report = log_dir / "vitest.json"
    env = {
        **os.environ,
        "CONFORMANCE_TEST_URL": base_url,
        "LONG_POLL_TIMEOUT_MS": str(LONG_POLL_MS),
        "NO_COLOR": "1",
    }
    with open(log_dir / "vitest.log", "wb") as log:
        subprocess.run(
            [
                NODE,
                str(modules / "vitest" / "vitest.mjs"),
                "run",
                "--config",
                "vitest.config.mjs",
                "--reporter=json",
                f"--outputFile={report}",
            ],
            cwd=SUITE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=SUITE_TIMEOUT,
            check=False,  # vitest exits 1 on any failure; the report says which
        )
    assert report.exists(), (log_dir / "vitest.log").read_text(errors="replace")[-4000:]
    results: dict[str, str] = {}
    for file in json.loads(report.read_text())["testResults"]:
        for test in file["assertionResults"]:
            name = " > ".join([*test["ancestorTitles"], test["title"]])
            results[name] = test["status"]
    return results


@pytest.fixture(params=["memory", "redis", "cluster", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    kind = request.param
    if kind == "memory":
        yield kind, "memory://"
        return
    if kind == "redis":
        server = RedisServer().start()
        try:
            yield kind, server.url
        finally:
            server.close()
        return
    if kind == "postgres":
        yield kind, request.getfixturevalue("postgres_url")
        return
    cluster_url = request.getfixturevalue("cluster_url")
    yield kind, cluster_url


@pytest.mark.timeout(SUITE_TIMEOUT + 60)
def test_conformance_suite(backend_url: tuple[str, str], tmp_path: Path) -> None:
    kind, url = backend_url
    app = AppServer(
        f"ds-{kind}",
        {"REDIS_URL": url, "LONG_POLL_TIMEOUT": str(LONG_POLL_MS / 1000)},
        tmp_path,
        app="ds_app:app",
    )
    start_servers([app])
    try:
        results = run_suite(app.url, tmp_path)
    finally:
        app.stop()
    expected = expected_failures(kind)
    ran = {name: status for name, status in results.items() if status in ("passed", "failed")}
    passed = sum(status == "passed" for status in ran.values())
    print(f"Durable Streams conformance on {kind}: {passed}/{len(ran)} passed")
    unexpected = sorted(n for n, s in ran.items() if s == "failed" and n not in expected)
    fixed = sorted(n for n, s in ran.items() if s == "passed" and n in expected)
    unknown = sorted(n for n in expected if n not in ran)
    assert not unexpected, f"{len(unexpected)} failures not expected:\n" + "\n".join(unexpected)
    assert not fixed, f"{len(fixed)} listed failures pass now; remove them:\n" + "\n".join(fixed)
    assert not unknown, "listed tests the suite did not run:\n" + "\n".join(unknown)
    assert not app.alive()
    for marker in ("Traceback (most recent call last)", "Exception in ASGI application"):
        assert marker not in app.log(), app.log()[-4000:]
