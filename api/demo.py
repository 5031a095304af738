"""Demo data and the one-process demo: API + embedded broker + SQLite + simulated gateways."""

from dataclasses import dataclass
from datetime import time

from sqlalchemy.ext.asyncio import AsyncSession

from api.access.models import Grant
from api.buildings.models import Building, Door
from api.gateways.models import Gateway
from api.groups.models import Group, GroupMember
from api.identity.models import Role, User
from api.owners.models import ManagerScope, Owner
from api.public_access.models import PublicAccess
from api.schedules import Schedule
from firmware_sim.fleet import FleetLayout

DEMO_LAYOUT = FleetLayout(prefix="demo-gw", gateways=2, doors_per_gateway=2)
CITIZEN_ID = "u_citizen_kari"
OTHER_CITIZEN_ID = "u_citizen_ola"
MANAGER_ID = "u_manager_ingrid"
ADMIN_ID = "u_admin"
BUILDING_ID = "bld_grunerlokka_library"
OWNER_ID = "own_grunerlokka"


@dataclass(frozen=True, slots=True)
class DemoData:
    building_id: str
    door_ids: list[str]
    citizen_id: str


async def seed_demo(session: AsyncSession, layout: FleetLayout = DEMO_LAYOUT) -> DemoData:
    """A city district owning a library with the simulated gateways' doors. Kari may open
    every door; Ola has no grant (the manager Ingrid can give him one); Ingrid manages the
    district; the makerspace group and self-service hours show the richer policy."""
    session.add(Owner(id=OWNER_ID, name="Bydel Grünerløkka"))
    session.add_all(
        [
            User(id=CITIZEN_ID, display_name="Kari Nordmann", roles=[Role.CITIZEN]),
            User(id=OTHER_CITIZEN_ID, display_name="Ola Nordmann", roles=[Role.CITIZEN]),
            User(id=MANAGER_ID, display_name="Ingrid Manager", roles=[Role.MANAGER]),
            User(id=ADMIN_ID, display_name="Admin", roles=[Role.ADMIN]),
        ]
    )
    await session.flush()
    session.add(
        Building(
            id=BUILDING_ID,
            name="Grünerløkka library",
            owner_id=OWNER_ID,
            timezone="Europe/Oslo",
        )
    )
    session.add(ManagerScope(id="msc_demo_ingrid", user_id=MANAGER_ID, owner_id=OWNER_ID))
    session.add(Group(id="grp_demo_makers", owner_id=OWNER_ID, name="Makerspace volunteers"))
    await session.flush()
    session.add(GroupMember(group_id="grp_demo_makers", user_id=CITIZEN_ID, added_by=MANAGER_ID))
    door_ids: list[str] = []
    names = ["Main entrance", "Back door", "Meeting room", "Makerspace"]
    for g, (gateway_id, doors) in enumerate(layout):
        session.add(Gateway(id=gateway_id, name=f"Gateway {g + 1}", building_id=BUILDING_ID))
        await session.flush()
        for door_id, channel in doors.items():
            name = names[len(door_ids) % len(names)]
            session.add(
                Door(
                    id=door_id,
                    name=name,
                    building_id=BUILDING_ID,
                    gateway_id=gateway_id,
                    channel=channel,
                    default_unlock_seconds=5,
                )
            )
            door_ids.append(door_id)
    await session.flush()
    session.add(
        Grant(
            id="grt_demo_kari",
            user_id=CITIZEN_ID,
            building_id=BUILDING_ID,
            created_by=MANAGER_ID,
            shareable=True,
        )
    )
    # Self-service library hours on the last door: open 07-23 to anyone aged 15 or more.
    session.add(
        PublicAccess(
            id="pub_demo_selfservice",
            door_id=door_ids[-1],
            schedule=Schedule.every_day(time(7), time(23)).model_dump(mode="json"),
            min_age=15,
            created_by=MANAGER_ID,
        )
    )
    return DemoData(BUILDING_ID, door_ids, CITIZEN_ID)
