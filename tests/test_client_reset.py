"""A client that resets its connection (TCP RST) in the middle of a stream, over real HTTP.

The app (``tests/openapi_app.py``) runs in a uvicorn subprocess twice: as is (uvicorn drops
what is sent after the reset and tells the app ``http.disconnect``), and wrapped so that
``send()`` raises ``ConnectionResetError`` after the reset, as the ASGI spec lets a server do.
Either way nothing is logged at WARNING or above (neither by the library nor by uvicorn's
error log), and the producer, which runs in the hub and not in the request, carries on: the
session ends ``done`` with every chunk stored.
"""

from __future__ import annotations

import socket
import struct
import uuid
from collections.abc import Iterator

import httpx
import pytest
from support.apps import AppServer, start_servers
from support.sse_client import wait_until

pytestmark = pytest.mark.anyio

N = 60
DELAY = 0.02  # about 1.2 s of stream, of which the client reads the first few events
# What the app logs when something goes wrong: uvicorn's error log, the library's log (both
# at WARNING and above, see tests/openapi_app.py), a traceback.
LOG_MARKERS = ("ERROR", "WARNING", "CRITICAL", "Traceback", "Exception")


@pytest.fixture(scope="module", params=["uvicorn", "send-raises"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppServer]:
    env = {"ASGI_SEND_RAISES": "1" if request.param == "send-raises" else "0"}
    srv = AppServer(
        f"reset-{request.param}", env, tmp_path_factory.mktemp("reset"), "openapi_app:app"
    )
    try:
        start_servers([srv])
        yield srv
    finally:
        srv.stop()


def read_events_then_reset(port: int, path: str, events: int) -> bytes:
    """GET ``path`` on a raw socket, read until ``events`` ids arrived, then close with RST."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        data = b""
        while data.count(b"\nid: ") < events:
            more = sock.recv(65536)
            assert more, data
            data += more
        # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()
    return data


async def test_reset_mid_stream_logs_nothing_and_the_producer_completes(server: AppServer) -> None:
    sid = f"reset-{uuid.uuid4().hex[:12]}"
    mark = len(server.log())
    head = read_events_then_reset(server.port, f"/gen/{sid}?n={N}&delay={DELAY}", 5)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]

    async with httpx.AsyncClient(base_url=server.url, timeout=10, trust_env=False) as client:

        async def finished() -> bool:
            resp = await client.get(f"/streams/{sid}/status")
            return resp.status_code == 200 and resp.json()["state"] != "active"

        await wait_until(finished, within=15, what="the generation to end")
        status = (await client.get(f"/streams/{sid}/status")).json()
        assert status["state"] == "done", status
        assert status["chunks"] == N, status
        snapshot = (await client.get(f"/streams/{sid}/snapshot")).json()
        assert snapshot["text"] == "".join(f"t{i} " for i in range(N))
        # The server is still fine, and wrote its log: a request after the reset answered.
        assert (await client.get("/healthz")).status_code == 200

    log = server.log()[mark:]
    for marker in LOG_MARKERS:
        assert marker not in log, f"the app logged {marker!r}:\n{log}"
    assert server.alive()
