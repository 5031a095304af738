"""What the citizen pages show, shaped from the citizen services' answers (api/me): local
times, both languages, doors split into "now" and "later". No policy and no SQL here."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from api.me.schemas import ActivityItem, MyBuilding, ShareView
from api.web.i18n import Text, activity_text, refusal

LOCAL_FORMAT = "%Y-%m-%d %H:%M"
"""Unambiguous in both languages (no weekday or month names to translate)."""

VIA = {
    # A plain grant is the usual case and gets no badge; the others say where the key is from.
    "share": Text("delt med deg", "shared with you"),
    "booking": Text("booking", "booking"),
    "public": Text("åpen tid", "public hours"),
}


def local(value: datetime | None, timezone: str) -> str | None:
    """``value`` as local wall-clock time of ``timezone`` (``None`` stays ``None``)."""
    return value.astimezone(ZoneInfo(timezone)).strftime(LOCAL_FORMAT) if value else None


@dataclass(frozen=True, slots=True)
class DoorCard:
    door_id: str
    name: str
    via: Text | None = None
    next_window: str | None = None
    why_not_now: Text | None = None


@dataclass(slots=True)
class BuildingCard:
    building_id: str
    name: str
    timezone: str
    now: list[DoorCard] = field(default_factory=list)
    later: list[DoorCard] = field(default_factory=list)


def building_cards(buildings: Iterable[MyBuilding]) -> list[BuildingCard]:
    """My buildings with the doors I may open now first, then those I may open later."""
    cards: list[BuildingCard] = []
    for building in buildings:
        card = BuildingCard(building.building_id, building.building_name, building.timezone)
        for door in building.doors:
            if door.can_open_now:
                via = VIA.get(door.via) if door.via else None
                card.now.append(DoorCard(door.door_id, door.name, via=via))
            else:
                card.later.append(
                    DoorCard(
                        door.door_id,
                        door.name,
                        next_window=local(door.next_window, building.timezone),
                        why_not_now=refusal(door.reason) if door.reason else None,
                    )
                )
        cards.append(card)
    return cards


@dataclass(frozen=True, slots=True)
class ActivityRow:
    when: str
    door: str
    text: Text
    ok: bool


def activity_rows(items: Iterable[ActivityItem], zones: dict[str, str]) -> list[ActivityRow]:
    """One row per unlock request: its refusal, its failure before sending, or its result.
    The "requested, allowed" row of a request that went on to the door is left out: the
    "completed" row that follows tells the end of the story."""
    rows: list[ActivityRow] = []
    for item in items:
        if item.action == "unlock.requested" and item.decision == "allow" and not item.result:
            continue
        zone = zones.get(item.building_id or "", "UTC")
        rows.append(
            ActivityRow(
                when=local(item.ts, zone) or "",
                door=item.door_name or item.door_id or "?",
                text=activity_text(item.decision, item.reason, item.result),
                ok=item.decision != "deny" and item.result == "unlocked",
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class ShareRow:
    door: str
    who: str
    valid_from: str
    valid_until: str
    status: str


def share_rows(
    shares: Iterable[ShareView], zones: dict[str, str], *, given: bool
) -> list[ShareRow]:
    """Shares as table rows: the other citizen, the window in the building's local time."""
    rows: list[ShareRow] = []
    for share in shares:
        zone = zones.get(share.building_id, "UTC")
        rows.append(
            ShareRow(
                door=share.door_name,
                who=share.recipient_user_id if given else share.sharer_user_id,
                valid_from=local(share.valid_from, zone) or "",
                valid_until=local(share.valid_until, zone) or "",
                status=share.status,
            )
        )
    return rows
