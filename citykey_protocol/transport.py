"""How every citykey component connects to the broker.

MQTT 3.1.1 (the embedded demo broker speaks nothing newer), TCP_NODELAY on the client socket
(with Nagle's algorithm a QoS 1 round trip took 44-88 ms on loopback instead of 0.5 ms), and
credentials from the URL: ``mqtt://user:password@host:port`` or ``mqtts://`` for TLS.
"""

import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """A parsed broker URL."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> "BrokerAddress":
        """Parse ``mqtt[s]://[user[:password]@]host[:port]``; raise ValueError otherwise."""
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS:
            raise ValueError(f"broker URL must start with mqtt:// or mqtts://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"broker URL has no host: {url!r}")
        return cls(
            host=parts.hostname,
            port=parts.port or DEFAULT_PORTS[parts.scheme],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "mqtts",
        )

    @property
    def anonymous(self) -> bool:
        return self.username is None

    def redacted(self) -> str:
        """The URL without its password, for logs."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"

    def client(
        self,
        identifier: str,
        *,
        will: aiomqtt.Will | None = None,
        keepalive: int = 30,
        max_queued_incoming: int | None = None,
    ) -> aiomqtt.Client:
        """A configured, not yet connected, aiomqtt client."""
        extra: dict[str, Any] = {}
        if self.tls:
            extra["tls_context"] = ssl.create_default_context()
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier,
            username=self.username,
            password=self.password,
            protocol=aiomqtt.ProtocolVersion.V311,
            will=will,
            clean_session=True,
            keepalive=keepalive,
            timeout=5.0,
            max_queued_incoming_messages=max_queued_incoming,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            **extra,
        )
