"""Writes the dynamic security plugin's first configuration file.

The plugin needs its JSON file before the broker starts; afterwards the broker owns it and
rewrites it on every change. This writes the accounts citykey needs from the start (the
plugin's administrator, the API, the health check and, optionally, gateways provisioned
outside the API such as the compose stack's simulated gateway), with their roles and
``DEFAULT_ACL_ACCESS``. It never overwrites an existing file: that file holds every gateway
account the API created since.

    MQTT_ADMIN_PASSWORD=... MQTT_API_PASSWORD=... MQTT_HEALTHCHECK_PASSWORD=... \\
    python -m api.broker_accounts.bootstrap /mosquitto/data/dynamic-security.json \\
        [--gateway sim-gw-0001=MQTT_SIM_GATEWAY_PASSWORD]

Passwords come from environment variables (named on the command line for gateways), never
from arguments, which other users can read in the process list.
"""

import argparse
import base64
import hashlib
import json
import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from api.broker_accounts.acl import (
    ADMIN_ROLE,
    ADMIN_USER,
    API_ROLE,
    API_USER,
    DEFAULT_ACL_ACCESS,
    HEALTHCHECK_ROLE,
    HEALTHCHECK_USER,
    Acl,
    admin_acls,
    api_acls,
    gateway_acls,
    gateway_client_id,
    gateway_role,
    healthcheck_acls,
    require_gateway_user,
)

ITERATIONS = 20_000
"""PBKDF2-SHA512 rounds for the passwords written here (operator-chosen, so possibly weak).
Mosquitto 2.0 uses 101 for passwords set over the control topic, which is enough for the
192-bit random passwords the API generates for gateways, not for a human-chosen one. One
check costs a few milliseconds; these users log in rarely."""
SALT_BYTES = 12
"""The salt length Mosquitto's dynamic security plugin uses and expects."""

ENV_PASSWORDS = {
    ADMIN_USER: "MQTT_ADMIN_PASSWORD",
    API_USER: "MQTT_API_PASSWORD",
    HEALTHCHECK_USER: "MQTT_HEALTHCHECK_PASSWORD",
}


def password_fields(password: str, *, iterations: int = ITERATIONS) -> dict[str, Any]:
    """``password``, ``salt`` and ``iterations`` of a plugin client: PBKDF2-HMAC-SHA512 over
    a random salt, both base64-encoded, as Mosquitto's dynamic security plugin stores them."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
    }


def _role(name: str, text: str, acls: list[Acl]) -> dict[str, Any]:
    return {"rolename": name, "textname": text, "acls": [acl.as_json() for acl in acls]}


def _client(
    username: str, text: str, password: str, role: str, clientid: str | None = None
) -> dict[str, Any]:
    client: dict[str, Any] = {
        "username": username,
        "textname": text,
        "roles": [{"rolename": role, "priority": 0}],
        **password_fields(password),
    }
    if clientid is not None:
        client["clientid"] = clientid
    return client


def build_config(
    *,
    admin_password: str,
    api_password: str,
    healthcheck_password: str,
    gateways: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The plugin configuration: fixed users and roles, plus ``gateways`` (id -> password)."""
    for name, value in (
        (ADMIN_USER, admin_password),
        (API_USER, api_password),
        (HEALTHCHECK_USER, healthcheck_password),
        *(gateways or {}).items(),
    ):
        if not value:
            raise ValueError(f"no password for broker user {name}")
    clients = [
        _client(ADMIN_USER, "citykey: administers broker accounts", admin_password, ADMIN_ROLE),
        _client(API_USER, "citykey: every API instance", api_password, API_ROLE),
        _client(HEALTHCHECK_USER, "citykey: health check", healthcheck_password, HEALTHCHECK_ROLE),
    ]
    roles = [
        _role(ADMIN_ROLE, "dynamic security control topic only", admin_acls()),
        _role(API_ROLE, "commands, modes, key set out; acks, status, events in", api_acls()),
        _role(HEALTHCHECK_ROLE, "broker uptime only", healthcheck_acls()),
    ]
    for gateway_id, password in sorted((gateways or {}).items()):
        require_gateway_user(gateway_id)
        role = gateway_role(gateway_id)
        roles.append(_role(role, f"gateway {gateway_id}", gateway_acls(gateway_id)))
        clients.append(
            _client(
                gateway_id, f"gateway {gateway_id}", password, role, gateway_client_id(gateway_id)
            )
        )
    return {
        "defaultACLAccess": dict(DEFAULT_ACL_ACCESS),
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def write_new(path: Path, config: dict[str, Any]) -> bool:
    """Write ``config`` to ``path`` (mode 0600) unless the file exists; True when written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as file:
        json.dump(config, file, indent=1)
        file.write("\n")
    return True


def _gateway_option(value: str) -> tuple[str, str]:
    gateway_id, sep, variable = value.partition("=")
    if not sep or not variable:
        raise argparse.ArgumentTypeError(f"expected GATEWAY_ID=ENV_VARIABLE, got {value!r}")
    return gateway_id, variable


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m api.broker_accounts.bootstrap",
        description="Write Mosquitto's dynamic security file for citykey, unless it exists.",
    )
    parser.add_argument("path", type=Path, help="the plugin's config file to create")
    parser.add_argument(
        "--gateway",
        action="append",
        default=[],
        type=_gateway_option,
        metavar="GATEWAY_ID=ENV_VARIABLE",
        help="also create this gateway's account, password from ENV_VARIABLE (repeatable)",
    )
    args = parser.parse_args(argv)
    missing = [var for var in ENV_PASSWORDS.values() if not env.get(var)]
    missing += [var for _, var in args.gateway if not env.get(var)]
    if missing:
        print(f"missing environment variables: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        config = build_config(
            admin_password=env[ENV_PASSWORDS[ADMIN_USER]],
            api_password=env[ENV_PASSWORDS[API_USER]],
            healthcheck_password=env[ENV_PASSWORDS[HEALTHCHECK_USER]],
            gateways={gateway_id: env[var] for gateway_id, var in args.gateway},
        )
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if write_new(args.path, config):
        print(f"wrote {args.path} ({len(config['clients'])} broker users)")
    else:
        print(f"{args.path} exists: kept as it is (the broker owns it now)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
