"""The signed key set over HTTP: the API's endpoint, and a gateway polling it.

The gateway fetches with urllib, so the JWS the real API serves is handed to it by a plain
HTTP server on loopback (the test client talks to the API in-process, without a socket)."""

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest

from api.keys.keyring import KeyRing, add_next
from citykey_protocol.keyset import KEYSET_CONTENT_TYPE, KEYSET_PATH, KeySetRejection
from lock_gateway.keys import KeySet
from lock_gateway.keyset import KeySetController, KeySetRejectedError
from tests.conftest import ApiHarness


class _Served:
    """Serves ``body`` at every path until stopped."""

    def __init__(self) -> None:
        self.body = b""
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", KEYSET_CONTENT_TYPE)
                self.send_header("Content-Length", str(len(served.body)))
                self.end_headers()
                self.wfile.write(served.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{KEYSET_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served() -> Iterator[_Served]:
    server = _Served()
    yield server
    server.stop()


async def _endpoint(api: ApiHarness) -> bytes:
    response = await api.client.get(KEYSET_PATH)
    assert response.status_code == 200
    assert response.headers["content-type"] == KEYSET_CONTENT_TYPE
    return response.content


async def test_a_gateway_polls_the_signed_key_set_from_the_api(
    api: ApiHarness, served: _Served, key_dir: Path, tmp_path: Path
) -> None:
    ring = api.state.keyring
    issuer = api.state.settings.issuer
    body = await _endpoint(api)
    assert body.decode() == ring.signed_keyset(issuer)  # the same JWS as on the broker
    claims = jwt.decode(
        body, ring.keyset_signer.private_key.public_key(), algorithms=["ES256"], issuer=issuer
    )
    assert claims["ver"] == ring.generation

    controller = KeySetController(
        keys=KeySet.from_jwks(ring.jwks()), issuer=issuer, cache_path=None, url=served.url
    )
    served.body = body
    assert await controller.fetch() is True
    assert await controller.fetch() is False  # the same generation again

    add_next(key_dir)
    watcher = api.state.keys_watcher
    assert watcher is not None
    assert await watcher.check()
    served.body = await _endpoint(api)
    assert await controller.fetch() is True
    assert controller.version == ring.generation == 2

    # A planted set served from a spoofed endpoint is refused like one from the broker.
    rogue = KeyRing.initialize(tmp_path / "rogue")
    served.body = rogue.signed_keyset(issuer).encode()
    rejected: list[tuple[KeySetRejection, str]] = []
    applied: list[int] = []
    controller.poll_s = 0.05

    def on_rejected(exc: KeySetRejectedError, source: str) -> None:
        rejected.append((exc.reason, source))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("lock_gateway.keyset.FIRST_POLL_SPREAD_S", 0.0)
        task = controller.start_polling(lambda: applied.append(controller.version), on_rejected)
        assert task is not None
        async with asyncio.timeout(5):
            while not rejected:
                await asyncio.sleep(0.01)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert rejected[0] == (KeySetRejection.UNKNOWN_KEY, "http")
    assert applied == []
    assert controller.version == 2
    reason, source = rejected[0]
    print(f"\nHTTP poll: v1, v2 taken from {KEYSET_PATH}; planted set refused: {reason} ({source})")


async def test_an_unreachable_endpoint_changes_nothing(api: ApiHarness) -> None:
    ring = api.state.keyring
    controller = KeySetController(
        keys=KeySet.from_jwks(ring.jwks()),
        issuer=api.state.settings.issuer,
        cache_path=None,
        url="http://127.0.0.1:1" + KEYSET_PATH,
    )
    assert await controller.fetch() is False
    assert controller.version == 0
