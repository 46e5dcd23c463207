"""The package's layers import only in the allowed directions (issue 14).

The layers, bottom up: the kernel (leaf types and helpers), ``backends/``, the engine (every
other top-level module), then the FastAPI layer ``_http/`` and the CLI ``_cli/`` on top of the
engine; the HTTP client ``_client/`` stands beside them on the kernel alone, so that a program
that only consumes streams needs neither FastAPI nor Redis. The facades (``__init__``,
``client``, ``__main__``) may import anything.

The walk reads every import with ``ast``, including those under ``if TYPE_CHECKING:`` and
inside functions: both are edges a reader has to follow, and a function-level import is how a
wrong-way dependency usually sneaks in. A failure names the file, the line and the import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fastapi_streamhub

PACKAGE_DIR = Path(fastapi_streamhub.__file__).resolve().parent
ROOT = "fastapi_streamhub"

# Leaf modules every layer may use. Anything else at the top level is the engine.
KERNEL = frozenset(
    f"{ROOT}.{name}"
    for name in (
        "__about__",
        "_types",
        "_trusted",
        "_errors",
        "_config",
        "_codec",
        "_fanout",
        "_budget",
    )
)
FACADES = frozenset({ROOT, f"{ROOT}.client", f"{ROOT}.__main__"})

# Which package layers each layer may import (itself included).
ALLOWED_LAYERS: dict[str, frozenset[str]] = {
    "kernel": frozenset({"kernel"}),
    "backends": frozenset({"kernel", "backends"}),
    "engine": frozenset({"kernel", "backends", "engine"}),
    "http": frozenset({"kernel", "backends", "engine", "http"}),
    "cli": frozenset({"kernel", "backends", "engine", "cli"}),
    "client": frozenset({"kernel", "client"}),
    # SDK adapters turn an SDK's objects into chunks: the kernel's types are all they need.
    "adapters": frozenset({"kernel", "adapters"}),
}
# Third-party packages each layer must not import (the engine must run without a web stack;
# the client extra must not drag in FastAPI or Redis).
_WEB = frozenset({"fastapi", "starlette", "pydantic", "httpx"})
FORBIDDEN_THIRD_PARTY: dict[str, frozenset[str]] = {
    "kernel": _WEB,
    "backends": _WEB,
    "engine": _WEB,
    "http": frozenset({"httpx"}),
    "cli": _WEB,
    "client": frozenset({"fastapi", "starlette", "pydantic", "redis"}),
    "adapters": _WEB | {"redis"},
}


@dataclass(frozen=True)
class Edge:
    """One import statement's target, seen from the module that holds it."""

    source: str
    path: str
    line: int
    target: str


def layer_of(module: str) -> str:
    """The layer a package module belongs to (``facade`` for the public entry points)."""
    if module in FACADES:
        return "facade"
    if module in KERNEL:
        return "kernel"
    parts = module.split(".")
    sub = parts[1]
    return {
        "_http": "http",
        "_client": "client",
        "_cli": "cli",
        "backends": "backends",
        "adapters": "adapters",
    }.get(sub, "engine")


