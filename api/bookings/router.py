"""HTTP endpoints for bookings. Thin: parse, authorize, call the service, shape the answer.

Two audiences: building managers manage booking clients (``/v1/booking-clients``, identity
tokens); booking systems get a token with their client credentials (``/v1/oauth/token``) and
push bookings with it (``/v1/bookings/...``). Neither token works on the other's endpoints.
"""

import base64
import binascii
from typing import Annotated, Any
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.access.schemas import CursorQuery, LimitQuery, Page
from api.bookings.models import BookingClient
from api.bookings.schemas import (
    EXTERNAL_ID_PATTERN,
    BookingClientCreate,
    BookingClientCreated,
    BookingClientView,
    BookingDetail,
    BookingPut,
    BookingView,
    TokenResponse,
)
from api.bookings.service import (
    BookingClientService,
    BookingService,
    authenticate_client,
    client_view,
)
from api.bookings.tokens import (
    SCOPE,
    ClientKeyMissingError,
    ClientTokenError,
    ClientTokens,
    client_tokens,
)
from api.common import utcnow
from api.deps import ManagerScopeDep, SessionDep, StateDep
from api.errors import ApiError, error_responses
from api.state import AppState

router = APIRouter(prefix="/v1")

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_MAX_FORM_BYTES = 4096


def _tokens(state: AppState) -> ClientTokens:
    try:
        return client_tokens(state)
    except ClientKeyMissingError:
        raise ApiError(
            503,
            "client_tokens_unavailable",
            "booking client tokens are not configured on this server (no signing key)",
        ) from None


# -- the booking client's identity -----------------------------------------------------------

_client_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="BookingClientToken",
    description="An access token from POST /v1/oauth/token (client credentials)",
)


async def get_booking_client(
    state: StateDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_client_bearer)],
) -> BookingClient:
    """The booking client calling: token signature, type, audience and expiry checked, and the
    client still exists and is enabled (disabling a client stops its tokens at once)."""
    challenge = {"WWW-Authenticate": 'Bearer realm="citykey-bookings"'}
    if credentials is None:
        raise ApiError(401, "unauthorized", "a bearer token is required", headers=challenge)
    try:
        client_id = _tokens(state).verify(credentials.credentials)
    except ClientTokenError:
        raise ApiError(
            401, "invalid_token", "the bearer token is not valid", headers=challenge
        ) from None
    client = await session.get(BookingClient, client_id)
    if client is None or not client.enabled:
        raise ApiError(401, "invalid_token", "the client is disabled", headers=challenge)
    return client


BookingClientDep = Annotated[BookingClient, Depends(get_booking_client)]


async def get_booking_service(session: SessionDep, client: BookingClientDep) -> BookingService:
    return BookingService(session, client)


BookingServiceDep = Annotated[BookingService, Depends(get_booking_service)]


async def get_client_service(session: SessionDep) -> BookingClientService:
    return BookingClientService(session)


ClientServiceDep = Annotated[BookingClientService, Depends(get_client_service)]

ExternalId = Annotated[
    str, Path(pattern=EXTERNAL_ID_PATTERN, description="The booking system's own id")
]

# -- booking clients (managers) --------------------------------------------------------------


@router.post(
    "/booking-clients",
    status_code=201,
    tags=["booking clients"],
    summary="Register a booking system",
    responses=error_responses(401, 403, 404, 422),
)
async def create_booking_client(
    scope: ManagerScopeDep,
    service: ClientServiceDep,
    body: Annotated[BookingClientCreate, Body()],
    response: Response,
) -> BookingClientCreated:
    """Create client credentials for a booking system of an owner (its managers, or an
    administrator). The secret is in this answer only: it is stored hashed."""
    client, secret = await service.create(scope, body, utcnow())
    response.headers.update(_NO_STORE)
    return BookingClientCreated(**client_view(client).model_dump(), client_secret=secret)


@router.get(
    "/booking-clients",
    tags=["booking clients"],
    summary="List booking systems",
    responses=error_responses(401, 403, 404, 422),
)
async def list_booking_clients(
    scope: ManagerScopeDep,
    service: ClientServiceDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    owner_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> Page[BookingClientView]:
    """Clients of ``owner_id``, or of every owner the caller manages."""
    return await service.page(scope, owner_id, limit, cursor)


@router.delete(
    "/booking-clients/{client_id}",
    status_code=204,
    tags=["booking clients"],
    summary="Disable a booking system",
    responses=error_responses(401, 403, 404),
)
async def disable_booking_client(
    scope: ManagerScopeDep,
    service: ClientServiceDep,
    client_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> Response:
    """Disable the client: its tokens stop working, its bookings' grants are revoked."""
    await service.disable(scope, client_id, utcnow())
    return Response(status_code=204)


# -- OAuth 2 client credentials --------------------------------------------------------------

_TOKEN_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["grant_type"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "client_id": {"type": "string"},
                        "client_secret": {"type": "string"},
                        "scope": {"type": "string", "enum": [SCOPE]},
                    },
                }
            }
        },
    }
}


