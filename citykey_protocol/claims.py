"""The unlock token: an ES256 JWS in compact form, header ``typ`` = UNLOCK_TOKEN_TYPE.

No other token in the system carries this ``typ``, so an identity token can never be replayed
as an unlock token (and vice versa).
"""

import msgspec

ALGORITHM = "ES256"
UNLOCK_TOKEN_TYPE = "citykey-unlock+jwt"
MAX_TOKEN_BYTES = 2048
"""Tokens longer than this are refused before any parsing."""


class TokenHeader(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The only header members allowed; jku, x5u, jwk, crit and friends are refused."""

    alg: str
    kid: str
    typ: str


class UnlockClaims(msgspec.Struct, frozen=True):
    """Claims of an unlock token. Times are integer Unix seconds."""

    iss: str
    aud: str
    """The gateway id that may act on this token."""
    sub: str
    """Pseudonymous citykey user id; never a name or national id number."""
    door: str
    dur: int
    """Seconds the door stays unlocked."""
    jti: str
    iat: int
    nbf: int
    exp: int


header_decoder: msgspec.json.Decoder[TokenHeader] = msgspec.json.Decoder(TokenHeader)
claims_decoder: msgspec.json.Decoder[UnlockClaims] = msgspec.json.Decoder(UnlockClaims)
