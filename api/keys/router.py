"""The public keys that verify unlock tokens: as a plain JWKS, and as the signed key set."""

from typing import Any

from fastapi import APIRouter, Response

from api.deps import KeyRingDep, SettingsDep
from citykey_protocol.keyset import JWKS_PATH, KEYSET_CONTENT_TYPE, KEYSET_PATH

router = APIRouter(tags=["keys"])


@router.get(JWKS_PATH, summary="Public keys for unlock tokens (JWKS)")
async def jwks(keyring: KeyRingDep, response: Response) -> dict[str, Any]:
    """A key is published before it signs. Gateways trust this document on their first boot
    only; after that they accept only signed key sets."""
    response.headers["Cache-Control"] = "public, max-age=300"
    return keyring.jwks()


@router.get(
    KEYSET_PATH,
    summary="The signed key set (compact JWS)",
    response_class=Response,
    # No schema: the body is a compact JWS, not JSON (schema checkers would parse it as JSON).
    responses={200: {"content": {KEYSET_CONTENT_TYPE: {}}}},
)
async def signed_keyset(keyring: KeyRingDep, settings: SettingsDep) -> Response:
    """The same JWS the API keeps retained on ``citykey/v1/keys``: the published keys, signed
    by a key the gateways already trust, with the ring's generation as ``ver``."""
    return Response(
        content=keyring.signed_keyset(settings.issuer),
        media_type=KEYSET_CONTENT_TYPE,
        headers={"Cache-Control": "public, max-age=60"},
    )