def _oauth_error(status: int, code: str, message: str) -> ApiError:
    return ApiError(status, code, message, headers=_NO_STORE)


def _parse_form(body: bytes) -> dict[str, str]:
    if len(body) > _MAX_FORM_BYTES:
        raise _oauth_error(400, "invalid_request", "the request body is too large")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        raise _oauth_error(400, "invalid_request", "the form could not be parsed") from None
    repeated = sorted(k for k, v in fields.items() if len(v) > 1)
    if repeated:
        # RFC 6749 section 3.2: parameters must not be included more than once.
        raise _oauth_error(400, "invalid_request", f"repeated parameters: {', '.join(repeated)}")
    return {k: v[0] for k, v in fields.items()}


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if header is None or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        client_id, secret = decoded.split(":", 1)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(
            401,
            "invalid_client",
            "malformed Basic credentials",
            headers={**_NO_STORE, "WWW-Authenticate": 'Basic realm="citykey-bookings"'},
        ) from None
    # RFC 6749 section 2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


@router.post(
    "/oauth/token",
    tags=["booking systems"],
    summary="Get an access token (client credentials)",
    responses=error_responses(400, 401, 503),
    openapi_extra=_TOKEN_FORM,
)
async def issue_token(
    request: Request, state: StateDep, session: SessionDep, response: Response
) -> TokenResponse:
    """OAuth 2 client credentials grant: ``grant_type=client_credentials`` with the client's
    id and secret, in the form or as HTTP Basic (not both). The token is valid one hour."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise _oauth_error(400, "invalid_request", "send an application/x-www-form-urlencoded body")
    form = _parse_form(await request.body())
    grant_type = form.get("grant_type")
    if not grant_type:
        raise _oauth_error(400, "invalid_request", "grant_type is required")
    if grant_type != "client_credentials":
        raise _oauth_error(
            400, "unsupported_grant_type", "only grant_type=client_credentials is supported"
        )
    requested = form.get("scope")
    if requested is not None and not set(requested.split()) <= {SCOPE}:
        raise _oauth_error(400, "invalid_scope", f"the only scope is {SCOPE!r}")
    basic = _basic_credentials(request.headers.get("authorization"))
    in_form = "client_id" in form or "client_secret" in form
    if basic is not None and in_form:
        raise _oauth_error(400, "invalid_request", "send credentials in one place only")
    client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
    tokens = _tokens(state)
    client = await authenticate_client(session, client_id, secret)
    response.headers.update(_NO_STORE)
    return TokenResponse(
        access_token=tokens.issue(client.id), expires_in=tokens.lifetime_s, scope=SCOPE
    )


# -- bookings (booking systems) --------------------------------------------------------------


@router.put(
    "/bookings/{external_id}",
    tags=["booking systems"],
    summary="Create or replace a booking (versioned, idempotent)",
    responses={
        201: {"model": BookingView, "description": "Created"},
        **error_responses(401, 409, 422),
    },
)
async def put_booking(
    external_id: ExternalId,
    service: BookingServiceDep,
    body: Annotated[BookingPut, Body()],
    response: Response,
) -> BookingView:
    """The full state of a booking. The same version again changes nothing (200); a higher
    version replaces it (200; 201 when new); a lower one is refused (409 stale_version)."""
    view, created = await service.put(external_id, body, utcnow())
    if created:
        response.status_code = 201
    return view


@router.get(
    "/bookings/{external_id}",
    tags=["booking systems"],
    summary="A booking as last received",
    responses=error_responses(401, 404, 422),
)
async def get_booking(external_id: ExternalId, service: BookingServiceDep) -> BookingDetail:
    return await service.get(external_id)


@router.delete(
    "/bookings/{external_id}",
    status_code=204,
    tags=["booking systems"],
    summary="Delete a booking (its grants are revoked)",
    responses=error_responses(401, 404, 422),
)
async def delete_booking(external_id: ExternalId, service: BookingServiceDep) -> Response:
    """Idempotent. A later PUT with a higher version restores the booking."""
    await service.delete(external_id, utcnow())
    return Response(status_code=204)
