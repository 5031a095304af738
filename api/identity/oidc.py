"""Sign-in with an OpenID Connect provider (ID-porten, Keycloak, Entra ID...).

Web app: the authorization code flow with PKCE (S256), ``state`` and ``nonce``; the code is
exchanged with client_secret_basic and the ID token is validated (signature by the provider's
JWKS with an algorithm allow-list, iss, aud = our client id, azp, exp, iat, nonce).

API: the provider's JWT access tokens are accepted as bearer tokens (iss = the issuer, aud =
CITYKEY_OIDC_AUDIENCE, signature by the JWKS).

Both map the provider's national identity claim (CITYKEY_OIDC_PID_CLAIM, ID-porten's ``pid``)
to the pseudonymous citykey user id (api/identity/pseudonym.py). The pid is never stored,
logged, or put in a session or a citykey token; neither are the provider's tokens.

Display name, decided: ``name``, else ``given_name``, else "Citizen". A web sign-in whose ID
token names the person sets it every time (people change names; the provider is the source);
a bearer token only names a user it creates (access tokens rarely carry names).
"""

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from api.identity.jwks import AsyncJwksSource
from api.identity.pseudonym import pseudonym_key, pseudonymous_user_id
from api.identity.verifier import (
    ALLOWED_ALGORITHMS,
    BearerVerifier,
    IdentityTokenError,
    Principal,
)
from api.settings import Settings

log = logging.getLogger(__name__)

CALLBACK_PATH = "/app/auth/callback"
DEFAULT_DISPLAY_NAME = "Citizen"
MAX_DISPLAY_NAME = 200
LEEWAY_S = 30
MAX_FLOW_AGE_S = 600


class OidcConfigurationError(RuntimeError):
    """The provider cannot be used (start-up): unreachable, or its discovery is wrong."""


