"""The Durable Streams router over real HTTP (uvicorn, ``tests/ds_app.py``): authorization on
every route, the body limit, names, and our own router beside it on the same hub. The protocol
itself is checked by the official suite (tests/test_durable_streams.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.apps import AppServer, serving
from support.sids import new_sid

from fastapi_streamhub import create_durable_streams_router

LIMIT = 1024
OWNER = {"X-User": "owner"}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    log_dir: Path = tmp_path_factory.mktemp("ds-http")
    env = {"AUTH": "1", "MAX_APPEND_BYTES": str(LIMIT), "MAX_LIVE_READERS": "1"}
    with serving(AppServer("ds-auth", env, log_dir, "ds_app:app")) as server:
        yield server


@pytest.fixture
def client(app: AppServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app.url, timeout=10.0, trust_env=False) as http:
        yield http


def test_authorize_guards_every_method(client: httpx.Client) -> None:
    url = f"/v1/stream/{new_sid()}"
    assert (
        client.put(url, headers={**OWNER, "Content-Type": "text/plain"}, content=b"x").status_code
        == 201
    )
    requests = [
        ("PUT", {"Content-Type": "text/plain"}, b""),
        ("POST", {"Content-Type": "text/plain"}, b"y"),
        ("GET", {}, b""),
        ("HEAD", {}, b""),
        ("DELETE", {}, b""),
    ]
    for method, headers, body in requests:
        refused = client.request(method, url, headers=headers, content=body)
        assert refused.status_code == 403, method
        assert refused.headers["x-content-type-options"] == "nosniff"
    # Nothing of the refused requests happened.
    read = client.get(url, headers=OWNER)
    assert read.status_code == 200 and read.content == b"x"
    # A CORS preflight carries no credentials: it is answered without authorize.
    assert client.options(url).status_code == 204


def test_a_body_over_the_limit_is_refused_and_changes_nothing(client: httpx.Client) -> None:
    url = f"/v1/stream/{new_sid()}"
    headers = {**OWNER, "Content-Type": "application/octet-stream"}
    assert client.put(url, headers=headers, content=b"a").status_code == 201
    too_big = client.post(url, headers=headers, content=b"b" * (LIMIT + 1))
    assert too_big.status_code == 413
    chunked = client.post(url, headers=headers, content=iter([b"c" * LIMIT, b"c"]))
    assert chunked.status_code == 413
    assert client.post(url, headers=headers, content=b"d" * LIMIT).status_code == 204
    assert client.get(url, headers=OWNER).content == b"a" + b"d" * LIMIT


def test_live_readers_of_one_stream_are_bounded(client: httpx.Client) -> None:
    url = f"/v1/stream/{new_sid()}"
    assert client.put(url, headers={**OWNER, "Content-Type": "text/plain"}).status_code == 201
    live = {"offset": "now", "live": "sse"}
    with client.stream("GET", url, params=live, headers=OWNER) as first:
        assert first.status_code == 200
        # The one slot is taken: another live reader of the stream is refused, others are not.
        assert (
            client.get(url, params={**live, "live": "long-poll"}, headers=OWNER).status_code == 429
        )
        assert client.get(url, headers=OWNER).status_code == 200  # catch-up reads are not live
    # The first reader gone, its slot comes back (once the server saw it leave).
    deadline = time.monotonic() + 10
    while True:
        answer = client.get(url, params={"offset": "now", "live": "long-poll"}, headers=OWNER)
        if answer.status_code != 429 or time.monotonic() > deadline:
            break
    assert answer.status_code == 204


def test_names_outside_the_session_id_rule_are_refused(client: httpx.Client) -> None:
    assert client.put("/v1/stream/a/b", headers=OWNER).status_code == 400
    assert client.put("/v1/stream/..", headers=OWNER).status_code in (400, 404)
    assert client.get("/v1/stream/__ds/subscriptions", headers=OWNER).status_code == 404


def test_our_router_beside_it_on_the_same_hub(client: httpx.Client) -> None:
    sid = new_sid()
    assert client.put(f"/v1/stream/{sid}", headers=OWNER).status_code == 201
    # The stream is no session: our router does not know it.
    assert client.get(f"/streams/{sid}/status", headers=OWNER).status_code == 404


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="long_poll_timeout"):
        create_durable_streams_router(long_poll_timeout=0)
    with pytest.raises(ValueError, match="max_append_bytes"):
        create_durable_streams_router(max_append_bytes=0)
    with pytest.raises(ValueError, match="max_live_readers"):
        create_durable_streams_router(max_live_readers=0)
