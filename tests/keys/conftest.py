"""Fixtures for the key rotation tests. Each test rotates its own key ring, never the one the
rest of the test session shares, and runs on a mosquitto of its own module: key sets live on
one retained topic for every gateway (citykey/v1/keys), and on the shared broker other test
runs' APIs publish theirs there all the time."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.settings import Settings
from bench.common import PrivateMosquitto
from citykey_protocol.transport import BrokerAddress


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """A fresh key directory per test (overrides the session-wide one in tests/conftest.py):
    the API started by the ``api`` fixture creates its ring here."""
    return tmp_path / "keys"


@pytest.fixture(scope="module")
def private_mosquitto() -> Iterator[PrivateMosquitto]:
    """A mosquitto on a free loopback port, started for this module and stopped by its PID."""
    mosquitto = PrivateMosquitto()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
def broker(private_mosquitto: PrivateMosquitto) -> BrokerAddress:
    return BrokerAddress.parse(private_mosquitto.url)


@pytest.fixture
def settings(settings: Settings, private_mosquitto: PrivateMosquitto) -> Settings:
    return settings.model_copy(update={"mqtt_url": private_mosquitto.url})