def module_name(path: Path, package_dir: Path = PACKAGE_DIR) -> str:
    """``fastapi_streamhub._http.router`` for ``.../fastapi_streamhub/_http/router.py``."""
    rel = path.relative_to(package_dir).with_suffix("")
    parts = [ROOT, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool, path: str) -> Iterator[Edge]:
    """Every import in ``source`` (all of the tree: TYPE_CHECKING blocks and functions too)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Edge(module, path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                # A package's own ``.`` is itself; a module's is its parent.
                anchor = module.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop] if drop else anchor
                base = ".".join([*anchor, node.module] if node.module else anchor)
            if base == ROOT or base.startswith(ROOT + "."):
                # ``from pkg import x``: x may be a submodule; the check resolves the longest
                # module prefix, so a plain name falls back to ``pkg`` itself.
                for alias in node.names:
                    yield Edge(module, path, node.lineno, f"{base}.{alias.name}")
            else:
                yield Edge(module, path, node.lineno, base)


def _package_modules(names: set[str], target: str) -> str | None:
    """The longest prefix of ``target`` that is a module of the package (None if none is)."""
    while target and target not in names:
        target = target.rpartition(".")[0]
    return target or None


def violations(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """One line per import against the allowed directions, naming file, line and import."""
    files = sorted(package_dir.rglob("*.py"))
    names = {module_name(f, package_dir) for f in files}
    found: list[str] = []
    for file in files:
        module = module_name(file, package_dir)
        layer = layer_of(module)
        rel = f"{ROOT}/{file.relative_to(package_dir)}"
        is_package = file.name == "__init__.py"
        for edge in imports_of(file.read_text(encoding="utf-8"), module, is_package, rel):
            if edge.target == ROOT or edge.target.startswith(ROOT + "."):
                if layer == "facade":
                    continue
                target = _package_modules(names, edge.target)
                where = f"{edge.path}:{edge.line} ({layer}) imports {target}"
                if target is None:
                    found.append(f"{where}: not a module of the package")
                    continue
                target_layer = layer_of(target)
                if target_layer == "facade":
                    found.append(f"{where}: only the user imports the public facades")
                elif target_layer not in ALLOWED_LAYERS[layer]:
                    found.append(f"{where}: {layer} may not import {target_layer}")
            elif layer != "facade":
                where = f"{edge.path}:{edge.line} ({layer}) imports {edge.target}"
                top = edge.target.split(".")[0]
                if top in FORBIDDEN_THIRD_PARTY[layer]:
                    found.append(f"{where}: {layer} may not import {top}")
    # One line per offence, not per imported name (``from x import a, b`` is one import).
    return list(dict.fromkeys(found))


def test_every_import_goes_in_an_allowed_direction() -> None:
    """No module imports against the layering (TYPE_CHECKING and function imports included)."""
    problems = violations()
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_every_module_has_a_known_layer() -> None:
    """The walk sees the subpackages, so a renamed folder cannot silently escape the rules."""
    layers = {layer_of(module_name(f)) for f in PACKAGE_DIR.rglob("*.py")}
    assert layers == {
        "facade",
        "kernel",
        "backends",
        "engine",
        "http",
        "cli",
        "client",
        "adapters",
    }


def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / ROOT
    for rel, text in {"__init__.py": "", "_types.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_walk_catches_hidden_wrong_way_imports(tmp_path: Path) -> None:
    """Imports under TYPE_CHECKING, inside functions and relative ones are all reported."""
    root = _fake_package(
        tmp_path,
        {
            "_hub.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from starlette.requests import Request\n"
                "def f():\n"
                "    from ._http import router\n"
            ),
            "_http/__init__.py": "",
            "_http/router.py": "from .._client import clients\n",
            "_client/__init__.py": "",
            "_client/clients.py": "from .. import _hub\nimport redis\n",
            "backends/__init__.py": "",
            "backends/redis.py": "from fastapi_streamhub.client import StreamClient\n",
            "client.py": "from ._client.clients import x\nimport httpx\n",
        },
    )
    found = violations(root)
    expected = [
        "fastapi_streamhub/_client/clients.py:1 (client) imports fastapi_streamhub._hub: "
        "client may not import engine",
        "fastapi_streamhub/_client/clients.py:2 (client) imports redis: client may not import redis",
        "fastapi_streamhub/_http/router.py:1 (http) imports fastapi_streamhub._client.clients: "
        "http may not import client",
        "fastapi_streamhub/_hub.py:3 (engine) imports starlette.requests: "
        "engine may not import starlette",
        "fastapi_streamhub/_hub.py:5 (engine) imports fastapi_streamhub._http.router: "
        "engine may not import http",
        "fastapi_streamhub/backends/redis.py:1 (backends) imports fastapi_streamhub.client: "
        "only the user imports the public facades",
    ]
    assert sorted(found) == expected
