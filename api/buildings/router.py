"""HTTP endpoints for buildings, doors, holidays and door status (thin: parse, authorize, call)."""

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["buildings and doors"])
