"""The ``streamhub`` console script: inspect and steer the sessions of a Redis from a shell.

``main`` lives here so that pyproject's ``streamhub = "fastapi_streamhub._cli:main"`` and
``python -m fastapi_streamhub`` keep working now that the CLI is a package.
"""

from .commands import EXIT_CODES, main

__all__ = ["EXIT_CODES", "main"]
