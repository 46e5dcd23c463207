"""Unique session ids for tests, so tests sharing one Redis server never collide."""

from __future__ import annotations

import uuid


def new_sid(tag: str = "s") -> str:
    """A fresh session id ``<tag>-<12 hex digits>``; the tag says which test made it."""
    return f"{tag}-{uuid.uuid4().hex[:12]}"
