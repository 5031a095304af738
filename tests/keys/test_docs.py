"""The docs keep up with the key set contract and the threat model."""

from pathlib import Path

from citykey_protocol.keyset import (
    KEYSET_PATH,
    KEYSET_REJECTED_EVENT,
    KEYSET_TOKEN_TYPE,
    KeySetClaims,
    KeySetRejection,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_protocol_doc_explains_the_key_set() -> None:
    protocol = (DOCS / "protocol.md").read_text()
    missing = [f for f in KeySetClaims.__struct_fields__ if f"| `{f}` |" not in protocol]
    assert missing == [], f"no table row for KeySetClaims {missing}"
    codes = [c.value for c in KeySetRejection if f"`{c.value}`" not in protocol]
    assert codes == [], f"KeySetRejection codes not named {codes}"
    for term in (KEYSET_TOKEN_TYPE, KEYSET_REJECTED_EVENT, KEYSET_PATH, "clock_ok"):
        assert term in protocol, term
    assert "not yet used" not in protocol  # citykey/v1/keys is used now


def test_security_doc_covers_the_threat_model() -> None:
    security = (DOCS / "security.md").read_text()
    for heading in (
        "### A stolen broker password",
        "### A stolen phone token",
        "### A compromised gateway",
        "### Replay",
        "### Clock tampering",
        "## Offline unlock",
    ):
        assert f"\n{heading}\n" in security, heading
    assert "trust on first use" in security


def test_operations_doc_has_the_rotation_runbook() -> None:
    operations = (DOCS / "operations.md").read_text()
    assert "### Rotating the signing keys" in operations
    for command in ("add-next", "activate", "retire", "rotate", "status"):
        assert f"citykey keys {command}" in operations, command
