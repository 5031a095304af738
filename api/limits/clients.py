"""Who is the client: the peer address of the connection, or, behind a reverse proxy we were
told to trust, the address that proxy saw (X-Forwarded-For).

X-Forwarded-For is written by the client as much as by proxies, so it is only believed from a
trusted peer, and then read from the right: each trusted proxy appends the address it received
the request from, and the first address (from the right) that is not one of our proxies is the
client. Anything to its left was written by the client and is ignored.
"""

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 192.0.2.7"`` -> networks; ValueError names a bad entry."""
    networks: list[Network] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {item!r}") from None
    return tuple(networks)


def _check_networks(text: str) -> str:
    parse_networks(text)
    return text


ProxyList = Annotated[str, AfterValidator(_check_networks)]
"""A setting holding comma-separated addresses or CIDR networks, checked at start-up."""


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], proxies: Sequence[Network]
) -> str:
    """The client's address for limits. ``forwarded_for``: every X-Forwarded-For header value
    in order. Without a peer (some test transports) the key is ``unknown``."""
    if peer is None:
        return "unknown"
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage from a proxy we trust: stop at the last address we could read
        client = hop
        if not _trusted(hop, proxies):
            break
    return client


def scope_client_address(scope: Mapping[str, Any], proxies: Sequence[Network]) -> str:
    """:func:`client_address` for an ASGI HTTP scope."""
    client = scope.get("client")
    peer = client[0] if isinstance(client, (tuple, list)) and client else None
    headers = scope.get("headers") or []
    forwarded = [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]
    return client_address(peer if isinstance(peer, str) else None, forwarded, proxies)
