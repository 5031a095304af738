"""The interface the gateway service uses to keep broker accounts in step with gateways."""

from typing import Protocol


class BrokerAccountsError(Exception):
    """The broker did not confirm the change (unreachable, refused, or timed out). The
    caller must treat the change as not made."""


class BrokerAccountConflictError(BrokerAccountsError):
    """The user name belongs to a broker account that is not this gateway's (for example the
    API's own user): it is never changed or removed on a gateway's behalf."""


class BrokerAccounts(Protocol):
    """Broker credentials of gateways. Every method is idempotent and either completes or
    raises BrokerAccountsError."""

    @property
    def managed(self) -> bool:
        """True when this implementation really changes broker accounts."""
        ...

    async def provision_gateway(self, gateway_id: str, password: str) -> None:
        """Let ``gateway_id`` log in with ``password`` (and no other password), with exactly
        its own topics. Creates the account, or replaces the password of an existing one,
        which disconnects any session opened with the previous password."""
        ...

    async def revoke_gateway(self, gateway_id: str) -> None:
        """Remove the gateway's account and disconnect it; nothing to remove is success."""
        ...


class NoBrokerAccounts:
    """No broker administration: broker users are managed by hand (password and ACL files)
    or not at all (the demo's embedded broker accepts anyone)."""

    @property
    def managed(self) -> bool:
        return False

    async def provision_gateway(self, gateway_id: str, password: str) -> None:
        """Nothing to do: the operator adds the user to the broker."""

    async def revoke_gateway(self, gateway_id: str) -> None:
        """Nothing to do: the operator removes the user from the broker."""
