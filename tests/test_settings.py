"""Settings are validated at start-up; production refuses the demo conveniences."""

import pytest
from pydantic import ValidationError

from api.settings import Settings


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
    ],
)
def test_production_refuses_unsafe_settings(overrides: dict[str, object], complaint: str) -> None:
    safe: dict[str, object] = {
        "mode": "production",
        "dev_identity": False,
        "generate_keys": False,
        "mqtt_url": "mqtts://citykey-api:secret@broker:8883",
        "session_secret": "a-long-random-secret",
    }
    with pytest.raises(ValidationError, match=complaint):
        Settings.model_validate({**safe, **overrides})


def test_production_accepts_safe_settings() -> None:
    settings = Settings(
        mode="production",
        dev_identity=False,
        generate_keys=False,
        mqtt_url="mqtts://citykey-api:secret@broker:8883",
        session_secret="a-long-random-secret",
    )
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
