"""Gateways: provisioning under a building, broker credentials shown once, live status.

The broker password is generated here and returned to the caller exactly once; only its
scrypt hash is stored (api/gateways/credentials.py). Audit snapshots never contain the hash.
"""

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit.service import record_change
from api.authz import Scope, not_found
from api.broker_accounts import (
    BrokerAccounts,
    BrokerAccountsError,
    NoBrokerAccounts,
    as_api_error,
)
from api.buildings.models import Building
from api.common import new_id
from api.errors import ApiError
from api.gateways import credentials
from api.gateways.models import Gateway
from api.gateways.repository import GatewayRepository
from api.gateways.schemas import GatewayCreate, GatewayUpdate
from api.owners.schemas import Page, decode_cursor, page_of
from api.relay.mqtt import MqttRelay, RelayError
from citykey_protocol.topics import GatewayTopics


def gateway_snapshot(gateway: Gateway | None) -> dict[str, Any] | None:
    """The audit picture of a gateway: every column but the credential hash."""
    if gateway is None:
        return None
    picture = gateway.model_dump(mode="json", exclude={"credential_hash"})
    picture["has_credential"] = gateway.credential_hash is not None
    return picture


@dataclass(frozen=True, slots=True)
class LiveStatus:
    """What this instance's relay knows about a gateway right now."""

    online: bool
    software: str | None
    keyset_version: int | None = None


CLOCK_TOLERANCE_S = 2.5
"""Half the gateways' default clock leeway (5 s): beyond this a gateway's clock is shown as
off, while tokens still pass, so it can be fixed before it refuses them."""


def clock_ok(offset: float | None) -> bool | None:
    """Whether a gateway's clock offset is tolerable; None when unknown."""
    return None if offset is None else abs(offset) <= CLOCK_TOLERANCE_S


class GatewayService:
    def __init__(
        self, session: AsyncSession, relay: MqttRelay, accounts: BrokerAccounts | None = None
    ) -> None:
        self._session = session
        self._repo = GatewayRepository(session)
        self._relay = relay
        self._accounts = accounts or NoBrokerAccounts()

    async def get(self, scope: Scope, gateway_id: str) -> Gateway:
        """One gateway of a building in scope; 404 gateway_not_found otherwise."""
        gateway = await self._repo.get(gateway_id)
        if gateway is None:
            raise not_found("gateway", gateway_id)
        scope.require_building(gateway.building_id, "gateway", gateway_id)
        return gateway

    def live(self, gateway: Gateway) -> LiveStatus:
        status = self._relay.gateway_status(gateway.id)
        if status is None:
            return LiveStatus(online=False, software=None)
        return LiveStatus(
            online=status.online, software=status.software, keyset_version=status.keyset_version
        )

    async def create(
        self, scope: Scope, building_id: str, body: GatewayCreate
    ) -> tuple[Gateway, str]:
        """A gateway in a building in scope, and its broker password (returned only here)."""
        building = await self._building(scope, building_id)
        gateway_id = body.id or new_id("gw")
        taken = ApiError(409, "gateway_exists", f"a gateway with id {gateway_id!r} exists already")
        if await self._repo.get(gateway_id) is not None:
            raise taken
        password = credentials.new_password()
        gateway = Gateway(
            id=gateway_id,
            name=body.name,
            building_id=building.id,
            credential_hash=await asyncio.to_thread(credentials.hash_password, password),
        )
        if not await self._repo.insert(gateway):  # created meanwhile by another request
            raise taken
        await self._provision(gateway.id, password)  # last: a failure rolls the row back
        self._audit(scope, "gateway.created", gateway, None, gateway_snapshot(gateway))
        return gateway, password

    async def page(
        self, scope: Scope, building_id: str, limit: int, cursor: str | None
    ) -> Page[Gateway]:
        """The gateways of a building in scope, by name."""
        building = await self._building(scope, building_id)
        after = None
        if cursor:
            name, gateway_id = decode_cursor(cursor, 2)
            after = (name, gateway_id)
        rows = await self._repo.page(building.id, after, limit + 1)
        return page_of(list(rows), limit, lambda g: (g.name, g.id))

    async def update(self, scope: Scope, gateway_id: str, body: GatewayUpdate) -> Gateway:
        """Rename a gateway."""
        gateway = await self.get(scope, gateway_id)
        changes = {k: v for k, v in body.changes().items() if getattr(gateway, k) != v}
        if not changes:
            return gateway
        before = gateway_snapshot(gateway)
        for field, value in changes.items():
            setattr(gateway, field, value)
        await self._repo.save(gateway)
        self._audit(scope, "gateway.updated", gateway, before, gateway_snapshot(gateway))
        return gateway

    async def rotate_credential(self, scope: Scope, gateway_id: str) -> tuple[Gateway, str]:
        """Replace the broker password; the old one stops matching the stored hash at once."""
        gateway = await self.get(scope, gateway_id)
        before = gateway_snapshot(gateway)
        password = credentials.new_password()
        gateway.credential_hash = await asyncio.to_thread(credentials.hash_password, password)
        await self._repo.save(gateway)
        await self._provision(gateway.id, password)  # the broker drops the old session
        after = gateway_snapshot(gateway)
        assert after is not None
        after["credential_rotated"] = True  # the hash itself never goes to the audit log
        self._audit(scope, "gateway.credential_rotated", gateway, before, after)
        return gateway, password

    async def delete(self, scope: Scope, gateway_id: str) -> None:
        """Delete a gateway no door uses (409 gateway_in_use otherwise)."""
        gateway = await self.get(scope, gateway_id)
        doors = await self._repo.door_count(gateway.id)
        if doors:
            raise ApiError(
                409,
                "gateway_in_use",
                f"{doors} door(s) still use this gateway; move or delete them first",
                doors=doors,
            )
        before = gateway_snapshot(gateway)
        await self._repo.delete(gateway)
        await self._revoke(gateway.id)  # last: a failure rolls the deletion back
        self._audit(scope, "gateway.deleted", gateway, before, None)

    async def _provision(self, gateway_id: str, password: str) -> None:
        try:
            await self._accounts.provision_gateway(gateway_id, password)
        except BrokerAccountsError as exc:
            raise as_api_error(exc) from exc

    async def _revoke(self, gateway_id: str) -> None:
        """Fail closed: the gateway row goes only once the broker confirmed that its account
        is gone (which disconnects it) and its retained status, mode and revocation list are
        cleared, so a gateway later created with the same id inherits nothing."""
        try:
            await self._accounts.revoke_gateway(gateway_id)
        except BrokerAccountsError as exc:
            raise as_api_error(exc) from exc
        topics = GatewayTopics(gateway_id)
        try:
            for topic in (topics.status, topics.mode, topics.revocations):
                await self._relay.publish_retained(topic, b"")
        except RelayError as exc:
            raise ApiError(
                503,
                "broker_unavailable",
                "the gateway's retained messages could not be cleared; nothing was deleted, "
                "try again",
                headers={"Retry-After": "1"},
            ) from exc

    async def _building(self, scope: Scope, building_id: str) -> Building:
        building = await self._repo.get_building(building_id)
        if building is None:
            raise not_found("building", building_id)
        scope.require_building(building.id, "building", building_id)
        return building

    def _audit(
        self,
        scope: Scope,
        action: str,
        gateway: Gateway,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        record_change(
            self._session,
            actor=scope.user.id,
            action=action,
            target_type="gateway",
            target_id=gateway.id,
            before=before,
            after=after,
            building_id=gateway.building_id,
        )
