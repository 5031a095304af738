"""HTTP endpoints for lockdown and passage mode (thin: parse, authorize, call the service)."""

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["lockdown and passage"])
