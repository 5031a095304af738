"""The signed key set: the public keys gateways trust, vouched for by a key they already trust.

The API publishes its key set (the JWKS of the keys in states ``next``, ``active`` and
``retiring``) as a compact ES256 JWS: retained on ``citykey/v1/keys`` (topics.KEYSET_TOPIC) and
at ``GET /.well-known/citykey-keyset.jws``. Its header is exactly ``{alg, kid, typ}`` with
``typ`` = KEYSET_TOKEN_TYPE; its claims are KeySetClaims.

A gateway accepts a key set only when it is signed by a key the gateway trusts already, comes
from the configured issuer and carries a higher ``ver`` than the set it holds. So whoever holds
a broker password can delete or replay key sets but cannot plant a key; and an older set can
never roll a gateway back to keys that were retired.

The signer is the oldest published key that has signed tokens (a ``retiring`` key when there
is one, else the ``active`` key), never a ``next`` key: that is the key trusted by the most
gateways, including those that missed the set that announced the current active key.
"""

from enum import StrEnum
from typing import Annotated, Any

import msgspec

KEYSET_TOKEN_TYPE = "citykey-keyset+jwt"
"""``typ`` of a key set; no other token carries it, so no unlock token or mode message can pass
as a key set or the other way round."""

KEYSET_PATH = "/.well-known/citykey-keyset.jws"
"""Where the API serves the same signed key set over HTTP (content type application/jwt)."""

JWKS_PATH = "/.well-known/jwks.json"
"""Where the API serves the plain (unsigned) JWKS, used by a gateway's first boot only."""

KEYSET_CONTENT_TYPE = "application/jwt"

MAX_KEYSET_BYTES = 16384
"""Key sets longer than this are refused before any parsing (a set of a few keys is ~1 KB)."""

MAX_KEYS = 16
"""At most this many keys in one set (a ring publishes two or three)."""

KEYSET_REJECTED_EVENT = "keyset_rejected"
"""GatewayEvent ``kind`` a gateway publishes when it refuses a key set; ``data`` has ``reason``
(a KeySetRejection), ``detail``, ``source`` (``mqtt`` or ``http``), ``kid`` (the signer named
in the header, when readable) and ``current_version``."""


class KeySetRejection(StrEnum):
    """Why a gateway refused a key set (GatewayEvent ``keyset_rejected``, ``data.reason``)."""

    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    BAD_HEADER = "bad_header"
    BAD_TYPE = "bad_type"
    UNKNOWN_KEY = "unknown_key"
    """Signed by a key the gateway does not trust: a planted key set, or a gateway that missed
    a whole rotation (reset its key cache, see docs/operations.md)."""
    BAD_SIGNATURE = "bad_signature"
    BAD_ISSUER = "bad_issuer"
    BAD_CLAIMS = "bad_claims"
    NO_KEYS = "no_keys"
    """Authentic, but holds no usable P-256 signing key."""
    STALE_VERSION = "stale_version"
    """Authentic, but older than the set the gateway holds (a replay, or a lagging API)."""


UnixSeconds = Annotated[int, msgspec.Meta(ge=0)]


class KeySetClaims(msgspec.Struct, frozen=True, kw_only=True):
    """Claims of a signed key set. Claims other than these are allowed and ignored."""

    iss: str
    iat: UnixSeconds
    """When the API signed it. Informational: a gateway with a wrong clock must still be able
    to learn new keys, so it is not checked against the clock."""
    ver: Annotated[int, msgspec.Meta(ge=1)]
    """The key ring's generation: grows with every change of the ring."""
    keys: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1, max_length=MAX_KEYS)]
    """The public keys (JWKs, as in the JWKS) gateways must trust from now on."""


def claims_to_dict(claims: KeySetClaims) -> dict[str, Any]:
    """The claims as a JSON-ready dict, for signing."""
    value: dict[str, Any] = msgspec.to_builtins(claims)
    return value


def claims_from_dict(payload: Any) -> KeySetClaims:
    """Typed claims from a decoded JSON payload; raise msgspec.ValidationError when the types
    or ranges are wrong (strict: a boolean is not a number)."""
    return msgspec.convert(payload, KeySetClaims, strict=True)


def keyset_url_for(jwks_url: str) -> str | None:
    """The signed key set's URL next to a JWKS URL ending in JWKS_PATH; None otherwise."""
    if jwks_url.endswith(JWKS_PATH):
        return jwks_url[: -len(JWKS_PATH)] + KEYSET_PATH
    return None
