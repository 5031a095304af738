"""Broker accounts of gateways: created, re-keyed and removed with the gateway itself.

``BrokerAccounts`` (base.py) is what the gateway service calls; ``DynsecAccounts`` (dynsec.py)
implements it on Mosquitto's dynamic security plugin, ``NoBrokerAccounts`` does nothing (the
demo's embedded broker, or a broker whose users the operator manages by hand). acl.py says
who may use which topic; bootstrap.py writes the plugin's first configuration file.
"""

import logging

from api.broker_accounts.base import (
    BrokerAccountConflictError,
    BrokerAccounts,
    BrokerAccountsError,
    NoBrokerAccounts,
)
from api.broker_accounts.dynsec import DynsecAccounts
from api.errors import ApiError
from api.settings import EMBEDDED_BROKER, Settings
from citykey_protocol.transport import BrokerAddress

__all__ = [
    "BrokerAccountConflictError",
    "BrokerAccounts",
    "BrokerAccountsError",
    "DynsecAccounts",
    "NoBrokerAccounts",
    "as_api_error",
    "broker_accounts_for",
]

log = logging.getLogger(__name__)


def broker_accounts_for(settings: Settings) -> BrokerAccounts:
    """Dynamic-security administration when CITYKEY_BROKER_ADMIN_URL is set, else nothing."""
    if not settings.broker_admin_url:
        if settings.mqtt_url != EMBEDDED_BROKER:
            log.warning(
                "CITYKEY_BROKER_ADMIN_URL is not set: gateway broker users are not created or "
                "removed by the API; manage them on the broker by hand"
            )
        return NoBrokerAccounts()
    return DynsecAccounts(BrokerAddress.parse(settings.broker_admin_url), settings.instance_id)


def as_api_error(exc: BrokerAccountsError) -> ApiError:
    """The HTTP answer when the broker did not apply a gateway's account change; the request
    is rolled back, so nothing changed and the caller may simply retry."""
    log.warning("gateway broker account not changed: %s", exc)  # the cause, for the operator
    if isinstance(exc, BrokerAccountConflictError):
        return ApiError(409, "broker_account_conflict", str(exc))
    return ApiError(
        503,
        "broker_unavailable",
        "the broker did not confirm the gateway's account change; nothing was changed, try again",
        headers={"Retry-After": "1"},
    )
