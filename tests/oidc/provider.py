"""A real OpenID Connect provider (the npm package oidc-provider) on loopback, for tests.

``running_provider()`` installs the pinned package with ``npm ci`` when node_modules is missing,
starts ``node provider.mjs`` on a free loopback port, waits for its discovery document, yields
the issuer and client credentials, and stops the process by its pid. The tests own the
provider's signing keys (a JWK file), so restarting with a new key file is a key rotation, and
a test can sign a token with the provider's own key (an expired one, say).
"""

import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec

PROVIDER_DIR = Path(__file__).resolve().parents[1] / "oidc_provider"
RESOURCE = "urn:citykey:api"
AUDIENCE = "citykey-api"
START_TIMEOUT_S = 20.0
NPM_TIMEOUT_S = 300.0

# The provider's test accounts (provider.mjs): username -> national id.
ACCOUNTS = {"kari": "01017000027", "ola": "02028000035", "anon": "03039000043"}


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_signing_key() -> dict[str, Any]:
    """A private ES256 JWK with a fresh kid, for the provider's key file."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    jwk.update(kid=f"k-{secrets.token_hex(4)}", alg="ES256", use="sig")
    return jwk


@dataclass
class ProviderHandle:
    """A running provider: its issuer, our client at it, and its keys (first signs)."""

    issuer: str
    client_id: str
    client_secret: str
    keys: list[dict[str, Any]]
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def sign(self, claims: dict[str, Any], *, key_index: int = 0) -> str:
        """A JWT signed with one of the provider's own keys (for expired/odd tokens)."""
        jwk = self.keys[key_index]
        key = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(jwk))
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": jwk["kid"]})


def ensure_installed() -> None:
    """``npm ci`` once on a fresh checkout (node_modules is not committed)."""
    if (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed for the OpenID Connect tests (apt install npm)")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=PROVIDER_DIR,
        check=True,
        timeout=NPM_TIMEOUT_S,
    )


@contextmanager
def running_provider(
    redirect_uris: list[str],
    *,
    keys: list[dict[str, Any]] | None = None,
    port: int | None = None,
    client_id: str = "citykey-test",
    client_secret: str | None = None,
    workdir: Path,
) -> Iterator[ProviderHandle]:
    """Start provider.mjs; yield its handle once discovery answers; stop it by pid."""
    ensure_installed()
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is needed for the OpenID Connect tests")
    port = port or free_port()
    keys = keys or [new_signing_key()]
    workdir.mkdir(parents=True, exist_ok=True)
    keys_file = workdir / f"oidc-keys-{port}-{secrets.token_hex(3)}.json"
    keys_file.write_text(json.dumps({"keys": keys}))
    keys_file.chmod(0o600)
    handle = ProviderHandle(
        issuer=f"http://127.0.0.1:{port}",
        client_id=client_id,
        client_secret=client_secret or secrets.token_urlsafe(24),
        keys=keys,
        port=port,
    )
    env = {
        **os.environ,
        "OIDC_PORT": str(port),
        "OIDC_ISSUER": handle.issuer,
        "OIDC_CLIENT_ID": handle.client_id,
        "OIDC_CLIENT_SECRET": handle.client_secret,
        "OIDC_REDIRECT_URIS": ",".join(redirect_uris),
        "OIDC_POST_LOGOUT_REDIRECT_URIS": ",".join(
            urljoin(uri, "/app/login") for uri in redirect_uris
        ),
        "OIDC_KEYS_FILE": str(keys_file),
        "OIDC_RESOURCE": RESOURCE,
        "OIDC_AUDIENCE": AUDIENCE,
        "NODE_ENV": "test",
    }
    log = (workdir / f"oidc-provider-{port}.log").open("wb")
    process = subprocess.Popen(
        [node, "provider.mjs"], cwd=PROVIDER_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    handle.process = process
    try:
        _wait_for_discovery(handle, process)
        yield handle
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        log.close()


def _wait_for_discovery(handle: ProviderHandle, process: subprocess.Popen[bytes]) -> None:
    url = f"{handle.issuer}/.well-known/openid-configuration"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"oidc-provider exited with {process.returncode}; see its log")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"oidc-provider did not answer {url} within {START_TIMEOUT_S} s")


async def sign_in_at_provider(
    browser: httpx.AsyncClient,
    authorize_url: str,
    username: str,
    *,
    cancel: bool = False,
    max_hops: int = 12,
) -> str:
    """Drive the provider's login form like a browser (``browser`` keeps the provider's
    cookies), or press its Cancel link. Returns the final redirect URL back to the relying
    party (with a code, or an error)."""
    url = authorize_url
    issuer_host = urlsplit(authorize_url).netloc
    for _ in range(max_hops):
        response = await browser.get(url)
        if response.is_redirect:
            url = urljoin(url, response.headers["location"])
            if urlsplit(url).netloc != issuer_host:
                return url
            continue
        assert response.status_code == 200, response.text
        if 'name="prompt" value="login"' not in response.text:
            raise AssertionError(f"unexpected provider page: {response.text[:500]}")
        if cancel:
            link = response.text.split('<a href="', 1)[1].split('"', 1)[0]
            url = urljoin(url, link.replace("&amp;", "&"))
            continue
        action = response.text.split('action="', 1)[1].split('"', 1)[0]
        submit = await browser.post(
            urljoin(url, action),
            data={"prompt": "login", "login": username, "password": "any"},
        )
        assert submit.is_redirect, submit.text
        url = urljoin(url, submit.headers["location"])
    raise AssertionError("too many redirects at the provider")


def query_of(url: str) -> dict[str, str]:
    """The query parameters of ``url`` (single values)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def tokens_for(handle: ProviderHandle, username: str, redirect_uri: str) -> dict[str, Any]:
    """The provider's token response for ``username``, by a client of our own (what a phone
    app does): code flow with PKCE, then the token endpoint. Holds an access token for the
    citykey API (aud citykey-api) and an ID token (aud the client id)."""
    async with httpx.AsyncClient(timeout=10) as browser:
        discovery = (await browser.get(f"{handle.issuer}/.well-known/openid-configuration")).json()
        verifier, challenge = pkce_pair()
        query = httpx.QueryParams(
            response_type="code",
            client_id=handle.client_id,
            redirect_uri=redirect_uri,
            scope="openid profile",
            state=secrets.token_urlsafe(8),
            nonce=secrets.token_urlsafe(8),
            code_challenge=challenge,
            code_challenge_method="S256",
        )
        final = await sign_in_at_provider(
            browser, f"{discovery['authorization_endpoint']}?{query}", username
        )
        response = await browser.post(
            discovery["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": query_of(final)["code"],
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            },
            auth=(handle.client_id, handle.client_secret),
        )
        assert response.status_code == 200, response.text
        tokens: dict[str, Any] = response.json()
        return tokens
