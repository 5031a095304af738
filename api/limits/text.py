"""Text PostgreSQL cannot store, refused at the door: a pure ASGI middleware.

PostgreSQL text holds neither NUL characters nor lone UTF-16 surrogates; a request carrying
one in a path, a query parameter or a JSON body used to reach the database and end as a 500.
This filter answers it with ``422 validation_error`` first, once, for every endpoint. It
also answers a JSON body that is not UTF-8 with ``422 malformed_json``, the code of any other
malformed JSON (FastAPI alone says ``400 There was an error parsing the body``).

The JSON body is parsed here as well as by the endpoint: bodies are small (at most
CITYKEY_MAX_BODY_BYTES, enforced just outside this middleware), and parsing is the only exact
way to see escaped characters (``"\\u0000"``).
"""

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BadText(HTTPException):
    """Raised by the wrapped ``receive`` (an HTTPException, so FastAPI's body parsing passes
    it on to the handler installed by :func:`install_handler`)."""

    def __init__(self, code: str, message: str, where: str) -> None:
        super().__init__(status_code=422, detail=message)
        self.code = code
        self.where = where

    def body(self) -> dict[str, Any]:
        field = {"loc": [self.where], "msg": self.detail, "type": "text"}
        return {"error": {"code": self.code, "message": self.detail, "fields": [field]}}


def _unstorable(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return True
    return False


def _any_unstorable(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _unstorable(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media = value.split(b";")[0].strip().lower()
            return bool(media == b"application/json" or media.endswith(b"+json"))
    return False


def check_body(body: bytes) -> None:
    """Raise :class:`BadText` for a JSON body that is not UTF-8 or holds unstorable text."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadText(
            "malformed_json", "request body is not valid JSON (not UTF-8)", "body"
        ) from None
    try:
        value = json.loads(text)
    except ValueError:
        return  # not JSON: the endpoint answers malformed_json with the position
    except RecursionError:  # thousands of nested arrays: FastAPI would answer a bare 400
        raise BadText("malformed_json", "request body is nested too deeply", "body") from None
    if _any_unstorable(value):
        raise BadText("validation_error", "text must not contain NUL or lone surrogates", "body")


def check_target(scope: Scope) -> BadText | None:
    """The refusal for a path or query string carrying a NUL, if any."""
    if "\x00" in scope.get("path", ""):
        return BadText("validation_error", "the path must not contain NUL characters", "path")
    query: bytes = scope.get("query_string", b"")
    if b"\x00" in query or b"%00" in query:
        return BadText("validation_error", "the query must not contain NUL characters", "query")
    return None


class TextFilter:
    """Refuse requests whose text PostgreSQL could not store (422)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = check_target(scope)
        if refusal is not None:
            await JSONResponse(refusal.body(), 422)(scope, receive, send)
            return
        if not _is_json(scope):
            await self.app(scope, receive, send)
            return
        body = bytearray()

        async def checking_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    check_body(bytes(body))
            return message

        await self.app(scope, checking_receive, send)


def install_handler(app: FastAPI) -> None:
    """Answer :class:`BadText` in the API's error shape."""

    async def _bad_text(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BadText)
        return JSONResponse(exc.body(), exc.status_code)

    app.add_exception_handler(BadText, _bad_text)
