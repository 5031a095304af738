"""The application factory."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import health
from api.access import router as access_router
from api.audit import router as audit_router
from api.bookings import router as bookings_router
from api.broker_accounts import broker_accounts_for
from api.buildings import router as buildings_router
from api.buildings.status import DoorStatusRecorder
from api.db import create_engine, session_factory
from api.errors import install_error_handlers
from api.events import router as events_router
from api.events.ingest import EventIngestor
from api.gateways import router as gateways_router
from api.gateways.tracker import GatewayStatusTracker
from api.groups import router as groups_router
from api.identity import router as identity_router
from api.identity.dev_provider import DevIdentityProvider
from api.identity.oidc import OidcClient
from api.identity.verifier import IssuerVerifiers, TokenVerifier
from api.keys import router as keys_router
from api.keys.keyring import KeyRing
from api.keys.watcher import KeyRingWatcher
from api.limits.install import door_limit, install_limits
from api.me import router as me_router
from api.modes import router as modes_router
from api.modes.acks import ModeAckListener
from api.modes.scheduler import PassageScheduler
from api.offline import router as offline_router
from api.offline.revocations import RevocationPublisher
from api.owners import router as owners_router
from api.public_access import router as public_access_router
from api.relay.embedded_broker import EmbeddedBroker
from api.relay.mqtt import MqttRelay
from api.settings import EMBEDDED_BROKER, Settings, get_settings
from api.state import AppState
from api.unlock import router as unlock_router
from api.unlock.tokens import UnlockTokenMinter
from api.web.install import install_web

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: from the environment)."""
    settings = settings or get_settings()
    dev_identity = settings.mode == "dev" and settings.dev_identity

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Discovery is bounded by CITYKEY_OIDC_TIMEOUT_S; an unreachable or inconsistent
        # provider stops the start-up with a clear OidcConfigurationError.
        oidc = await OidcClient.start(settings) if settings.oidc_configured else None
        broker = None
        if settings.mqtt_url == EMBEDDED_BROKER:
            broker = EmbeddedBroker(port=settings.embedded_broker_port)
            await broker.start()
        keyring = KeyRing.load(settings.key_dir, generate=settings.generate_keys)
        engine = create_engine(settings)
        sessions = session_factory(engine)
        provider = (
            DevIdentityProvider.load(settings.key_dir, settings.issuer, settings.identity_audience)
            if dev_identity
            else None
        )
        verifiers: dict[str, TokenVerifier] = {}
        if provider is not None:
            verifiers[provider.issuer] = provider.verifier()
        if oidc is not None:
            verifiers[oidc.metadata.issuer] = oidc.access_token_verifier()
        if not verifiers:
            raise RuntimeError(
                "no identity provider configured: set CITYKEY_OIDC_ISSUER, CITYKEY_OIDC_CLIENT_ID "
                "and CITYKEY_OIDC_CLIENT_SECRET (or, in dev, CITYKEY_DEV_IDENTITY=true)"
            )
        relay = MqttRelay(
            settings.broker,
            settings.instance_id,
            share_events=settings.events_share_group or None,
        )
        tracker = GatewayStatusTracker(sessions)
        tracker.attach(relay)
        ModeAckListener(sessions).attach(relay)
        door_status = DoorStatusRecorder(sessions)
        door_status.attach(relay)
        app.state.event_ingestor = events = EventIngestor(sessions).attach(relay)
        await relay.start()
        passage = PassageScheduler(sessions, relay, keyring, settings.issuer).start()
        # Offline tokens' revocation lists (api/offline/revocations.py); requests use it too.
        app.state.offline_revocations = revocations = RevocationPublisher(
            sessions, relay, keyring, settings.issuer
        ).start()
        # Picks up `citykey keys ...` changes without a restart; publishes the signed key set.
        keys_watcher = KeyRingWatcher(keyring, settings.key_dir, relay, settings.issuer)
        await keys_watcher.start()
        app.state.citykey = AppState(
            settings=settings,
            engine=engine,
            sessions=sessions,
            keyring=keyring,
            minter=UnlockTokenMinter(keyring, settings.issuer, settings.token_lifetime_s),
            relay=relay,
            verifier=IssuerVerifiers(verifiers),
            dev_identity=provider,
            oidc=oidc,
            keys_watcher=keys_watcher,
            broker_accounts=broker_accounts_for(settings),
        )
        try:
            yield
        finally:
            await keys_watcher.stop()
            await revocations.stop()
            await passage.stop()
            await relay.stop()
            await events.stop()
            await door_status.stop()
            await tracker.stop()
            await engine.dispose()
            if oidc is not None:
                await oidc.aclose()
            if broker is not None:
                await broker.stop()

    app = FastAPI(
        title="citykey",
        version="0.1.0",
        summary="Open doors of public buildings from a phone.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_limits(app, settings)
    app.include_router(health.router)
    app.include_router(keys_router.router)
    app.include_router(unlock_router.router, **door_limit("unlock"))
    app.include_router(offline_router.router, **door_limit("offline_token"))
    for domain in (
        me_router,
        owners_router,
        buildings_router,
        gateways_router,
        groups_router,
        access_router,
        public_access_router,
        modes_router,
        bookings_router,
        audit_router,
        events_router,
    ):
        app.include_router(domain.router)
    if dev_identity:
        app.include_router(identity_router.router)
    install_web(app, settings)
    return app
