"""Each router's access policy reaches the endpoints all routers share (``_http/access.py``),
over real HTTP (uvicorn subprocess of ``tests/openapi_app.py``: ``/streams`` has no authorize,
``/api/chat`` refuses ids starting with ``deny``).

- two routers of one app keep their own policy;
- parameters are validated before the policy runs: a bad parameter is a 422 whoever asks.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from support.apps import AppServer, start_servers
from support.sids import new_sid as sid

TIMEOUT = 10.0
CROSS_SITE = {"sec-fetch-site": "cross-site", "origin": "https://evil.example"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    app = AppServer("access", {}, tmp_path_factory.mktemp("access"), "openapi_app:app")
    try:
        start_servers([app])
        yield app
    finally:
        app.stop()


@pytest.fixture
def client(server: AppServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, trust_env=False) as c:
        yield c


def test_each_router_keeps_its_own_authorize(client: httpx.Client) -> None:
    """The same endpoint functions answer both routers; only /api/chat has the authorize."""
    denied = sid("deny")
    assert client.get(f"/streams/{denied}/status").status_code == 404
    assert client.get(f"/api/chat/{denied}/status").status_code == 403
    assert client.get(f"/api/chat/{sid()}/status").status_code == 404
    resp = client.post("/api/chat/active", json={"session_ids": [denied, sid()]})
    assert resp.status_code == 200 and resp.json() == {"active": []}


@pytest.mark.parametrize("prefix", ["/streams", "/api/chat"])
def test_a_bad_parameter_is_422_before_the_access_checks(client: httpx.Client, prefix: str) -> None:
    """A refused id or a cross-site request with an invalid parameter still gets the 422 of
    the parameter: the policy runs in the endpoint, after FastAPI validated its input."""
    denied = sid("deny")
    resp = client.post(f"{prefix}/{denied}/cancel", params={"wait": "100"})
    assert resp.status_code == 422, resp.text
    resp = client.post(f"{prefix}/{sid()}/cancel", params={"wait": "x"}, headers=CROSS_SITE)
    assert resp.status_code == 422, resp.text
    # The same requests with valid parameters are refused by the policy.
    resp = client.post(f"{prefix}/{sid()}/cancel", params={"wait": "0"}, headers=CROSS_SITE)
    assert resp.status_code == 403, resp.text
    expected = 403 if prefix == "/api/chat" else 404
    assert client.post(f"{prefix}/{denied}/cancel").status_code == expected
