"""The package exports exactly what its __init__ defines and the README documents; settings are
validated."""

import ast
import inspect
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import fastapi_streamhub
from fastapi_streamhub import StreamHub

README = Path(__file__).resolve().parent.parent / "README.md"


def bound_in_init() -> set[str]:
    """The names ``fastapi_streamhub/__init__.py`` binds at top level (imports and assignments)."""
    assert fastapi_streamhub.__file__ is not None
    tree = ast.parse(Path(fastapi_streamhub.__file__).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def documented() -> set[str]:
    """The names in the first column of the README's "Public names" table."""
    section = re.search(
        r"^### Public names\n(.*?)^#", README.read_text(encoding="utf-8"), re.M | re.S
    )
    assert section is not None, "README.md has no '### Public names' section"
    rows = [line for line in section.group(1).splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])}


def test_all_is_sorted_and_exactly_what_init_defines() -> None:
    exported = fastapi_streamhub.__all__
    assert exported == sorted(exported)
    assert len(set(exported)) == len(exported)
    # Public names of __init__ (dunders like __version__ count; private helpers and __all__ not).
    public = {n for n in bound_in_init() if not n.startswith("_") or n == "__version__"}
    assert set(exported) == public
    # Nothing public reaches the package's namespace by another way (submodules aside).
    present = {
        n
        for n, v in vars(fastapi_streamhub).items()
        if not n.startswith("_") and not isinstance(v, ModuleType)
    }
    assert present <= set(exported), sorted(present - set(exported))


def test_every_exported_name_is_importable_and_documented() -> None:
    for name in fastapi_streamhub.__all__:
        value = getattr(fastapi_streamhub, name)  # raises if listed but missing
        if isinstance(value, type) or inspect.isfunction(value):
            # A class's own docstring: inspect.getdoc would inherit its base's.
            doc = vars(value).get("__doc__") if isinstance(value, type) else value.__doc__
            assert doc, f"{name} has no docstring"
    assert documented() == set(fastapi_streamhub.__all__)


def test_every_error_derives_from_the_root() -> None:
    errors = [
        getattr(fastapi_streamhub, n)
        for n in fastapi_streamhub.__all__
        if isinstance(getattr(fastapi_streamhub, n), type)
        and issubclass(getattr(fastapi_streamhub, n), Exception)
    ]
    assert len(errors) == 13
    assert all(issubclass(e, fastapi_streamhub.StreamHubError) for e in errors)
    assert issubclass(fastapi_streamhub.SessionNotFound, LookupError)
    assert issubclass(fastapi_streamhub.BackendUnavailable, ConnectionError)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lease_ttl": 0}, "lease_ttl"),
        ({"lease_ttl": -1}, "lease_ttl"),
        ({"lease_ttl": float("nan")}, "lease_ttl"),
        ({"lease_ttl": "10"}, "lease_ttl"),
        ({"retention": 1, "lease_ttl": 10}, "retention"),
        ({"renew_interval": 20}, "renew_interval"),
        ({"key_prefix": "a b"}, "key_prefix"),
        ({"key_prefix": ""}, "key_prefix"),
        ({"maxlen": 0}, "maxlen"),
        ({"max_chunk_bytes": True}, "max_chunk_bytes"),
    ],
)
def test_settings_are_validated_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StreamHub(**options)


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        StreamHub(lease_tll=3)


@pytest.mark.parametrize("url", ["http://x", "redis", "mysql://a/b", ""])
def test_from_url_refuses_unknown_schemes(url: str) -> None:
    with pytest.raises(ValueError, match="scheme"):
        StreamHub.from_url(url)


def test_from_url_schemes() -> None:
    assert type(StreamHub.from_url("memory://").backend).__name__ == "MemoryBackend"
    for url in ("redis://127.0.0.1:1/0", "rediss://127.0.0.1:1/0", "unix:///tmp/x.sock"):
        assert type(StreamHub.from_url(url).backend).__name__ == "RedisBackend"
    for url in ("postgresql://u@127.0.0.1:1/db", "postgres://127.0.0.1:1/db"):
        assert type(StreamHub.from_url(url).backend).__name__ == "PostgresBackend"


def test_constructor_refuses_other_objects() -> None:
    with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis"):
        StreamHub(object())
