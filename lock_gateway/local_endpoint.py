"""The gateway's local channel: a tiny HTTP/1.1 server on the building's LAN (or loopback).

It exists for one request, ``POST /v1/offline-unlock`` (citykey_protocol/offline.py), which a
citizen's app sends straight to the gateway when the building's internet or the API is down.
It runs whether or not the broker is reachable.

HTTP is parsed by h11 (sans-IO, small, strict) over asyncio streams rather than by hand, and
the server is kept deliberately small and bounded: one route, request bodies of at most 16 KiB,
a whole request within a deadline (so a slow client cannot hold a connection), a bounded number
of connections and of requests per connection. Everything it answers is JSON; errors have the
shape ``{"error": {"code", "message"}}`` with an OfflineRefusal code.

The channel is not confidential (plain HTTP): what travels on it is an offline token bound to
the app's key and a proof that is single-use and fresh for 30 seconds, so a captured pair opens
nothing later (docs/security.md, "Offline unlock").
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import h11
import msgspec

from citykey_protocol.codes import OfflineRefusal
from citykey_protocol.offline import MAX_REQUEST_BYTES, OFFLINE_REFUSAL_STATUS, OFFLINE_UNLOCK_PATH

log = logging.getLogger(__name__)

_MESSAGES = {  # for people; clients switch on the code
    OfflineRefusal.MALFORMED_REQUEST: "the body must be a JSON object with 'token' and 'proof'",
    OfflineRefusal.BAD_TOKEN: "the offline token is not valid",
    OfflineRefusal.EXPIRED: "the offline token has expired; get a new one while online",
    OfflineRefusal.NOT_YET_VALID: "the offline token is not valid yet",
    OfflineRefusal.WRONG_GATEWAY: "the offline token is for another gateway",
    OfflineRefusal.UNKNOWN_DOOR: "the offline token is for a door this gateway does not serve",
    OfflineRefusal.REVOKED: "the offline token was revoked",
    OfflineRefusal.BAD_PROOF: "the proof is not valid",
    OfflineRefusal.KEY_MISMATCH: "the proof is not signed by the key the token is bound to",
    OfflineRefusal.PROOF_MISMATCH: "the proof was made for another token or door",
    OfflineRefusal.STALE_PROOF: "the proof is too old or too far in the future",
    OfflineRefusal.REPLAYED_PROOF: "this proof was already used; make a new one",
    OfflineRefusal.LOCKDOWN: "the building is in lockdown",
    OfflineRefusal.LOCK_JAMMED: "the lock is jammed; the door did not open",
    OfflineRefusal.DEVICE_ERROR: "the lock reported a fault",
    OfflineRefusal.REPLAY_STORE_ERROR: "the gateway cannot record the proof now",
    OfflineRefusal.REVOCATIONS_UNAVAILABLE: "the gateway cannot check revocations now",
    OfflineRefusal.JOURNAL_UNAVAILABLE: "the gateway cannot record the opening now",
}


@dataclass(frozen=True, slots=True)
class OfflineAnswer:
    """What the local endpoint sends back: an HTTP status and a JSON body."""

    status: int
    body: bytes


def refusal(reason: OfflineRefusal, message: str | None = None) -> OfflineAnswer:
    """The error answer for ``reason``: ``{"error": {"code", "message"}}``."""
    body = {"error": {"code": reason.value, "message": message or _MESSAGES.get(reason, "")}}
    return OfflineAnswer(OFFLINE_REFUSAL_STATUS[reason], msgspec.json.encode(body))


Handler = Callable[[bytes], Awaitable[OfflineAnswer]]
"""Turns the body of an offline unlock request into the answer."""

MAX_CONNECTIONS = 32
"""Connections served at once; more are closed at once (a phone needs one)."""
MAX_REQUESTS_PER_CONNECTION = 100
REQUEST_TIMEOUT_S = 10.0
"""A request must arrive whole within this many seconds (also the keep-alive idle limit)."""
_READ_CHUNK = 65536
_SERVER_HEADER = ("server", "citykey-gateway")


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:port``; port 0 picks a free one) -> (host, port).
    Raise ValueError when it is not that."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen address must be HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class _TooLargeError(Exception):
    pass


class LocalEndpoint:
    """Serves ``POST /v1/offline-unlock`` on ``listen`` with ``handler``."""

    def __init__(
        self,
        listen: str,
        handler: Handler,
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self._host, self._port = parse_listen(listen)
        self._handler = handler
        self._max_connections = max_connections
        self._timeout_s = request_timeout_s
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The address actually bound (with the port chosen when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the local endpoint is not running")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """Base URL of the endpoint, e.g. ``http://127.0.0.1:8443``."""
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def start(self) -> None:
        """Bind and start serving (returns at once)."""
        self._server = await asyncio.start_server(self._accept, self._host, self._port)
        log.info("local endpoint listening on %s", self.url)

    async def close(self) -> None:
        """Stop listening and end the open connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self._max_connections:
            log.warning("local endpoint: too many connections, closing a new one")
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=8192)
        for _ in range(MAX_REQUESTS_PER_CONNECTION):
            try:
                async with asyncio.timeout(self._timeout_s):
                    request = await self._read_request(connection, reader)
            except TimeoutError:
                return
            except h11.RemoteProtocolError:
                await self._send_quietly(
                    connection, writer, refusal(OfflineRefusal.MALFORMED_REQUEST, "bad HTTP")
                )
                return
            except _TooLargeError:
                await self._send_quietly(
                    connection, writer, refusal(OfflineRefusal.PAYLOAD_TOO_LARGE, "body too long")
                )
                return
            except ConnectionError:
                return
            if request is None:
                return  # the client closed the connection between requests
            head, body = request
            answer = await self._route(head, body)
            if not await self._send_quietly(connection, writer, answer):
                return
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return  # h11 decided the connection must close (Connection: close, HTTP/1.0)
            connection.start_next_cycle()

    async def _read_request(
        self, connection: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request, bytes] | None:
        """The next request and its body; None when the client closed cleanly."""
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(_READ_CHUNK))
            elif isinstance(event, h11.Request):
                head = event
                length = _content_length(event)
                if length is not None and length > MAX_REQUEST_BYTES:
                    raise _TooLargeError
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_REQUEST_BYTES:
                    raise _TooLargeError
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return head, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                if head is None:
                    return None
                raise ConnectionError("closed mid-request")
            else:  # PAUSED cannot happen before the response; anything else is a bug in h11
                raise ConnectionError(f"unexpected HTTP event {event!r}")

    async def _route(self, head: h11.Request, body: bytes) -> OfflineAnswer:
        path = head.target.split(b"?", 1)[0]
        if path != OFFLINE_UNLOCK_PATH.encode("ascii"):
            return refusal(OfflineRefusal.NOT_FOUND, "no such route")
        if head.method != b"POST":
            return refusal(OfflineRefusal.METHOD_NOT_ALLOWED, "use POST")
        try:
            return await self._handler(body)
        except Exception:
            log.exception("local endpoint: offline unlock failed")
            return refusal(OfflineRefusal.INTERNAL_ERROR, "internal error")

    async def _send_quietly(
        self, connection: h11.Connection, writer: asyncio.StreamWriter, answer: OfflineAnswer
    ) -> bool:
        """Send ``answer``; False when it cannot be (state or socket), so the caller closes."""
        if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(answer.body))),
            ("cache-control", "no-store"),
            _SERVER_HEADER,
        ]
        if answer.status == 405:
            headers.append(("allow", "POST"))
        try:
            head = h11.Response(
                status_code=answer.status,
                headers=headers,
                reason=HTTPStatus(answer.status).phrase.encode("ascii"),
            )
            data = connection.send(head)
            data = (data or b"") + (connection.send(h11.Data(data=answer.body)) or b"")
            data += connection.send(h11.EndOfMessage()) or b""
            writer.write(data)
            await writer.drain()
        except (h11.LocalProtocolError, ConnectionError) as exc:
            log.info("local endpoint: answer not sent: %s", exc)
            return False
        return True


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has already checked it is a number
    return None
