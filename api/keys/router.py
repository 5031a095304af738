"""GET /.well-known/jwks.json: the public keys that verify unlock tokens."""

from typing import Any

from fastapi import APIRouter, Response

from api.deps import KeyRingDep

router = APIRouter(tags=["keys"])


@router.get("/.well-known/jwks.json", summary="Public keys for unlock tokens (JWKS)")
async def jwks(keyring: KeyRingDep, response: Response) -> dict[str, Any]:
    """Gateways fetch and cache these; a key is published before it signs."""
    response.headers["Cache-Control"] = "public, max-age=300"
    return keyring.jwks()
