"""The docs name every wire code, payload field, token claim and setting the code defines, so
adding one to the code without documenting it fails here."""

from enum import StrEnum
from pathlib import Path

import msgspec
import pytest

from api.settings import Settings
from citykey_protocol import claims, codes, messages, modes, topics

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def protocol() -> str:
    return (DOCS / "protocol.md").read_text()


@pytest.mark.parametrize(
    "enum",
    [
        codes.AckResult,
        codes.TokenRejection,
        codes.DeviceFault,
        codes.CommandRefusal,
        codes.ModeRejection,
    ],
)
def test_protocol_doc_names_every_code(protocol: str, enum: type[StrEnum]) -> None:
    missing = [code.value for code in enum if f"`{code.value}`" not in protocol]
    assert missing == [], f"docs/protocol.md does not mention {enum.__name__} {missing}"


@pytest.mark.parametrize(
    "struct",
    [
        messages.UnlockCommand,
        messages.Ack,
        messages.GatewayStatus,
        messages.GatewayEvent,
        claims.TokenHeader,
        claims.UnlockClaims,
        modes.ModeClaims,
        modes.DoorHold,
    ],
)
def test_protocol_doc_explains_every_field(protocol: str, struct: type[msgspec.Struct]) -> None:
    missing = [name for name in struct.__struct_fields__ if f"| `{name}` |" not in protocol]
    assert missing == [], f"docs/protocol.md has no table row for {struct.__name__} {missing}"


def test_protocol_doc_names_every_topic(protocol: str) -> None:
    gateway = topics.GatewayTopics("GATEWAY")
    named = (
        gateway.commands,
        gateway.ack("INSTANCE"),
        gateway.events,
        gateway.status,
        gateway.mode,
    )
    for topic in named:
        documented = topic.replace("GATEWAY", "<gateway>").replace("INSTANCE", "<instance>")
        assert f"`{documented}`" in protocol, documented
    assert f"`{topics.KEYSET_TOPIC}`" in protocol


def test_operations_doc_lists_every_setting() -> None:
    operations = (DOCS / "operations.md").read_text()
    missing = [
        f"CITYKEY_{name.upper()}"
        for name in Settings.model_fields
        if f"| `CITYKEY_{name.upper()}` |" not in operations
    ]
    assert missing == [], f"docs/operations.md has no settings row for {missing}"