class OidcError(Exception):
    """A sign-in that cannot complete; ``code`` is stable, ``message`` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of the provider's discovery document we use."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class FlowState:
    """One sign-in in progress, kept in the web session between redirect and callback."""

    state: str
    nonce: str
    verifier: str
    next_path: str
    started_at: int

    def to_session(self) -> dict[str, Any]:
        """A JSON-able form for the session cookie (nothing secret from the provider)."""
        return {
            "state": self.state,
            "nonce": self.nonce,
            "verifier": self.verifier,
            "next": self.next_path,
            "t": self.started_at,
        }

    @classmethod
    def from_session(cls, value: object) -> "FlowState | None":
        """The flow stored by ``to_session``, or None when absent or mangled."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                state=str(value["state"]),
                nonce=str(value["nonce"]),
                verifier=str(value["verifier"]),
                next_path=str(value["next"]),
                started_at=int(value["t"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class SignedInPerson:
    """Who completed a sign-in: the pseudonymous id and a display name (no pid)."""

    user_id: str
    display_name: str
    named: bool
    """Whether the provider gave a name (else display_name is the placeholder)."""


def display_name_of(claims: Mapping[str, Any]) -> str:
    """``name``, else ``given_name``, else "Citizen" (see the module docstring)."""
    for claim in ("name", "given_name"):
        value = claims.get(claim)
        if isinstance(value, str) and value.strip():
            return value.strip()[:MAX_DISPLAY_NAME]
    return DEFAULT_DISPLAY_NAME


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def discover(http: httpx.AsyncClient, issuer: str) -> ProviderMetadata:
    """Read ``<issuer>/.well-known/openid-configuration``; refuse one that names another
    issuer (OpenID Connect Discovery 1.0, section 4.3)."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = await http.get(url)
        response.raise_for_status()
        document = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise OidcConfigurationError(
            f"OpenID Connect discovery at {url} failed: {exc!r}; check CITYKEY_OIDC_ISSUER"
        ) from exc
    if not isinstance(document, dict):
        raise OidcConfigurationError(f"{url} is not a discovery document")
    if document.get("issuer") != issuer:
        raise OidcConfigurationError(
            f"the provider at {url} says its issuer is {document.get('issuer')!r}, "
            f"not CITYKEY_OIDC_ISSUER={issuer!r}"
        )
    try:
        metadata = ProviderMetadata(
            issuer=issuer,
            authorization_endpoint=str(document["authorization_endpoint"]),
            token_endpoint=str(document["token_endpoint"]),
            jwks_uri=str(document["jwks_uri"]),
            end_session_endpoint=document.get("end_session_endpoint") or None,
        )
    except KeyError as exc:
        raise OidcConfigurationError(f"{url} lacks {exc.args[0]}") from None
    methods = document.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise OidcConfigurationError(f"the provider at {issuer} does not support PKCE S256")
    return metadata


class OidcClient:
    """Our relying party at one provider, built once at start-up (``start``)."""

    def __init__(
        self,
        settings: Settings,
        metadata: ProviderMetadata,
        http: httpx.AsyncClient,
        key: bytes,
    ) -> None:
        self.metadata = metadata
        self.display_name = settings.oidc_display_name
        self.redirect_uri = settings.issuer.rstrip("/") + CALLBACK_PATH
        self._client_id = settings.oidc_client_id
        self._client_secret = settings.oidc_client_secret.get_secret_value()
        self._audience = settings.oidc_audience
        self._resource = settings.oidc_resource
        self._scopes = settings.oidc_scopes
        self._pid_claim = settings.oidc_pid_claim
        self._http = http
        self._key = key
        self.jwks = AsyncJwksSource(
            http,
            metadata.jwks_uri,
            cache_s=settings.oidc_jwks_cache_s,
            min_refetch_s=settings.oidc_jwks_min_refetch_s,
        )

    @classmethod
    async def start(cls, settings: Settings) -> "OidcClient":
        """Discover the provider (bounded by CITYKEY_OIDC_TIMEOUT_S) and fetch its keys."""
        http = httpx.AsyncClient(timeout=settings.oidc_timeout_s, follow_redirects=False)
        try:
            metadata = await discover(http, settings.oidc_issuer)
            client = cls(settings, metadata, http, pseudonym_key(settings))
            await client.jwks.refresh()
        except BaseException:
            await http.aclose()
            raise
        return client

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()

    def pseudonym(self, pid: str) -> str:
        """The citykey user id of the person ``pid`` at this provider."""
        return pseudonymous_user_id(self._key, self.metadata.issuer, pid)

    # -- the web app's sign-in ------------------------------------------------------------

    def begin(self, next_path: str) -> tuple[str, FlowState]:
        """The provider URL to send the browser to, and the flow to keep in the session."""
        flow = FlowState(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(64),  # 86 characters, within RFC 7636's 43-128
            next_path=next_path,
            started_at=int(time.time()),
        )
        params = {
            "response_type": "code",
            "client_id": self._client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self._scopes,
            "state": flow.state,
            "nonce": flow.nonce,
            "code_challenge": _s256(flow.verifier),
            "code_challenge_method": "S256",
        }
        if self._resource:
            params["resource"] = self._resource
        return f"{self.metadata.authorization_endpoint}?{urlencode(params)}", flow

    async def complete(self, params: Mapping[str, str], flow: FlowState | None) -> SignedInPerson:
        """Finish a sign-in from the callback's query ``params``; raise OidcError."""
        if flow is None:
            raise OidcError(
                "oidc_no_sign_in", "no sign-in is in progress in this browser; start again"
            )
        state = params.get("state", "")
        if not state or not hmac.compare_digest(state, flow.state):
            raise OidcError("oidc_state_mismatch", "the sign-in response does not match; retry")
        if time.time() - flow.started_at > MAX_FLOW_AGE_S:
            raise OidcError("oidc_sign_in_expired", "the sign-in took too long; start again")
        issuer = params.get("iss")
        if issuer is not None and issuer != self.metadata.issuer:  # RFC 9207 mix-up defence
            raise OidcError("oidc_issuer_mismatch", "the response came from another provider")
        if "error" in params:
            log.info("the provider refused a sign-in: %s", params["error"][:100])
            raise OidcError(
                "oidc_provider_error",
                f"the identity provider did not sign you in ({params['error'][:100]})",
            )
        code = params.get("code")
        if not code:
            raise OidcError("oidc_no_code", "the sign-in response has no code")
        id_token = await self._exchange(code, flow.verifier)
        claims = await self._validate_id_token(id_token, flow.nonce)
        pid = claims.get(self._pid_claim)
        if not isinstance(pid, str) or not pid:
            raise OidcError(
                "oidc_missing_pid",
                "the identity provider did not confirm a national identity; citykey needs it",
            )
        name = display_name_of(claims)
        return SignedInPerson(
            user_id=self.pseudonym(pid), display_name=name, named=name != DEFAULT_DISPLAY_NAME
        )

    async def _exchange(self, code: str, verifier: str) -> str:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
        }
        if self._resource:
            data["resource"] = self._resource
        try:
            response = await self._http.post(
                self.metadata.token_endpoint,
                data=data,
                auth=(self._client_id, self._client_secret),  # client_secret_basic
                headers={"Accept": "application/json"},
            )
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("token exchange with %s failed: %r", self.metadata.token_endpoint, exc)
            raise OidcError(
                "oidc_token_exchange_failed", "the identity provider could not be reached"
            ) from None
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            log.warning("token exchange refused: HTTP %s %s", response.status_code, error)
            raise OidcError(
                "oidc_token_exchange_failed", "the identity provider refused the sign-in"
            )
        id_token = body.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("oidc_invalid_id_token", "the identity provider sent no ID token")
        return id_token

    async def _validate_id_token(self, token: str, nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            if header.get("alg") not in ALLOWED_ALGORITHMS or not isinstance(kid, str):
                raise IdentityTokenError("bad ID token header")
            key = await self.jwks.key_for(kid)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=self._client_id,
                issuer=self.metadata.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "nonce"]},
            )
        except (jwt.PyJWTError, IdentityTokenError) as exc:
            log.warning("ID token refused: %s", exc)
            raise OidcError(
                "oidc_invalid_id_token", "the identity provider's answer is not valid"
            ) from None
        if not hmac.compare_digest(str(claims["nonce"]), nonce):
            raise OidcError("oidc_invalid_id_token", "the ID token is not for this sign-in")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self._client_id:
            raise OidcError("oidc_invalid_id_token", "the ID token is not for citykey")
        return claims

    def logout_url(self, post_logout_redirect_uri: str) -> str | None:
        """RP-initiated logout at the provider, when it offers it."""
        if self.metadata.end_session_endpoint is None:
            return None
        query = urlencode(
            {"client_id": self._client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        )
        return f"{self.metadata.end_session_endpoint}?{query}"

    # -- the API's bearer tokens ----------------------------------------------------------

    def access_token_verifier(self) -> BearerVerifier:
        """Verifies the provider's JWT access tokens for this API (aud CITYKEY_OIDC_AUDIENCE)
        and maps their pid to the pseudonymous user id."""
        return BearerVerifier(
            issuer=self.metadata.issuer,
            audience=self._audience,
            keys=self.jwks,
            leeway=LEEWAY_S,
            subject=self._principal,
        )

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        pid = claims.get(self._pid_claim)
        if not isinstance(pid, str) or not pid:
            raise IdentityTokenError(
                "the access token carries no national identity", "token_missing_pid"
            )
        # The pid stays out of the principal: nothing downstream can store or log it.
        kept = {k: v for k, v in claims.items() if k != self._pid_claim}
        return Principal(
            subject=self.pseudonym(pid),
            issuer=self.metadata.issuer,
            claims=kept,
            provisioned_name=display_name_of(claims),
        )
