"""Object-level authorization, as a matrix: every management endpoint x every non-admin role
x the ids of another owner's objects. Zero successes, zero leaks of existence beyond 404.

The endpoints are read from the app's OpenAPI document, so a new management endpoint is in
the matrix the moment it exists; a path parameter the matrix cannot fill fails the test
instead of being skipped.
"""

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from api.access.models import Grant
from api.bookings.models import BookingClient
from api.buildings.models import Building, Door
from api.groups.models import Group, GroupMember
from api.identity.models import Role
from api.public_access.models import PublicAccess
from api.schedules import Schedule
from tests.conftest import ApiHarness
from tests.manage.helpers_org import Org, add_user, seed_org
from tests.support import unique

NOT_MANAGEMENT = ("/v1/me", "/v1/oauth", "/v1/bookings/")
CITIZEN_PATHS = ("/v1/doors/{door_id}/unlock",)
ROLE_REFUSALS = {"manager_only", "admin_only"}
"""403 codes that depend on who asks, never on which object: they reveal nothing."""
SCHEMA_REFUSALS = {"validation_error", "malformed_json"}
"""422 codes raised before any lookup."""


@dataclass
class Foreign:
    """Owner B's objects, which owner A's people must not see or touch."""

    org: Org
    group_id: str
    grant_id: str
    rule_id: str
    client_id: str
    member_id: str

    def path_values(self) -> dict[str, str]:
        return {
            "owner_id": self.org.owner_id,
            "building_id": self.org.building_id,
            "door_id": self.org.door_id,
            "gateway_id": self.org.gateway_id,
            "holiday_id": self.org.holiday_id,
            "group_id": self.group_id,
            "grant_id": self.grant_id,
            "rule_id": self.rule_id,
            "client_id": self.client_id,
            "user_id": self.member_id,
        }

    def secrets(self) -> list[str]:
        return [v for k, v in self.path_values().items() if k != "user_id"]


async def seed_foreign(api: ApiHarness) -> Foreign:
    org = await seed_org(api)
    member = await add_user(api, "u-member", Role.CITIZEN)
    foreign = Foreign(org, unique("grp"), unique("grt"), unique("pub"), unique("bc"), member)
    async with api.state.sessions() as session:
        session.add(Group(id=foreign.group_id, owner_id=org.owner_id, name="Volunteers"))
        session.add(
            BookingClient(
                id=foreign.client_id, name="Booking", owner_id=org.owner_id, secret_hash="scrypt$x"
            )
        )
        await session.flush()
        session.add(GroupMember(group_id=foreign.group_id, user_id=member))
        session.add(Grant(id=foreign.grant_id, user_id=member, door_id=org.door_id))
        session.add(
            PublicAccess(
                id=foreign.rule_id, door_id=org.door_id, schedule=Schedule().model_dump(mode="json")
            )
        )
        await session.commit()
    return foreign


def sample_body(openapi: dict[str, Any], operation: dict[str, Any], foreign: Foreign) -> Any:
    """A body that passes schema validation, pointed at the foreign objects: the operation's
    own schema properties, filled from a pool of plausible values."""
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    values = foreign.path_values()
    pool: dict[str, Any] = {
        "name": "x",
        "reason": "drill",
        "description": "x",
        "owner_id": values["owner_id"],
        "user_id": values["user_id"],
        "group_id": values["group_id"],
        "subject": {"user_id": values["user_id"]},
        "target": {"door_id": values["door_id"]},
        "schedule": Schedule.every_day(time(7), time(23)).model_dump(mode="json"),
        "date": "2031-01-01",
        "gateway_id": values["gateway_id"],
        "channel": 9,
        "timezone": "Europe/Oslo",
        "valid_until": later,
        "enabled": False,
        "min_age": 18,
        "max_uses": 1,
        "note": "x",
    }
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = content.get("schema", {})
    if "$ref" not in schema:
        for option in schema.get("anyOf", []):
            if "$ref" in option:
                schema = option
                break
    if "$ref" not in schema:
        return {}
    name = schema["$ref"].rsplit("/", 1)[-1]
    properties = openapi["components"]["schemas"][name].get("properties", {})
    return {key: pool[key] for key in properties if key in pool}


