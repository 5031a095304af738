"""Request body size limit, as a pure ASGI middleware (no buffering, no BaseHTTPMiddleware).

A declared Content-Length over the limit is refused before a byte of the body is read. A body
without Content-Length (chunked) is counted as it streams in: the read that crosses the limit
raises :class:`PayloadTooLarge`, an HTTPException, so FastAPI's body parsing passes it on and
the app's error handler answers ``413 payload_too_large`` in the usual error shape; if it
escapes the app instead, this middleware answers itself. The endpoint never sees a partial
body.

No ``Connection: close`` on the 413: closing a socket that still holds unread request bytes
makes the kernel send a reset, and the client may lose the 413 before reading it. uvicorn
discards the rest of a body the app did not read and keeps the connection usable.
"""

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CODE = "payload_too_large"


class PayloadTooLarge(HTTPException):
    """Raised by the wrapped ``receive`` when the body grows past the limit."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            status_code=413,
            detail=f"the request body is larger than {max_bytes} bytes",
        )


class BodySizeLimit:
    """Refuse request bodies longer than ``max_bytes`` with 413 payload_too_large."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except PayloadTooLarge:
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "error": {
                    "code": CODE,
                    "message": f"the request body is larger than {self.max_bytes} bytes",
                    "max_bytes": self.max_bytes,
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length; count the stream instead
    return None
