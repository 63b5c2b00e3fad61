"""Small pieces every Graph route needs: the addressed mailbox, the preferred time zone,
links back to the emulator, and the Preference-Applied header."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from local.graph_emulator.errors import GraphError
from local.graph_emulator.router import GraphRequest, Params
from local.graph_emulator.state import Mailbox
from local.graph_emulator.timezones import resolve_zone

if TYPE_CHECKING:
    from local.graph_emulator.emulator import GraphEmulator


def require_mailbox(emulator: GraphEmulator, params: Params) -> Mailbox:
    mailbox = emulator.state.find_mailbox(params["id"])
    if mailbox is None:
        raise GraphError(404, "ResourceNotFound", "Resource could not be discovered.")
    return mailbox


def preferred_zone(request: GraphRequest) -> str | None:
    """``Prefer: outlook.timezone="..."`` (validated), or None for UTC."""
    zone = request.prefs.get("outlook.timezone")
    if zone:
        resolve_zone(zone)
        return zone
    return None


def path_url(request: GraphRequest) -> str:
    """The request's own path as an absolute Graph URL (no query, no ``()`` on functions,
    as Graph writes its links)."""
    segments = (quote(s.removesuffix("()"), safe="@") for s in request.segments)
    return request.graph_url + "/" + "/".join(segments)


def context_url(request: GraphRequest, fragment: str) -> str:
    return f"{request.graph_url}/$metadata#{fragment}"


def preference_headers(request: GraphRequest, page_size_applied: bool = False) -> dict[str, str]:
    applied: list[str] = []
    zone = request.prefs.get("outlook.timezone")
    if zone:
        applied.append(f'outlook.timezone="{zone}"')
    if page_size_applied and "odata.maxpagesize" in request.prefs:
        applied.append(f"odata.maxpagesize={request.prefs['odata.maxpagesize']}")
    return {"Preference-Applied": ",".join(applied)} if applied else {}


def check_if_match(request: GraphRequest, change_key: str) -> None:
    """Honour ``If-Match`` with an event's etag (``W/"<changeKey>"``)."""
    expected = request.headers.get("If-Match")
    if not expected or expected.strip() == "*":
        return
    value = expected.strip()
    if value.startswith("W/"):
        value = value[2:]
    if value.strip('"') != change_key:
        raise GraphError(
            412,
            "ErrorIrresolvableConflict",
            "The send or update operation could not be performed because the change key "
            "passed in the request does not match the current change key for the item.",
        )
