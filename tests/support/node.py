"""Node scripts driven by the tests: their npm packages, and the RESULT/STEP line protocol.

A script prints ``RESULT {json}`` once at the end, ``ERROR {json}`` on failure, and may print
``STEP {json}`` and wait for a line on stdin (the test's answer, from ``on_step``).
``tests/browser/`` (playwright-core, for Chromium) and ``tests/node/`` (the Vercel AI SDK) each
hold a ``package.json`` and a committed ``package-lock.json``; ``npm ci`` installs them on first
use, so a fresh clone needs only ``node`` and ``npm``. ``tests/node`` pins the npm package
``node`` (Node 22, which ``ai`` 7 needs): :func:`run_node` runs a directory's own
``node_modules/.bin/node`` when it has one. Without them the tests skip, except
under ``STREAMHUB_REQUIRE_TOOLS=1`` (CI), where a failed install fails the test.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

NODE = shutil.which("node")
NODE_TIMEOUT = 50.0
NPM_TIMEOUT = 180
_REQUIRED = os.environ.get("STREAMHUB_REQUIRE_TOOLS") == "1"


def _unavailable(reason: str) -> NoReturn:
    if _REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


def node_modules(directory: Path, package: str) -> Path:
    """``directory/node_modules``, installed with ``npm ci`` when ``package`` is missing."""
    if not (directory / "node_modules" / package / "package.json").exists():
        npm = shutil.which("npm")
        if npm is None:
            _unavailable(f"npm is not installed; cannot install {package}")
        command = [npm, "ci" if (directory / "package-lock.json").exists() else "install"]
        try:
            subprocess.run(
                [*command, "--no-audit", "--no-fund"],
                cwd=directory,
                check=True,
                capture_output=True,
                timeout=NPM_TIMEOUT,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            output = getattr(exc, "stderr", b"") or b""
            _unavailable(f"could not install {package}: {exc}\n{output.decode()[-2000:]}")
    return directory / "node_modules"


def node_for(directory: Path) -> str:
    """The Node binary for the scripts of ``directory``: its pinned one, else ``node``."""
    pinned = directory / "node_modules" / ".bin" / "node"
    if pinned.exists():
        return str(pinned)
    assert NODE is not None
    return NODE


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def run_node(
    directory: Path,
    script: str,
    scenario: str,
    config: dict[str, Any],
    log_path: Path,
    on_step: Callable[[dict[str, Any]], str] | None = None,
    timeout: float = NODE_TIMEOUT,
) -> dict[str, Any]:
    """Run ``node <script> <scenario> <config>``; answer its STEP lines; return its RESULT."""
    deadline = time.monotonic() + timeout
    with open(log_path, "wb") as stderr:
        proc = subprocess.Popen(
            [node_for(directory), script, scenario, json.dumps(config)],
            cwd=directory,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert proc.stdin is not None and proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    reader.start()
    output: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"{script} {scenario}: no result within {timeout} s:\n" + "".join(output)
                ) from None
            if line is None:
                raise AssertionError(
                    f"{script} {scenario} exited without a result:\n"
                    + "".join(output)
                    + log_path.read_text(errors="replace")
                )
            output.append(line)
            kind, _, body = line.partition(" ")
            if kind == "RESULT":
                result: dict[str, Any] = json.loads(body)
                return result
            if kind == "ERROR":
                raise AssertionError(f"{script} {scenario}: {json.loads(body)['message']}")
            if kind == "STEP":
                assert on_step is not None, line
                proc.stdin.write(on_step(json.loads(body)) + "\n")
                proc.stdin.flush()
    finally:
        if proc.poll() is None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
        proc.stdin.close()
        proc.stdout.close()
