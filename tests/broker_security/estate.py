"""A building with a manager and a citizen, gateways provisioned through the real API, and the
real gateway code running with the credential the API issued."""

import asyncio
from dataclasses import dataclass

from api.access.models import Grant
from citykey_protocol.transport import BrokerAddress
from firmware_sim.lock import SimulatedLock
from lock_gateway.config import GatewayConfig
from lock_gateway.daemon import Gateway
from lock_gateway.keys import KeySet
from tests.broker_security.broker import DynsecMosquitto
from tests.conftest import ApiHarness
from tests.manage.helpers_org import Org, add_citizen, seed_org
from tests.support import RunningGateway, unique


@dataclass
class Provisioned:
    """A gateway registered through the API, with the credential it answered with once."""

    gateway_id: str
    password: str
    doors: dict[str, int]

    def address(self, broker: DynsecMosquitto, password: str | None = None) -> BrokerAddress:
        return broker.address(self.gateway_id, password or self.password)


@dataclass
class Estate:
    api: ApiHarness
    broker: DynsecMosquitto
    org: Org
    citizen_id: str

    @classmethod
    async def create(cls, api: ApiHarness, broker: DynsecMosquitto) -> "Estate":
        org = await seed_org(api)
        citizen = await add_citizen(api)
        async with api.state.sessions() as session:
            session.add(Grant(id=unique("grt"), user_id=citizen, building_id=org.building_id))
            await session.commit()
        return cls(api, broker, org, citizen)

    @property
    def manager(self) -> dict[str, str]:
        return self.api.token_for(self.org.building_manager_id)

    async def provision(self, doors: int = 1, gateway_id: str | None = None) -> Provisioned:
        """POST /v1/buildings/{id}/gateways as the building's manager, then its doors."""
        wanted = gateway_id or unique("gw-sec")
        created = await self.api.client.post(
            f"/v1/buildings/{self.org.building_id}/gateways",
            json={"id": wanted, "name": "Secured gateway"},
            headers=self.manager,
        )
        assert created.status_code == 201, created.text
        credential = created.json()["credential"]
        assert credential["username"] == wanted
        door_map: dict[str, int] = {}
        for channel in range(1, doors + 1):
            response = await self.api.client.post(
                f"/v1/buildings/{self.org.building_id}/doors",
                json={"name": f"Door {channel}", "gateway_id": wanted, "channel": channel},
                headers=self.manager,
            )
            assert response.status_code == 201, response.text
            door_map[response.json()["id"]] = channel
        return Provisioned(wanted, credential["password"], door_map)

    async def remove_doors(self, gateway: Provisioned) -> None:
        for door_id in gateway.doors:
            response = await self.api.client.delete(f"/v1/doors/{door_id}", headers=self.manager)
            assert response.status_code == 204, response.text

    async def start(self, gateway: Provisioned) -> RunningGateway:
        """The real gateway code with a simulated lock, logged in with its own credential;
        returns once the API sees it online."""
        config = GatewayConfig(
            gateway_id=gateway.gateway_id,
            broker=gateway.address(self.broker),
            issuer=self.api.state.settings.issuer,
            doors=gateway.doors,
        )
        lock = SimulatedLock(sorted(gateway.doors.values()))
        running_gateway = Gateway(config, lock, KeySet.from_jwks(self.api.state.keyring.jwks()))
        task = asyncio.create_task(running_gateway.run())
        running = RunningGateway(running_gateway, lock, task, dict(gateway.doors))
        async with asyncio.timeout(10):
            while not self.api.state.relay.gateway_online(gateway.gateway_id):
                await asyncio.sleep(0.01)
        return running

    async def unlock(self, door_id: str) -> int:
        """POST /v1/doors/{id}/unlock as the citizen; the HTTP status."""
        response = await self.api.client.post(
            f"/v1/doors/{door_id}/unlock",
            json={"seconds": 1},
            headers=self.api.token_for(self.citizen_id),
        )
        assert response.status_code in (200, 503, 504), response.text
        return response.status_code