def management_operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    operations = []
    for path, methods in openapi["paths"].items():
        if not path.startswith("/v1/") or path.startswith(NOT_MANAGEMENT) or path in CITIZEN_PATHS:
            continue
        if path == "/v1/oauth/token":
            continue
        for method, operation in methods.items():
            operations.append((method.upper(), path, operation))
    return operations


async def callers(api: ApiHarness) -> dict[str, dict[str, str]]:
    """Owner A's manager, A's building manager, and a citizen."""
    own = await seed_org(api)
    citizen = await add_user(api, "u-cit", Role.CITIZEN)
    return {
        "owner manager": api.token_for(own.manager_id),
        "building manager": api.token_for(own.building_manager_id),
        "citizen": api.token_for(citizen),
    }


async def test_no_role_reaches_another_owners_objects(api: ApiHarness) -> None:
    foreign = await seed_foreign(api)
    people = await callers(api)
    openapi = (await api.client.get("/openapi.json")).json()
    operations = management_operations(openapi)
    values = foreign.path_values()
    leaks: list[str] = []
    tried = 0
    outcomes: Counter[int] = Counter()

    for role, headers in people.items():
        for method, path, operation in operations:
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            missing = [n for n in names if n not in values]
            assert not missing, f"{method} {path}: no foreign id for {missing}; extend Foreign"
            if not names and method == "GET":
                continue  # lists: see the test below
            url = path.format(**values)
            body = (
                sample_body(openapi, operation, foreign)
                if method in ("POST", "PUT", "PATCH")
                else None
            )
            response = await api.client.request(method, url, headers=headers, json=body)
            tried += 1
            outcomes[response.status_code] += 1
            code = response.json().get("error", {}).get("code") if response.content else None
            allowed = (
                response.status_code == 404
                or (response.status_code == 403 and code in ROLE_REFUSALS)
                or (response.status_code == 422 and code in SCHEMA_REFUSALS)
            )
            if not allowed:
                leaks.append(f"{role}: {method} {url} -> {response.status_code} {code}")

    print(
        f"\nauthz matrix: {tried} requests over {len(operations)} operations x "
        f"{len(people)} roles, {len(leaks)} successes or leaks; statuses {dict(outcomes)}"
    )
    assert leaks == []
    await assert_untouched(api, foreign)


async def test_lists_never_show_another_owners_objects(api: ApiHarness) -> None:
    foreign = await seed_foreign(api)
    people = await callers(api)
    openapi = (await api.client.get("/openapi.json")).json()
    lists = [p for m, p, _ in management_operations(openapi) if m == "GET" and "{" not in p]
    seen: list[str] = []
    for role, headers in people.items():
        for path in lists:
            for params in (
                {},
                {"owner_id": foreign.org.owner_id},
                {"building_id": foreign.org.building_id},
                {"door_id": foreign.org.door_id},
            ):
                response = await api.client.get(path, headers=headers, params=params)
                if response.status_code >= 400:
                    continue  # a refusal may echo the id the caller sent; that is no leak
                seen += [
                    f"{role}: GET {path} {params} shows {s}"
                    for s in foreign.secrets()
                    if s in response.text
                ]
    print(
        f"\nauthz lists: {len(lists)} list endpoints x {len(people)} roles x 4 filters, "
        f"{len(seen)} leaks"
    )
    assert seen == []


async def assert_untouched(api: ApiHarness, foreign: Foreign) -> None:
    """Nothing of owner B changed, whatever was sent."""
    async with api.state.sessions() as session:
        building = await session.get(Building, foreign.org.building_id)
        door = await session.get(Door, foreign.org.door_id)
        grant = await session.get(Grant, foreign.grant_id)
        member = await session.get(GroupMember, (foreign.group_id, foreign.member_id))
        group = await session.get(Group, foreign.group_id)
        rule = await session.get(PublicAccess, foreign.rule_id)
        client = await session.get(BookingClient, foreign.client_id)
    assert building is not None
    assert (building.name, building.lockdown_since) == ("Library", None)
    assert door is not None
    assert (door.enabled, door.passage_schedule) == (True, None)
    assert grant is not None
    assert grant.revoked_at is None
    assert member is not None
    assert group is not None
    assert group.name == "Volunteers"
    assert rule is not None
    assert rule.enabled
    assert client is not None
    assert client.enabled
    assert json.dumps(rule.schedule) == json.dumps(Schedule().model_dump(mode="json"))
