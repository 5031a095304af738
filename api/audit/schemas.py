"""Response models of the audit query, and the CSV row shape."""

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from api.audit.models import AuditEvent
from api.common import as_utc

CSV_COLUMNS = (
    "id",
    "ts",
    "actor",
    "action",
    "building_id",
    "door_id",
    "gateway_id",
    "decision",
    "reason",
    "result",
    "command_id",
    "latency_ms",
    "detail",
)


class AuditEventOut(BaseModel):
    """One audit row: an access decision, an unlock result, or a change with its before and
    after (in ``detail``)."""

    id: int = Field(examples=[1042])
    ts: datetime
    actor: str | None = Field(examples=["u_citizen_demo"])
    action: str = Field(examples=["unlock.requested"])
    building_id: str | None = Field(examples=["bld_9a8b7c6d5e4f3a2b"])
    door_id: str | None = Field(examples=["grunerlokka-main"])
    gateway_id: str | None = Field(examples=["gw-grunerlokka-1"])
    decision: str | None = Field(examples=["allow"])
    reason: str | None = Field(examples=[None])
    result: str | None = Field(examples=["unlocked"])
    command_id: str | None = Field(examples=["5b0c8f9e-3c1d-4b53-9a7e-2d6f1e0a4c11"])
    latency_ms: float | None = Field(examples=[41.7])
    detail: dict[str, Any] = Field(examples=[{"rule_id": "grt_0a1b2c3d4e5f6a7b"}])


def event_out(event: AuditEvent) -> AuditEventOut:
    assert event.id is not None
    return AuditEventOut(
        id=event.id,
        ts=as_utc(event.ts),
        actor=event.actor,
        action=event.action,
        building_id=event.building_id,
        door_id=event.door_id,
        gateway_id=event.gateway_id,
        decision=event.decision,
        reason=event.reason,
        result=event.result,
        command_id=event.command_id,
        latency_ms=event.latency_ms,
        detail=event.detail,
    )


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_row(event: AuditEvent) -> list[str]:
    """The CSV cells of one row, in CSV_COLUMNS order; ``detail`` as compact JSON.

    Text that a spreadsheet would run as a formula (reasons come from gateways, ids from
    identity providers) gets a leading apostrophe, as OWASP advises for CSV exports."""

    def cell(value: object) -> str:
        text = "" if value is None else str(value)
        return f"'{text}" if text.startswith(_FORMULA_STARTS) else text

    return [
        cell(event.id),
        as_utc(event.ts).isoformat(),
        cell(event.actor),
        event.action,
        cell(event.building_id),
        cell(event.door_id),
        cell(event.gateway_id),
        cell(event.decision),
        cell(event.reason),
        cell(event.result),
        cell(event.command_id),
        cell(event.latency_ms),
        json.dumps(event.detail, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
    ]
