"""The error contract: every refusal is ``{"error": {"code", "message", ...}}`` with a stable
code, and the handlers that turn exceptions into it."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.db import DATABASE_ERROR_TYPES, is_database_unavailable

log = logging.getLogger(__name__)

DATABASE_RETRY_AFTER_S = "1"
"""Retry-After of a 503 database_unavailable: the pool reconnects by itself on the next try."""


class ApiError(Exception):
    """A refusal with an HTTP status, a stable code and a human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.details = details


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    """Shape of every error answer."""

    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given statuses."""
    return {status: {"model": ErrorResponse} for status in statuses}


def _body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **details}}


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception through the error contract."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            _body(exc.code, exc.message, **exc.details), exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        malformed = any(e["type"] == "json_invalid" for e in errors)
        code = "malformed_json" if malformed else "validation_error"
        message = "request body is not valid JSON" if malformed else "request is not valid"
        return JSONResponse(_body(code, message, fields=errors), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return JSONResponse(
            _body(code, str(exc.detail)), exc.status_code, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(_body("internal_error", "internal error"), 500)

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # The database is unreachable or did not answer in time: a clear, retryable 503, never
        # a hang and never a 500. Anything else of these types is a bug and stays a 500.
        if not is_database_unavailable(exc):
            return await _unexpected(request, exc)
        log.warning("database unavailable: %r", exc)
        return JSONResponse(
            _body("database_unavailable", "the database is unreachable; try again shortly"),
            503,
            headers={"Retry-After": DATABASE_RETRY_AFTER_S},
        )

    for exc_type in DATABASE_ERROR_TYPES:
        app.add_exception_handler(exc_type, _database)
