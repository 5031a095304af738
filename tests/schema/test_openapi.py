"""Schemathesis over the whole OpenAPI document of the real API (PostgreSQL, Mosquitto, a real
gateway with a simulated lock behind the doors): every check, every phase (examples, coverage,
fuzzing, stateful with the links Schemathesis infers), a bounded number of examples per
operation. Requests are signed in as an administrator, as a citizen for the citizen's
endpoints, and as a booking system for the booking endpoints.

Prints: operations tested, requests made, server errors, schema violations (and the other
checks' findings, which are reported but not asserted)."""

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import schemathesis
import schemathesis.specs.openapi.schemas  # imported early: see load_schema
import uvicorn
from schemathesis.engine import Status, from_schema
from schemathesis.engine import events as st_events
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.identity.models import Role, User
from api.settings import Settings
from tests.abuse.support import instance
from tests.bookings.support import client_for, token_for_client
from tests.conftest import ApiHarness
from tests.support import World, unique

MAX_EXAMPLES = 10
"""Per operation and phase: enough to find the bugs, bounded so the run takes minutes."""
SCHEMA_CHECKS = {
    "response_schema_conformance",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
}
"""Checks whose failure means a response breaks the OpenAPI document."""


class Counting:
    """ASGI wrapper counting, at the server, requests and 5xx answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests = 0
        self.server_errors: Counter[str] = Counter()
        """500s: an unhandled exception (internal_error)."""
        self.unavailable: Counter[str] = Counter()
        """502/503/504: documented outcomes (gateway offline, timeout, ...), not bugs."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests += 1

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 500:
                answer = f"{scope['method']} {scope['path']} {message['status']}"
                if message["status"] == 500:
                    self.server_errors[answer] += 1
                else:
                    self.unavailable[answer] += 1
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            # Escaped the app's own handlers: uvicorn answers 500 by itself.
            self.server_errors[f"{scope['method']} {scope['path']} escaped {exc!r}"[:300]] += 1
            raise


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` (already started) with uvicorn on a free loopback port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="error")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@dataclass
class Findings:
    operations: set[str] = field(default_factory=set)
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)
    """(check, operation, title) -> one message."""
    errors: list[str] = field(default_factory=list)
    transitions: int | None = None

    def by_check(self, names: Callable[[str], bool]) -> list[str]:
        return sorted(
            f"{check} {operation}: {title} -- {message[:300]}"
            for (check, operation, title), message in self.failures.items()
            if names(check)
        )


def citizen_path(path: str) -> bool:
    return (
        path.startswith("/v1/me")
        or path.endswith(("/unlock", "/tokens"))
        or (path.startswith("/v1/me/offline-tokens"))
    )


def load_schema(document: dict[str, Any], base_url: str, tokens: dict[str, str]) -> Any:
    """The schema with its configuration and authentication. Called on the main thread: it
    imports most of Schemathesis, and pytest rewrites those imports (as a plugin's), which
    CPython 3.11 cannot always do on a worker thread ("AST constructor recursion depth")."""
    config = schemathesis.Config.from_dict(
        {
            "base-url": base_url,
            "seed": 20291,
            "request-timeout": 15,
            # Every check. 502/503/504 are documented answers of the unlock path (the gateway
            # refused, is offline, timed out), not server errors; a 500 always is one.
            "checks": {
                "enabled": True,
                "not_a_server_error": {
                    "expected-statuses": ["1XX", "2XX", "3XX", "4XX", 502, 503, 504]
                },
            },
            "generation": {"max-examples": MAX_EXAMPLES, "mode": "all"},
            "phases": {"stateful": {"max-steps": 20}},
            "suppress-health-check": ["all"],
        }
    )
    schema = schemathesis.openapi.from_dict(document, config=config)

    class ByRole:
        def get(self, case: Any, ctx: Any) -> str:
            path = case.operation.path
            if path.startswith("/v1/bookings"):
                return tokens["booking"]
            return tokens["citizen"] if citizen_path(path) else tokens["admin"]

        def set(self, case: Any, data: str, ctx: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    schema.auth(refresh_interval=None)(ByRole)
    return schema


def run_schemathesis(schema: Any) -> Findings:
    """Blocking: run the whole Schemathesis engine."""
    findings = Findings()
    for event in from_schema(schema).execute():
        if isinstance(event, st_events.PhaseStarted) and event.payload is not None:
            findings.transitions = event.payload.transitions_total
        if isinstance(event, st_events.NonFatalError):
            findings.errors.append(f"{event.label}: {event.info.message}"[:400])
        if isinstance(event, st_events.FatalError):
            findings.errors.append(f"fatal: {event.exception!r}")
        recorder = getattr(event, "recorder", None)
        if recorder is None:
            continue
        for node in recorder.cases.values():
            findings.operations.add(node.value.operation.label)
        for checks in recorder.checks.values():
            for check in checks:
                if check.status == Status.FAILURE and check.failure_info is not None:
                    failure = check.failure_info.failure
                    key = (check.name, failure.operation or recorder.label, failure.title)
                    findings.failures.setdefault(
                        key, f"{failure.message} {check.failure_info.code_sample}"
                    )
    return findings


async def seed(api: ApiHarness, world: World) -> dict[str, str]:
    """An administrator, a citizen with a door that opens, a booking client."""
    gateway_id, doors = await world.add_gateway(doors=2)
    await world.grant(world.citizen_id, building=True)
    await world.start_gateway(gateway_id, doors)
    admin_id = unique("u-adm")
    async with api.state.sessions() as session:
        session.add(User(id=admin_id, display_name="Admin", roles=[Role.ADMIN]))
        await session.commit()
    client_id, secret, _ = await client_for(api)
    booking = await token_for_client(api, client_id, secret)
    assert api.state.dev_identity is not None
    return {
        "admin": api.state.dev_identity.issue(admin_id),
        "citizen": api.state.dev_identity.issue(world.citizen_id),
        "booking": booking,
    }


async def test_schemathesis_finds_no_server_errors_and_no_schema_violations(
    api: ApiHarness, world: World, settings: Settings
) -> None:
    tokens = await seed(api, world)
    # Schemathesis sends many requests without or with broken credentials on purpose (the
    # ignored_auth check): the failed-authentication limit would soon answer 429 to it.
    # Generous database waits: this test is about answers, not about a loaded machine.
    slow_ok = {"db_connect_timeout_s": 5.0, "db_pool_timeout_s": 5.0, "db_ping_timeout_s": 5.0}
    async with instance(settings, auth_failure_limit=0, unlock_timeout_s=1.0, **slow_ok) as running:
        counting = Counting(running.app)
        async with serving(counting) as base_url:
            async with httpx.AsyncClient(base_url=base_url) as http:
                document = (await http.get("/openapi.json")).json()
            schema = load_schema(document, base_url, tokens)
            findings = await asyncio.to_thread(run_schemathesis, schema)
    server_errors = sum(counting.server_errors.values())
    violations = findings.by_check(lambda name: name in SCHEMA_CHECKS)
    per_check = Counter(check for check, _, _ in findings.failures if check not in SCHEMA_CHECKS)
    print(
        f"\nschemathesis: {len(findings.operations)} operations tested, {counting.requests} "
        f"requests made, {server_errors} server errors, {len(violations)} schema violations "
        f"(all checks; phases examples, coverage, fuzzing, stateful with "
        f"{findings.transitions} inferred links; at most {MAX_EXAMPLES} examples per operation)"
    )
    print(f"  other checks, findings by operation (reported, not asserted): {dict(per_check)}")
    for line in (
        *[f"  500 {k} x{v}" for k, v in counting.server_errors.items()],
        *[f"  documented 5xx {k} x{v}" for k, v in counting.unavailable.items()],
        *[f"  violation {v}" for v in violations],
        *[f"  error {e}" for e in findings.errors],
    ):
        print(line)
    assert server_errors == 0, counting.server_errors
    assert violations == []
    assert not any(e.startswith("fatal") for e in findings.errors), findings.errors
