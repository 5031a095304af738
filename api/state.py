"""What the process builds once at start-up and every request shares."""

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.broker_accounts.base import BrokerAccounts, NoBrokerAccounts
from api.identity.dev_provider import DevIdentityProvider
from api.identity.oidc import OidcClient
from api.identity.verifier import TokenVerifier
from api.keys.keyring import KeyRing
from api.keys.watcher import KeyRingWatcher
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
    verifier: TokenVerifier
    dev_identity: DevIdentityProvider | None
    broker_accounts: BrokerAccounts = field(default_factory=NoBrokerAccounts)
    """Gateways' broker accounts (api/broker_accounts/): no-op unless CITYKEY_BROKER_ADMIN_URL."""
    keys_watcher: KeyRingWatcher | None = None
    """Reloads the key ring when keyring.json changes (api/keys/watcher.py)."""
    oidc: OidcClient | None = None
    """Sign-in through the OpenID Connect provider (api/identity/oidc.py), when configured."""
