"""Plain-language texts of the citizen web app, in Norwegian (bokmål) and English.

The unlock path refuses with stable error codes (policy deny reasons, relay and device
failures, limits); a citizen sees the reason in both languages, side by side, since the app
does not know which one they read. tests/web/test_i18n.py checks that every code the unlock
path can raise has a text here.
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Text:
    """One message in both languages."""

    nb: str
    en: str


REFUSALS: dict[str, Text] = {
    # Policy: the citizen may not open this door now (api/access/policy.py DenyReason).
    "no_grant": Text("Du har ikke tilgang til denne døren.", "You have no access to this door."),
    "not_yet_valid": Text(
        "Tilgangen din til denne døren har ikke startet ennå.",
        "Your access to this door has not started yet.",
    ),
    "expired": Text(
        "Tilgangen din til denne døren har utløpt.", "Your access to this door has expired."
    ),
    "outside_schedule": Text(
        "Døren er stengt for deg nå. Prøv igjen innenfor åpningstiden din.",
        "This door is closed to you now. Try again within your opening hours.",
    ),
    "holiday": Text(
        "Bygget er stengt i dag (helligdag).", "The building is closed today (public holiday)."
    ),
    "revoked": Text(
        "Tilgangen din til denne døren er trukket tilbake.",
        "Your access to this door was withdrawn.",
    ),
    "uses_exhausted": Text(
        "Du har brukt opp tilgangen din til denne døren.",
        "You have used up your access to this door.",
    ),
    "lockdown": Text(
        "Bygget er låst ned. Ingen dører kan åpnes nå.",
        "The building is in lockdown. No doors can be opened now.",
    ),
    "not_eligible": Text(
        "Du oppfyller ikke vilkårene for å åpne denne døren.",
        "You do not meet the conditions to open this door.",
    ),
    "door_disabled": Text("Denne døren er ute av drift.", "This door is out of service."),
    # The request itself.
    "door_not_found": Text("Vi finner ikke denne døren.", "We cannot find this door."),
    "duration_too_long": Text(
        "Døren kan ikke holdes åpen så lenge.", "The door cannot stay unlocked that long."
    ),
    "rate_limited": Text(
        "Du har prøvd mange ganger på kort tid. Vent litt og prøv igjen.",
        "You have tried many times in a short while. Wait a moment and try again.",
    ),
    "csrf_failed": Text(
        "Siden er utløpt. Last inn siden på nytt og prøv igjen.",
        "The page has expired. Reload the page and try again.",
    ),
    # On the way to the door.
    "broker_unavailable": Text(
        "Vi får ikke kontakt med dørene akkurat nå. Prøv igjen om litt.",
        "We cannot reach the doors right now. Try again in a moment.",
    ),
    "gateway_offline": Text(
        "Døren er uten nettforbindelse akkurat nå. Prøv igjen senere.",
        "The door is offline right now. Try again later.",
    ),
    "gateway_timeout": Text(
        "Døren svarte ikke i tide. Den kan ha åpnet seg; prøv igjen om den ikke gjorde det.",
        "The door did not answer in time. It may have opened; try again if it did not.",
    ),
    "gateway_refused": Text(
        "Døren avviste forespørselen. Prøv igjen.", "The door refused the request. Try again."
    ),
    "lock_jammed": Text(
        "Låsen sitter fast, og døren åpnet seg ikke. Feilen er meldt.",
        "The lock is jammed and the door did not open. The fault has been reported.",
    ),
    "device_error": Text(
        "Låsen meldte en feil, og døren åpnet seg ikke.",
        "The lock reported a fault and the door did not open.",
    ),
    "database_unavailable": Text(
        "Tjenesten er midlertidig utilgjengelig. Prøv igjen om litt.",
        "The service is briefly unavailable. Try again in a moment.",
    ),
}

UNKNOWN_REFUSAL = Text(
    "Døren kunne ikke åpnes. Prøv igjen.", "The door could not be opened. Try again."
)

SENDING = Text("Sender …", "Sending …")
UNLOCKED_UNTIL = Text("Låst opp til {time}", "Unlocked until {time}")
RELOCKED = Text("Låst igjen", "Locked again")


def refusal(code: str) -> Text:
    """The citizen's text for a refusal code; a generic one for a code we do not know."""
    return REFUSALS.get(code, UNKNOWN_REFUSAL)


ACTIVITY_RESULTS: dict[str, Text] = {
    "unlocked": Text("Åpnet", "Opened"),
    "timeout": Text("Ikke svar fra døren", "No answer from the door"),
    "jammed": Text("Låsen satt fast", "Lock jammed"),
    "denied": Text("Avvist av døren", "Refused by the door"),
    "broker_unavailable": Text("Ingen forbindelse", "No connection"),
    "gateway_offline": Text("Døren var frakoblet", "Door was offline"),
}


def activity_text(decision: str | None, reason: str | None, result: str | None) -> Text:
    """One line of "my activity": what happened to one unlock request."""
    if decision == "deny":
        return refusal(reason or "")
    if result is None:
        return Text("Sendt", "Sent")
    return ACTIVITY_RESULTS.get(result, Text(f"Feil ({result})", f"Failed ({result})"))
