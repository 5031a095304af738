"""HTTP endpoints for bookings. Thin: parse, authorize, call the service, shape the answer."""

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["bookings"])
