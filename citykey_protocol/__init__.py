"""The citykey wire contract: MQTT topics, payloads, token claims and reason codes.

This package is the one place where the contract between the API, the gateway daemon and the
simulator is defined. It depends on msgspec and aiomqtt only, so the gateway can import it
without the API's web stack. docs/protocol.md describes the same contract for people.
"""

PROTOCOL_VERSION = 1
"""Value of the ``v`` field in every payload; bumped on a breaking change."""
