"""Who may call a router's endpoints: its ``authorize`` and origin check, as one dependency."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import HTTPException, Request

from .errors import Authorize, authorize_or_raise
from .guard import OriginCheck

__all__ = ["Access", "router_access"]

# Where a router's Access waits for its endpoints during one request. The endpoints are
# module-level functions shared by every router, so the router that matched hands over its
# own policy through the request scope rather than through a closure.
_SCOPE_KEY = "fastapi_streamhub.access"


class Access:
    """The access policy of one router: the cross-origin check, then ``authorize``.

    A router lists its ``Access`` among its dependencies; that only records the policy on the
    request. The checks run when an endpoint calls :meth:`check`, after FastAPI validated the
    endpoint's parameters: an invalid id or parameter is a 422 before ``authorize`` sees it.
    """

    def __init__(self, authorize: Authorize | None, allowed_origins: Sequence[str] | None) -> None:
        self.authorize = authorize
        self.same_origin = OriginCheck(allowed_origins)

    # Async so that FastAPI calls it inline, not on a worker thread.
    async def __call__(self, request: Request) -> None:
        """The router dependency: make this policy the one :func:`router_access` returns."""
        request.scope[_SCOPE_KEY] = self

    async def check(self, request: Request, session_id: str, action: str) -> None:
        """Refuse (HTTPException) a cross-origin write, then what ``authorize`` refuses."""
        self.same_origin(request)
        if self.authorize is not None:
            await authorize_or_raise(self.authorize, request, session_id, action)

    async def may_see(self, request: Request, session_id: str) -> bool:
        """Whether ``authorize`` lets ``request`` see the status of ``session_id``."""
        if self.authorize is None:
            return True
        try:
            await authorize_or_raise(self.authorize, request, session_id, "status")
        except HTTPException as exc:
            # 404 too: an authorize that hides other users' sessions as "not found" must not
            # have the whole answer fail, which would tell that one of the ids exists.
            if exc.status_code in (403, 404):
                return False
            raise
        return True


async def router_access(request: Request) -> Access:
    """The :class:`Access` of the router whose route answers ``request``."""
    try:
        access = request.scope[_SCOPE_KEY]
    except KeyError:
        # Only reachable by registering an endpoint on a router without its Access.
        raise RuntimeError("a streamhub endpoint runs without its router's Access") from None
    if not isinstance(access, Access):
        raise RuntimeError(f"{_SCOPE_KEY} holds {type(access).__name__}, not an Access")
    return access
