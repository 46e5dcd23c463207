"""Redis clients from URLs: one Redis, a Redis Cluster, or a primary found through Sentinel.

- ``redis://``, ``rediss://``, ``unix://``: redis-py's own URL form.
- ``redis+cluster://[user:password@]host:port[,host:port...]``: any reachable nodes of the
  cluster (``rediss+cluster://`` for TLS); the client discovers the rest.
- ``redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]``: the Sentinels
  to ask for the primary of ``service_name`` (``rediss+sentinel://`` for TLS to the primary);
  the credentials are the primary's. ``?sentinel_password=...`` authenticates to the Sentinels.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["SCHEMES", "redis_client"]

SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
)


def _hosts(netloc: str, url: str) -> list[tuple[str, int]]:
    hosts: list[tuple[str, int]] = []
    for item in netloc.rpartition("@")[2].split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port in {url!r}, got {item!r}")
        hosts.append((host.strip("[]"), int(port)))
    return hosts


def _credentials(netloc: str) -> dict[str, Any]:
    userinfo, sep, _ = netloc.rpartition("@")
    if not sep:
        return {}
    user, has_password, password = userinfo.partition(":")
    out: dict[str, Any] = {"username": unquote(user) or None}
    if has_password:
        out["password"] = unquote(password)
    return out


def redis_client(url: str) -> tuple[Any, list[Any]]:
    """The client for ``url`` and everything to ``aclose()`` when done with it."""
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        from redis.asyncio import Redis

        client = Redis.from_url(url)
        return client, [client]
    parts = urlsplit(url)
    # urlsplit cannot read "h1:p1,h2:p2" as a port: take the raw network location.
    netloc = url.partition("://")[2].partition("/")[0].partition("?")[0]
    tls = scheme.startswith("rediss")
    if scheme.endswith("+cluster"):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        if parts.path.strip("/"):
            raise ValueError(f"a cluster URL has no path (a cluster has one database): {url!r}")
        nodes = [ClusterNode(host, port) for host, port in _hosts(netloc, url)]
        cluster = RedisCluster(startup_nodes=nodes, ssl=tls, **_credentials(netloc))
        return cluster, [cluster]
    if scheme.endswith("+sentinel"):
        from redis.asyncio.sentinel import Sentinel

        path = [p for p in parts.path.split("/") if p]
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError(
                f"a Sentinel URL names the service: .../service_name[/db], got {url!r}"
            )
        query = parse_qs(parts.query)
        sentinel_kwargs: dict[str, Any] = {}
        if "sentinel_password" in query:
            sentinel_kwargs["password"] = query["sentinel_password"][-1]
        # Typed as Any: redis-py's annotations of Sentinel.__init__ changed between releases
        # (untyped in 8.1, typed in 8.2), and no ``type: ignore`` may depend on the version.
        make_sentinel: Any = Sentinel
        sentinel = make_sentinel(_hosts(netloc, url), sentinel_kwargs=sentinel_kwargs)
        client = sentinel.master_for(
            unquote(path[0]),
            db=int(path[1]) if len(path) == 2 else 0,
            ssl=tls,
            **_credentials(netloc),
        )
        return client, [client, *sentinel.sentinels]
    raise ValueError(
        f"unsupported URL scheme {scheme!r}: use memory://, "
        + ", ".join(f"{s}://" for s in SCHEMES)
        + ", postgresql://, postgres://"
    )
