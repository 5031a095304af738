"""Sending phone verification codes: a pluggable sender, one per running app.

Production will plug in an SMS gateway behind the same ``PhoneCodeSender`` protocol; until one
is configured, only development mode has a sender (which logs the code and remembers it, so
the demo and the tests can read it).
"""

import logging
import weakref
from typing import Protocol

from api.settings import Settings
from api.state import AppState

log = logging.getLogger(__name__)


class PhoneCodeSender(Protocol):
    """Delivers a one-time code to a phone number."""

    async def send(self, phone: str, code: str) -> None:
        """Deliver ``code`` to ``phone``; raise on failure (the code is then not stored)."""
        ...


class DevPhoneSender:
    """Development only: logs the code and keeps the last one per number in memory."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    async def send(self, phone: str, code: str) -> None:
        """Remember and log the code instead of sending a text message."""
        self._last[phone] = code
        log.warning("dev phone sender: verification code for %s is %s", phone, code)

    def last_code(self, phone: str) -> str | None:
        """The last code sent to ``phone`` by this sender, if any."""
        return self._last.get(phone)


def sender_for_settings(settings: Settings) -> PhoneCodeSender | None:
    """The sender these settings call for, or None when none is configured."""
    if settings.mode == "dev":
        return DevPhoneSender()
    return None


# One sender per running app, created on first use. Keyed by the app's Settings object (one per
# app; AppState itself has slots and no weakref support, and api/state.py is not ours to widen).
# The entry goes away with the Settings object, so an id is never reused for a stale sender.
_senders: dict[int, PhoneCodeSender | None] = {}


def phone_sender(state: AppState) -> PhoneCodeSender | None:
    """The app's phone code sender (None when this deployment has none)."""
    key = id(state.settings)
    if key not in _senders:
        _senders[key] = sender_for_settings(state.settings)
        weakref.finalize(state.settings, _senders.pop, key, None)
    return _senders[key]


def dev_phone_sender(state: AppState) -> DevPhoneSender:
    """The app's development sender; raise when the app runs another one (tests, demo)."""
    sender = phone_sender(state)
    if not isinstance(sender, DevPhoneSender):
        raise RuntimeError("this app does not use the development phone sender")
    return sender
