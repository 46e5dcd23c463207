"""Fast construction of the frozen value types on the engine's hot path.

A frozen dataclass sets each field through ``object.__setattr__`` (a function call per field),
and :class:`Cursor` also validates its numbers: about 1 µs per chunk for a cursor and a chunk,
which every live chunk and every replayed chunk pays. Inside the engine the numbers come from
the store (already valid) or from arithmetic on valid ones, so the objects are built here
instead: a mutable twin with the same slots stores the fields directly, then becomes the frozen
class (``__class__`` assignment, which CPython allows between classes of identical slot layout).
The result is an ordinary instance of the public class: frozen, equal, hashable and pickled like
one built by its constructor (``tests/test_trusted.py`` checks it). User input never comes here:
cursors from clients go through :meth:`Cursor.parse` and its checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, cast

from ._types import Batch, Chunk, Cursor

__all__ = ["trusted_batch", "trusted_chunk", "trusted_cursor"]


class _CursorTwin:
    __slots__ = ("generation", "offset")

    def __init__(self, generation: int, offset: int) -> None:
        self.generation = generation
        self.offset = offset
        self.__class__ = Cursor  # type: ignore[assignment]


class _ChunkTwin:
    __slots__ = ("cursor", "data", "kind", "event", "producer")  # noqa: RUF023 (field order)

    def __init__(
        self, cursor: Cursor, data: Any, kind: str, event: str | None, producer: str | None
    ) -> None:
        self.cursor = cursor
        self.data = data
        self.kind = kind
        self.event = event
        self.producer = producer
        self.__class__ = Chunk  # type: ignore[assignment]


class _BatchTwin:
    __slots__ = ("chunks", "cursor")

    def __init__(self, chunks: tuple[Chunk, ...], cursor: Cursor) -> None:
        self.chunks = chunks
        self.cursor = cursor
        self.__class__ = Batch  # type: ignore[assignment]


def _check_twin(twin: type, frozen: type) -> None:
    # The twins must list the frozen class's fields, in order: the slot layout is what makes
    # the class assignment legal, and a field added to the public class must be added here.
    names = tuple(f.name for f in fields(frozen))
    if vars(twin).get("__slots__") != names or vars(frozen).get("__slots__") != names:
        raise RuntimeError(f"{twin.__name__} is out of step with {frozen.__name__}'s fields")


for _twin, _frozen in ((_CursorTwin, Cursor), (_ChunkTwin, Chunk), (_BatchTwin, Batch)):
    _check_twin(_twin, _frozen)

#: ``Cursor(generation, offset)`` without validation: for numbers read from the store.
trusted_cursor = cast("Callable[[int, int], Cursor]", _CursorTwin)
#: ``Chunk(cursor, data, kind, event, producer)``, every argument given.
trusted_chunk = cast("Callable[[Cursor, Any, str, str | None, str | None], Chunk]", _ChunkTwin)
#: ``Batch(chunks, cursor)``.
trusted_batch = cast("Callable[[tuple[Chunk, ...], Cursor], Batch]", _BatchTwin)
