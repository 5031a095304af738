"""Failed-authentication limit per client, as a pure ASGI middleware.

Every authentication failure in citykey is a 401 with a stable code (identity tokens, booking
client tokens, client credentials at /v1/oauth/token), so the limit watches responses instead
of being wired into each authentication path: a 401 whose code is not ``unauthorized`` (that
one means "no credentials at all", not a failed attempt) counts one failure for the client's
address (api/limits/clients.py). Failures are counted in the shared ``rate_limits`` table, so
all API instances share one budget per client. Past CITYKEY_AUTH_FAILURE_LIMIT failures in
CITYKEY_AUTH_FAILURE_WINDOW_S the client gets ``429 too_many_failed_logins`` with Retry-After
for every request (health probes and the JWKS excepted), valid credentials included: an
attacker must not learn which of its guesses was right.

Trade-off, measured and documented in docs/reliability.md: the block itself is remembered per
instance (a dict lookup per request, no database round trip on the success path). An instance
learns of a block at the client's next failure on it, so across n instances a blocked client
gets at most one more failed attempt per other instance (n - 1) before all of them refuse it.
"""

import json
import logging
import time
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.limits.clients import Network, scope_client_address
from api.limits.store import RateLimitStore
from api.limits.window import Limit, Verdict

log = logging.getLogger(__name__)

CODE = "too_many_failed_logins"
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/.well-known/jwks.json"})
"""Never blocked: they authenticate nobody, and orchestrators and gateways depend on them."""
MAX_BLOCKED = 100_000
"""Bound on remembered blocks per instance (a flood of addresses cannot grow it forever)."""
_PEEK_BYTES = 4096
"""How much of a 401 body is read to find its code (error bodies are far smaller)."""


def counts_as_failure(body: bytes) -> bool:
    """Whether a 401 answer's body is a failed attempt (anything but ``unauthorized``)."""
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return True
    return bool(code != "unauthorized")


class FailedAuthLimit:
    """Count failed authentications per client; answer 429 to clients over the limit."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: Limit | None,
        proxies: Sequence[Network],
        sessions: Callable[[], async_sessionmaker[AsyncSession]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.limit = limit
        self.proxies = tuple(proxies)
        self._sessions = sessions
        self._clock = clock
        self._store = RateLimitStore()
        self._blocked: dict[str, float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit is None:
            await self.app(scope, receive, send)
            return
        client = scope_client_address(scope, self.proxies)
        now = self._clock()
        until = self._blocked.get(client)
        if until is not None and until <= now:
            del self._blocked[client]
        elif until is not None and scope.get("path") not in EXEMPT_PATHS:
            await _refuse(send, Verdict(False, until - now))
            return

        status = 0
        peeked = bytearray()

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif status == 401 and len(peeked) < _PEEK_BYTES:
                peeked.extend(message.get("body", b"")[: _PEEK_BYTES - len(peeked)])
            await send(message)

        await self.app(scope, receive, watching_send)
        if status == 401 and counts_as_failure(bytes(peeked)):
            await self._count_failure(client)

    async def _count_failure(self, client: str) -> None:
        assert self.limit is not None
        now = self._clock()
        try:
            async with self._sessions()() as session:
                verdict = await self._store.hit(session, f"auth:{client}", self.limit, now)
                await session.commit()
        except Exception:
            # The 401 is already on its way; losing one count must not turn into a 500.
            log.warning("could not count a failed authentication", exc_info=True)
            return
        # Refused (already over), or admitted as the last one that fits: block from now on.
        wait = verdict.next_after_s if verdict.allowed else verdict.retry_after_s
        if wait > 0:
            if len(self._blocked) >= MAX_BLOCKED:
                self._forget_expired(now)
            self._blocked[client] = now + wait

    def _forget_expired(self, now: float) -> None:
        for client in [c for c, until in self._blocked.items() if until <= now]:
            del self._blocked[client]
        while len(self._blocked) >= MAX_BLOCKED:
            del self._blocked[next(iter(self._blocked))]  # oldest first


async def _refuse(send: Send, verdict: Verdict) -> None:
    seconds = verdict.retry_after_header
    body = json.dumps(
        {
            "error": {
                "code": CODE,
                "message": f"too many failed authentication attempts; try again in {seconds} s",
                "retry_after_s": int(seconds),
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", seconds.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
