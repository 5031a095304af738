"""Settings, validated once at start-up (environment variables prefixed CITYKEY_)."""

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.limits.clients import ProxyList
from citykey_protocol.topics import require_segment
from citykey_protocol.transport import BrokerAddress

EMBEDDED_BROKER = "embedded"


class Settings(BaseSettings):
    """Every knob of the API. Production mode refuses the demo conveniences."""

    model_config = SettingsConfigDict(env_prefix="CITYKEY_", env_file=None, extra="ignore")

    mode: Literal["dev", "production"] = "dev"
    database_url: str = "sqlite+aiosqlite:///./var/citykey.db"
    mqtt_url: str = Field(
        default=EMBEDDED_BROKER,
        description="mqtt[s]://user:password@host:port, or 'embedded' (demo only).",
    )
    embedded_broker_port: int = 1884
    broker_admin_url: str = Field(
        default="",
        description="mqtt[s]://user:password@host:port of the broker's dynamic-security "
        "administrator (api/broker_accounts/); empty: the API does not manage broker accounts.",
    )
    key_dir: Path = Path("var/keys")
    generate_keys: bool = Field(
        default=True, description="Create a signing key when the key directory is empty (dev)."
    )
    issuer: str = "http://localhost:8000"
    token_lifetime_s: int = Field(default=30, ge=5, le=120)
    offline_token_lifetime_s: int = Field(
        default=900,
        ge=60,
        le=3600,
        description="Longest life of an offline token (api/offline/); shorter when the access "
        "that justifies it ends sooner. Gateways refuse more than 3600.",
    )
    unlock_timeout_s: float = Field(default=5.0, gt=0, le=60)
    dev_identity: bool = Field(
        default=True, description="Serve the development identity provider (dev mode only)."
    )
    identity_audience: str = "citykey-api"
    instance_id: str = Field(default_factory=lambda: f"api-{secrets.token_hex(4)}")
    db_pool_size: int = 10
    # Bounds on every wait on PostgreSQL (api/db.py): an unreachable database costs a request
    # at most ping + connect (0.8 s by default) and answers 503 database_unavailable.
    db_connect_timeout_s: float = Field(default=0.5, gt=0, le=30)
    db_ping_timeout_s: float = Field(default=0.3, gt=0, le=30)
    db_pool_timeout_s: float = Field(default=0.5, gt=0, le=30)
    db_command_timeout_s: float = Field(default=5.0, gt=0, le=300)
    # Abuse limits (api/limits/, docs/operations.md); 0 switches the first two off.
    unlock_rate_per_minute: int = Field(default=10, ge=0, le=1_000)
    auth_failure_limit: int = Field(default=30, ge=0, le=1_000)
    auth_failure_window_s: float = Field(default=60.0, gt=0, le=86_400)
    max_body_bytes: int = Field(default=65_536, ge=1_024, le=64 * 1024 * 1024)
    trusted_proxies: ProxyList = ""
    events_share_group: str = Field(
        default="",
        description="Receive gateway events through the shared subscription $share/<group>/... "
        "so that one API instance of the group handles each event. Only for a broker that "
        "shares by publisher (EMQX's hash_clientid strategy): Mosquitto hands out messages in "
        "turn, which splits one gateway's journal across instances (docs/operations.md). "
        "Empty: every instance receives every event and the database keeps each one once.",
    )
    # The web app (api/web/): signed session cookies. Empty in dev: a random secret is kept in
    # the key directory (web-session.key) so sign-ins survive a restart; required in production.
    session_secret: SecretStr = SecretStr("")
    session_max_age_s: int = Field(default=8 * 3600, ge=60, le=30 * 86_400)
    secure_cookies: bool = Field(
        default=False, description="Mark the session cookie Secure (behind HTTPS: set true)."
    )
    # OpenID Connect (api/identity/oidc.py). Configured by issuer, client id and secret; the
    # provider's national identity claim maps to a pseudonymous user id (api/identity/pseudonym.py).
    oidc_issuer: str = Field(default="", description="Issuer URL; empty: no OpenID Connect.")
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr = SecretStr("")
    oidc_audience: str = Field(
        default="citykey-api", description="'aud' of the provider's access tokens for this API."
    )
    oidc_resource: str = Field(
        default="", description="Resource indicator sent with the sign-in (RFC 8707); optional."
    )
    oidc_pid_claim: str = "pid"
    oidc_scopes: str = "openid profile"
    oidc_display_name: str = Field(default="ID-porten", description="The sign-in button's label.")
    oidc_timeout_s: float = Field(default=5.0, gt=0, le=60)
    oidc_jwks_cache_s: int = Field(default=86_400, ge=60, le=7 * 86_400)
    oidc_jwks_min_refetch_s: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="An unknown kid refetches the provider's keys at most this often.",
    )
    # Empty in dev: a random key is kept in the key directory (pseudonym.key); required in
    # production. Changing it orphans every user.
    pseudonym_key: SecretStr = SecretStr("")

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> "Settings":
        require_segment(self.instance_id, "instance id")
        if self.mqtt_url != EMBEDDED_BROKER:
            BrokerAddress.parse(self.mqtt_url)  # raises ValueError on a bad URL
        if self.events_share_group:
            require_segment(self.events_share_group, "events share group")
            if self.mqtt_url == EMBEDDED_BROKER:
                # amqtt acknowledges $share subscriptions but delivers nothing to them.
                raise ValueError("CITYKEY_EVENTS_SHARE_GROUP needs a real broker, not the demo one")
        if self.broker_admin_url:
            if self.mqtt_url == EMBEDDED_BROKER:
                raise ValueError("CITYKEY_BROKER_ADMIN_URL needs Mosquitto, not the demo broker")
            if BrokerAddress.parse(self.broker_admin_url).anonymous:
                raise ValueError("CITYKEY_BROKER_ADMIN_URL must carry user:password@")
        oidc_parts = (
            self.oidc_issuer,
            self.oidc_client_id,
            self.oidc_client_secret.get_secret_value(),
        )
        if any(oidc_parts) and not all(oidc_parts):
            raise ValueError(
                "CITYKEY_OIDC_ISSUER, CITYKEY_OIDC_CLIENT_ID and CITYKEY_OIDC_CLIENT_SECRET "
                "go together"
            )
        if self.mode == "production":
            problems = []
            if self.dev_identity:
                problems.append("CITYKEY_DEV_IDENTITY must be false")
            if self.generate_keys:
                problems.append("CITYKEY_GENERATE_KEYS must be false (provision keys first)")
            if not self.session_secret.get_secret_value():
                problems.append("CITYKEY_SESSION_SECRET must be set (web app sessions)")
            if not self.oidc_configured:
                problems.append(
                    "CITYKEY_OIDC_ISSUER, CITYKEY_OIDC_CLIENT_ID and CITYKEY_OIDC_CLIENT_SECRET "
                    "must be set (sign-in)"
                )
            if len(self.pseudonym_key.get_secret_value()) < 32:
                problems.append("CITYKEY_PSEUDONYM_KEY must be set (32+ random characters)")
            if self.mqtt_url == EMBEDDED_BROKER:
                problems.append("the embedded broker is for the demo only")
            elif BrokerAddress.parse(self.mqtt_url).anonymous:
                problems.append("the broker connection must authenticate (user:password@)")
            if problems:
                raise ValueError("refusing to start in production mode: " + "; ".join(problems))
        return self

    @property
    def oidc_configured(self) -> bool:
        """Whether sign-in through an OpenID Connect provider is configured."""
        return bool(self.oidc_issuer)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def broker(self) -> BrokerAddress:
        """The broker to connect to (the embedded one listens on loopback)."""
        if self.mqtt_url == EMBEDDED_BROKER:
            return BrokerAddress("127.0.0.1", self.embedded_broker_port)
        return BrokerAddress.parse(self.mqtt_url)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (read from the environment once)."""
    return Settings()
