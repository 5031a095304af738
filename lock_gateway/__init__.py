"""citykey gateway daemon: receives unlock commands over MQTT, validates the signed token
itself, and drives the lock. Imports nothing from the API's web or database stack."""

__version__ = "0.1.0"
