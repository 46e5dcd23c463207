"""The Redis backend's one fencing-refusal decoder, and the refusal reasons Python and Lua share."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest

from fastapi_streamhub import State
from fastapi_streamhub.backends._replies import as_bytes, as_str, lost_of, refusal
from fastapi_streamhub.backends.base import PART_REFUSALS, Lost, Reason


def _lua() -> dict[str, str]:
    folder = resources.files("fastapi_streamhub.backends").joinpath("lua")
    return {f.name: f.read_text("utf-8") for f in folder.iterdir() if f.name.endswith(".lua")}


def _both(*reply: Any) -> list[list[Any]]:
    """A reply as redis-py gives it, with and without ``decode_responses``."""
    return [list(reply), [as_bytes(v) if isinstance(v, str) else v for v in reply]]


@pytest.mark.parametrize(
    ("reply", "lost"),
    [
        (("stale",), Lost("stale")),
        (("gone",), Lost("gone")),
        (("closed", "done", ""), Lost("closed", State.DONE, None)),
        (("closed", "failed", "lease_expired"), Lost("closed", State.FAILED, "lease_expired")),
        (("part", "replaced"), Lost("stale", reason="replaced")),
        (("part", "part_ended"), Lost("closed", reason="part_ended")),
        (("part", "not_admitted"), Lost("gone", reason="not_admitted")),
        (("ok",), None),
        (("ok", 7), None),
        (("ok", "active"), None),
        ((), None),
    ],
)
def test_lost_of_decodes_every_refusal_a_script_returns(
    reply: tuple[Any, ...], lost: Lost | None
) -> None:
    for shape in _both(*reply):
        assert lost_of(shape) == lost


@pytest.mark.parametrize(
    ("meta", "lost"),
    [
        ((None, None, None), Lost("gone")),
        ((b"6", b"active", None), Lost("stale")),
        ((b"5", b"cancelled", b""), Lost("closed", State.CANCELLED, None)),
        ((b"5", b"failed", None), Lost("closed", State.FAILED, None)),
        ((b"5", b"failed", b"boom"), Lost("closed", State.FAILED, "boom")),
        # Active and ours, yet the write was refused: the lease lapsed meanwhile.
        ((b"5", b"active", None), Lost("closed", State.FAILED, "lease_expired")),
    ],
)
def test_refusal_from_the_record_follows_the_lua_rule(
    meta: tuple[Any, Any, Any], lost: Lost
) -> None:
    assert refusal(5, list(meta)) == lost
    decoded = [None if v is None else as_str(v) for v in meta]
    assert refusal(5, decoded) == lost


def test_every_part_refusal_the_lua_scripts_return_is_a_reason() -> None:
    returned = {
        (name, m) for name, text in _lua().items() for m in re.findall(r"\{'part', '(\w+)'\}", text)
    }
    assert returned, "no {'part', ...} reply found: the pattern is out of date"
    assert {m for _, m in returned} == set(PART_REFUSALS)
    assert set(PART_REFUSALS) <= set(Reason)
    # The enum's docstring names the scripts beside each reason: keep it true.
    doc = Reason.__doc__ or ""
    for name, _ in returned:
        assert f"``{name}``" in doc, f"{name} returns a part refusal but Reason does not list it"


def test_every_script_that_stores_lease_expired_is_listed_beside_the_reason() -> None:
    writers = {name for name, text in _lua().items() if f"'{Reason.LEASE_EXPIRED}'" in text}
    assert writers, "no script writes 'lease_expired': the pattern is out of date"
    doc = Reason.__doc__ or ""
    for name in writers:
        assert f"``{name}``" in doc, f"{name} writes lease_expired but Reason does not list it"


def test_reasons_are_the_plain_strings_of_the_wire() -> None:
    assert [str(r) for r in Reason] == [
        "lease_expired",
        "superseded",
        "replaced",
        "part_ended",
        "not_admitted",
    ]
    assert Reason("replaced") is Reason.REPLACED
