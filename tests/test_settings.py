"""Settings are validated at start-up; production refuses the demo conveniences."""

import pytest
from pydantic import ValidationError

from api.settings import Settings

OIDC: dict[str, str] = {
    "oidc_issuer": "https://idporten.example",
    "oidc_client_id": "citykey",
    "oidc_client_secret": "client-secret",
    "pseudonym_key": "p" * 32,
}


def test_dev_defaults_are_the_demo() -> None:
    settings = Settings()
    assert settings.mode == "dev"
    assert settings.mqtt_url == "embedded"
    assert settings.token_lifetime_s == 30
    assert settings.unlock_timeout_s == 5.0
    assert settings.is_sqlite


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"dev_identity": True}, "DEV_IDENTITY"),
        ({"generate_keys": True}, "GENERATE_KEYS"),
        ({"mqtt_url": "embedded"}, "embedded broker"),
        ({"mqtt_url": "mqtt://broker:1883"}, "must authenticate"),
        ({"session_secret": ""}, "SESSION_SECRET"),
        ({"oidc_issuer": "", "oidc_client_id": "", "oidc_client_secret": ""}, "OIDC_ISSUER"),
        ({"pseudonym_key": ""}, "PSEUDONYM_KEY"),
        ({"pseudonym_key": "short"}, "PSEUDONYM_KEY"),
    ],
)
def test_production_refuses_unsafe_settings(overrides: dict[str, object], complaint: str) -> None:
    safe: dict[str, object] = {
        "mode": "production",
        "dev_identity": False,
        "generate_keys": False,
        "mqtt_url": "mqtts://citykey-api:secret@broker:8883",
        "session_secret": "a-long-random-secret",
        **OIDC,
    }
    with pytest.raises(ValidationError, match=complaint):
        Settings.model_validate({**safe, **overrides})


def test_production_accepts_safe_settings() -> None:
    settings = Settings.model_validate(
        {
            "mode": "production",
            "dev_identity": False,
            "generate_keys": False,
            "mqtt_url": "mqtts://citykey-api:secret@broker:8883",
            "session_secret": "a-long-random-secret",
            **OIDC,
        }
    )
    assert settings.oidc_configured
    assert settings.broker.tls
    assert settings.broker.username == "citykey-api"


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CITYKEY_TOKEN_LIFETIME_S", "15")
    monkeypatch.setenv("CITYKEY_UNLOCK_TIMEOUT_S", "2.5")
    settings = Settings()
    assert (settings.token_lifetime_s, settings.unlock_timeout_s) == (15, 2.5)


def test_bad_broker_url_is_refused() -> None:
    with pytest.raises(ValidationError, match="mqtt://"):
        Settings(mqtt_url="http://broker")


@pytest.mark.parametrize("missing", ["oidc_issuer", "oidc_client_id", "oidc_client_secret"])
def test_openid_connect_settings_go_together(missing: str) -> None:
    values = {k: v for k, v in OIDC.items() if k != "pseudonym_key"}
    with pytest.raises(ValidationError, match="go together"):
        Settings.model_validate({**values, missing: ""})


def test_dev_mode_needs_no_openid_connect() -> None:
    assert not Settings().oidc_configured


def test_events_share_group_needs_a_real_broker() -> None:
    with pytest.raises(ValidationError, match="real broker"):
        Settings(events_share_group="citykey-api")
    with pytest.raises(ValidationError, match="share group"):
        Settings(mqtt_url="mqtt://broker:1883", events_share_group="a/b")
    settings = Settings(mqtt_url="mqtt://broker:1883", events_share_group="citykey-api")
    assert settings.events_share_group == "citykey-api"
