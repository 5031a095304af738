"""An in-process MQTT broker (amqtt) so the demo runs without installing Mosquitto.

Demo only: MQTT 3.1.1, anonymous, loopback. Production uses Mosquitto (see docs/operations.md).
"""

import logging

from amqtt.broker import Broker


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int = 1884) -> None:
        self.host = host
        self.port = port
        self._broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )

    async def start(self) -> None:
        # amqtt logs every connection at INFO; the demo's console is for people.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        await self._broker.start()

    async def stop(self) -> None:
        await self._broker.shutdown()
