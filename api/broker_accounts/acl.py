"""Who may do what on the broker, as Mosquitto dynamic-security users, roles and ACLs.

The same rights as deploy/mosquitto/acl (the readable reference, and the file-based setup),
written for the dynamic security plugin: tests/broker_security/test_roles.py holds the two
against each other, so a topic added to one and not the other fails the tests.

Rules:
- ``read T`` grants the subscription and the delivery: ``subscribeLiteral`` when ``T`` has no
  wildcard (the subscription must be exactly ``T``), ``subscribePattern`` otherwise, plus
  ``publishClientReceive``. ``write T`` grants ``publishClientSend``.
- Everything else is refused (``DEFAULT_ACL_ACCESS``), including delivery: even a subscription
  granted by mistake receives nothing no role lets the client receive.
- One role per gateway, named ``citykey-gw-<id>``, with its own topics written out. Mosquitto
  2.0's dynamic security plugin does not substitute ``%u``/``%c`` in ACL topics (checked
  against the real broker: a ``%u`` rule matched nothing), so a shared role cannot express
  "its own topics".
"""

from dataclasses import dataclass
from typing import Any, Literal

from citykey_protocol.topics import KEYSET_TOPIC, ROOT, GatewayTopics, require_segment

AclType = Literal[
    "publishClientSend",
    "publishClientReceive",
    "subscribeLiteral",
    "subscribePattern",
    "unsubscribeLiteral",
    "unsubscribePattern",
]

ADMIN_USER = "citykey-admin"
"""Administers the dynamic security plugin (the API's CITYKEY_BROKER_ADMIN_URL); no topics."""
API_USER = "citykey-api"
"""Every API instance (CITYKEY_MQTT_URL)."""
HEALTHCHECK_USER = "healthcheck"
"""The compose health check: reads the broker's uptime only."""
RESERVED_USERS = frozenset({ADMIN_USER, API_USER, HEALTHCHECK_USER})
"""Users that are never a gateway's: provisioning refuses these names."""

ADMIN_ROLE = "citykey-admin"
API_ROLE = "citykey-api"
HEALTHCHECK_ROLE = "citykey-healthcheck"
GATEWAY_ROLE_PREFIX = "citykey-gw-"

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
UPTIME_TOPIC = "$SYS/broker/uptime"

DEFAULT_ACL_ACCESS: dict[str, bool] = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}
"""What a client may do that no role grants: nothing but unsubscribing."""


@dataclass(frozen=True, slots=True)
class Acl:
    """One dynamic-security ACL entry."""

    acltype: AclType
    topic: str
    allow: bool = True

    def as_json(self) -> dict[str, Any]:
        """The entry as the plugin's JSON (commands and configuration file alike)."""
        return {"acltype": self.acltype, "topic": self.topic, "priority": 0, "allow": self.allow}


def _has_wildcard(topic: str) -> bool:
    return "+" in topic or "#" in topic


def read(topic: str) -> list[Acl]:
    """Subscribe to ``topic`` (exactly, unless it has wildcards) and receive its messages."""
    subscribe: AclType = "subscribePattern" if _has_wildcard(topic) else "subscribeLiteral"
    return [Acl(subscribe, topic), Acl("publishClientReceive", topic)]


def write(topic: str) -> list[Acl]:
    """Publish to ``topic``."""
    return [Acl("publishClientSend", topic)]


_ANY_GATEWAY = f"{ROOT}/gw/+"


def api_acls() -> list[Acl]:
    """The API: the only user that sends commands, modes, revocation lists, event acks and the
    key set; hears every gateway's acks, status and events; may clear a removed gateway's
    retained status."""
    return [
        *write(f"{_ANY_GATEWAY}/cmd"),
        *write(KEYSET_TOPIC),
        *write(f"{_ANY_GATEWAY}/mode"),
        *write(f"{_ANY_GATEWAY}/revocations"),
        *write(f"{_ANY_GATEWAY}/evack"),
        *write(f"{_ANY_GATEWAY}/status"),
        *read(f"{_ANY_GATEWAY}/ack/+"),
        *read(f"{_ANY_GATEWAY}/status"),
        *read(f"{_ANY_GATEWAY}/event"),
    ]


def gateway_acls(gateway_id: str) -> list[Acl]:
    """One gateway: reads only its own commands, mode, revocation list and event acks and the
    key set; writes only its own acks, events and status (the status is also its last will,
    checked by the same rules)."""
    topics = GatewayTopics(gateway_id)
    return [
        *read(topics.commands),
        *read(topics.mode),
        *read(topics.revocations),
        *read(topics.event_acks),
        *read(KEYSET_TOPIC),
        *write(f"{topics.base}/ack/+"),
        *write(topics.events),
        *write(topics.status),
    ]


def healthcheck_acls() -> list[Acl]:
    """The container health check: the broker's uptime, nothing else."""
    return read(UPTIME_TOPIC)


def admin_acls() -> list[Acl]:
    """The plugin's administrator: its control topic only, no application topic."""
    return [*write(f"{CONTROL_TOPIC}"), *read(RESPONSE_TOPIC)]


def gateway_role(gateway_id: str) -> str:
    """The role that holds one gateway's rights."""
    return GATEWAY_ROLE_PREFIX + require_segment(gateway_id, "gateway id")


def gateway_client_id(gateway_id: str) -> str:
    """The only MQTT client id a gateway's user may connect with. lock_gateway/daemon.py
    connects as ``gw-<id>``; binding the user to it means no client, not even another
    gateway, can take over a gateway's session by reusing its client id."""
    return f"gw-{require_segment(gateway_id, 'gateway id')}"


def require_gateway_user(gateway_id: str) -> str:
    """``gateway_id`` when it can be a gateway's broker user; ValueError otherwise."""
    require_segment(gateway_id, "gateway id")
    if gateway_id.lower() in RESERVED_USERS:
        raise ValueError(f"{gateway_id!r} is the broker user of another component")
    return gateway_id
