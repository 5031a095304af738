"""What the process builds once at start-up and every request shares."""

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.identity.dev_provider import DevIdentityProvider
from api.identity.verifier import BearerVerifier
from api.keys.keyring import KeyRing
from api.relay.mqtt import MqttRelay
from api.settings import Settings
from api.unlock.tokens import UnlockTokenMinter


@dataclass(slots=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    minter: UnlockTokenMinter
    relay: MqttRelay
    verifier: BearerVerifier
    dev_identity: DevIdentityProvider | None
