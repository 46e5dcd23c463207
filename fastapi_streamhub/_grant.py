"""The fan-in grant: a leaf type that names who may write into which generation."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._types import validate_session_id

__all__ = ["Grant", "check_name"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_name(name: object) -> str:
    """A fan-in producer name, checked (raises ValueError)."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ValueError(
            "producer name must be 1-64 characters of letters, digits and _ . -, "
            "starting with a letter or a digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission for the producer ``name`` to write into one generation of a session.

    ``str(grant)`` is ``<generation>:<name>:<session id>``, for handing it to another process;
    :meth:`parse` reads it back. It is not a secret: guard the route that joins with it.
    """

    session_id: str
    generation: int
    name: str

    def __post_init__(self) -> None:
        validate_session_id(self.session_id)
        check_name(self.name)
        if type(self.generation) is not int or self.generation <= 0:
            raise ValueError("grant generation must be a positive integer")

    def __str__(self) -> str:
        return f"{self.generation}:{self.name}:{self.session_id}"

    @classmethod
    def parse(cls, value: str) -> Grant:
        """Read ``<generation>:<name>:<session id>``; raises ValueError."""
        parts = value.split(":", 2) if isinstance(value, str) else []
        if len(parts) != 3 or not parts[0].isdigit():
            raise ValueError("grant must look like '<generation>:<name>:<session id>'")
        return cls(parts[2], int(parts[0]), parts[1])
