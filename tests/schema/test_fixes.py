"""Regression tests for what Schemathesis found (each also covered by tests/schema/test_openapi
.py, but these run in milliseconds and name the bug)."""

import httpx
import pytest
from pydantic import ValidationError

from api.schedules import OpenDay, TimeRange
from tests.conftest import ApiHarness
from tests.support import World


def test_local_times_are_wall_times_without_offset() -> None:
    """The schema said format "time" (RFC 3339, offset required) for "08:00:00"; an offset was
    accepted and silently dropped."""
    assert TimeRange(weekday=0, start="08:00", end="16:00:00").start.isoformat() == "08:00:00"
    with pytest.raises(ValidationError, match="no UTC offset"):
        TimeRange(weekday=0, start="08:00:00+01:00", end="16:00:00")
    schema = TimeRange.model_json_schema()["properties"]["start"]
    assert "format" not in schema
    assert schema["pattern"].startswith("^")
    assert "format" not in OpenDay.model_json_schema()["properties"]["end"]


def error(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_text_postgres_cannot_store_is_refused_with_422(
    api: ApiHarness, world: World
) -> None:
    """A NUL in a path, a query or a JSON string, or a lone surrogate, reached PostgreSQL and
    came back as a 500; a JSON body that was not UTF-8 was a 400 nobody documented."""
    citizen = api.token_for(world.citizen_id)
    json_type = {"Content-Type": "application/json", **citizen}
    assert error(await api.client.get("/v1/doors/a%00b", headers=citizen)) == (
        422,
        "validation_error",
    )
    assert error(await api.client.get("/v1/me/activity?cursor=%00", headers=citizen)) == (
        422,
        "validation_error",
    )
    for body in (b'{"seconds": 3, "x": "a\\u0000"}', b'{"\\u0000": 1}', b'{"x": "\\ud800"}'):
        response = await api.client.post("/v1/doors/d/unlock", content=body, headers=json_type)
        assert error(response) == (422, "validation_error"), body
    deep = await api.client.post("/v1/doors/d/unlock", content=b"[" * 30_000, headers=json_type)
    assert error(deep) == (422, "malformed_json")
    not_utf8 = await api.client.post(
        "/v1/doors/d/unlock", content=b'{"x": "\xff"}', headers=json_type
    )
    assert error(not_utf8) == (422, "malformed_json")
    # An escaped backslash before "u0000" is text, not a NUL: the endpoint sees it.
    literal = await api.client.post(
        "/v1/doors/no-such-door/unlock", content=b'{"note": "\\\\u0000"}', headers=json_type
    )
    assert error(literal) == (404, "door_not_found")
