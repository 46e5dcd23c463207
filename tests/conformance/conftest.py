"""Fixtures of the conformance suite: every test runs on each backend through ``make_hub``.

``store`` (parametrised: memory, redis, redis-cluster) is one shared store; ``make_hub`` is a
factory of started hubs on it, so "two instances" are two hubs from the factory. ``redis_store``
and ``make_redis_hub`` are the same on the shared Redis server only, for Redis-specific tests.
The classes and helpers behind them are in tests/support/conformance.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.conformance import STORE_KINDS, HubFactory, RedisStore, Store, make_store, open_hubs
from support.redis_server import RedisServer


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Store:
    return make_store(request)


@pytest.fixture
def redis_store(redis_url: str, redis_server: RedisServer) -> RedisStore:
    return RedisStore(redis_url, redis_server)


@pytest.fixture
async def make_hub(store: Store) -> AsyncIterator[HubFactory]:
    """Factory of started hubs on the shared store; all are closed (in reverse) at teardown."""
    async with open_hubs(store) as factory:
        yield factory


@pytest.fixture
async def make_redis_hub(redis_store: RedisStore) -> AsyncIterator[HubFactory]:
    async with open_hubs(redis_store) as factory:
        yield factory
