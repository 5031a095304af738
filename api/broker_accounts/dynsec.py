"""Gateway accounts in Mosquitto's dynamic security plugin, administered over MQTT.

The API logs in as the plugin's administrator (CITYKEY_BROKER_ADMIN_URL) and sends commands
to ``$CONTROL/dynamic-security/v1``; the broker applies them at once, saves its JSON file,
and disconnects a client whose account is deleted or whose password or roles change. So a
removed gateway is off the broker within a round trip, across hosts, with no file shared and
no signal sent.

Each call opens its own short connection (provisioning is rare; no session to keep alive)
with a random client id, and tags its commands with random correlation data: every
administrator receives every response on the shared response topic, so several API
instances can administer one broker side by side.
"""

import asyncio
import json
import logging
import secrets
from typing import Any

import aiomqtt

from api.broker_accounts.acl import (
    CONTROL_TOPIC,
    RESPONSE_TOPIC,
    gateway_acls,
    gateway_client_id,
    gateway_role,
    require_gateway_user,
)
from api.broker_accounts.base import BrokerAccountConflictError, BrokerAccountsError
from citykey_protocol.transport import BrokerAddress

log = logging.getLogger(__name__)

CLIENT_NOT_FOUND = "Client not found"
CLIENT_EXISTS = "Client already exists"
ROLE_NOT_FOUND = "Role not found"
ROLE_EXISTS = "Role already exists"

Command = dict[str, Any]
Response = dict[str, Any]


class DynsecClient:
    """Sends batches of dynamic-security commands and returns their responses."""

    def __init__(self, admin: BrokerAddress, client_prefix: str, *, timeout: float = 5.0) -> None:
        self._admin = admin
        self._prefix = client_prefix
        self._timeout = timeout

    async def execute(self, commands: list[Command]) -> list[Response]:
        """Run ``commands`` in order (one message) and return one response per command, each
        ``{"command": ..., ["error": ...], ["data": ...]}``. Raise BrokerAccountsError when
        the broker cannot be reached or does not answer within the timeout."""
        tag = secrets.token_hex(8)
        tagged = [
            {**command, "correlationData": f"{tag}.{i}"} for i, command in enumerate(commands)
        ]
        payload = json.dumps({"commands": tagged}).encode()
        try:
            async with asyncio.timeout(self._timeout):
                async with self._admin.client(
                    f"{self._prefix}-dynsec-{tag}", keepalive=10
                ) as client:
                    await client.subscribe(RESPONSE_TOPIC, qos=1)
                    await client.publish(CONTROL_TOPIC, payload, qos=1)
                    async for message in client.messages:
                        responses = _responses_for(message.payload, tag)
                        if responses is not None:
                            if len(responses) != len(commands):
                                raise BrokerAccountsError(
                                    f"expected {len(commands)} responses, got {len(responses)}"
                                )
                            return responses
        except TimeoutError:
            raise BrokerAccountsError(
                f"no answer from the broker's dynamic security plugin at "
                f"{self._admin.redacted()} within {self._timeout:.1f}s"
            ) from None
        except aiomqtt.MqttError as exc:
            raise BrokerAccountsError(
                f"cannot administer the broker at {self._admin.redacted()}: {exc}"
            ) from exc
        raise BrokerAccountsError("the administration connection closed without an answer")


def _responses_for(payload: object, tag: str) -> list[Response] | None:
    """The responses in ``payload`` when they answer the batch tagged ``tag``."""
    if not isinstance(payload, bytes | bytearray):
        return None
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    responses = body.get("responses") if isinstance(body, dict) else None
    if not isinstance(responses, list) or not responses:
        return None
    if not all(isinstance(r, dict) for r in responses):
        return None
    if responses[0].get("correlationData") != f"{tag}.0":
        return None  # another administrator's answer
    return responses


def _check(response: Response, *tolerated: str) -> None:
    error = response.get("error")
    if error is not None and error not in tolerated:
        raise BrokerAccountsError(f"dynamic security {response.get('command')}: {error}")


def _gateway_role(gateway_id: str) -> str:
    try:
        return gateway_role(require_gateway_user(gateway_id))
    except ValueError as exc:
        raise BrokerAccountConflictError(str(exc)) from None


class DynsecAccounts:
    """BrokerAccounts on Mosquitto's dynamic security plugin: one client and one role per
    gateway (user name = gateway id, client id bound to ``gw-<id>``)."""

    def __init__(self, admin: BrokerAddress, client_prefix: str, *, timeout: float = 5.0) -> None:
        self.client = DynsecClient(admin, client_prefix, timeout=timeout)

    @property
    def managed(self) -> bool:
        return True

    async def provision_gateway(self, gateway_id: str, password: str) -> None:
        """Create the gateway's role and client, or bring them up to date and set the new
        password (the broker disconnects a session that used the old one)."""
        role = _gateway_role(gateway_id)
        exists = await self._gateway_account_exists(gateway_id)
        account = {
            "username": gateway_id,
            "password": password,
            "clientid": gateway_client_id(gateway_id),
            "roles": [{"rolename": role, "priority": 0}],
        }
        responses = await self.client.execute(
            [
                {"command": "createRole", "rolename": role},
                # The ACLs are (re)written every time, so re-provisioning a gateway also
                # brings an older role up to the current topics.
                {
                    "command": "modifyRole",
                    "rolename": role,
                    "acls": [acl.as_json() for acl in gateway_acls(gateway_id)],
                },
                {"command": "modifyClient" if exists else "createClient", **account},
            ]
        )
        _check(responses[0], ROLE_EXISTS)
        _check(responses[1])
        _check(responses[2])
        log.info("broker account of gateway %s %s", gateway_id, "updated" if exists else "created")

    async def revoke_gateway(self, gateway_id: str) -> None:
        """Delete the gateway's client (the broker disconnects it at once) and its role."""
        role = _gateway_role(gateway_id)
        commands: list[Command] = [{"command": "deleteRole", "rolename": role}]
        if await self._gateway_account_exists(gateway_id):
            commands.insert(0, {"command": "deleteClient", "username": gateway_id})
        responses = await self.client.execute(commands)
        for response in responses:
            _check(response, CLIENT_NOT_FOUND, ROLE_NOT_FOUND)
        log.info("broker account of gateway %s removed", gateway_id)

    async def _gateway_account_exists(self, gateway_id: str) -> bool:
        """True when the gateway's client exists; BrokerAccountConflictError when a client of
        that name exists but is not a gateway account (it is left alone)."""
        [response] = await self.client.execute([{"command": "getClient", "username": gateway_id}])
        if response.get("error") == CLIENT_NOT_FOUND:
            return False
        _check(response)
        client = response.get("data", {}).get("client", {})
        roles = [r.get("rolename") for r in client.get("roles", []) if isinstance(r, dict)]
        if roles != [gateway_role(gateway_id)]:
            raise BrokerAccountConflictError(
                f"broker user {gateway_id!r} exists and is not a gateway account"
            )
        return True
