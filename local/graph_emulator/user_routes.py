"""``GET /users/{id}``: the mailbox's user, by UPN/email or by user id; and
``GET /users/{id}/calendar``: its default calendar."""

from __future__ import annotations

from typing import TYPE_CHECKING

from local.graph_emulator.errors import GraphError
from local.graph_emulator.lookups import context_url, require_mailbox
from local.graph_emulator.odata import apply_select
from local.graph_emulator.router import GraphRequest, GraphResponse, Params, ok

if TYPE_CHECKING:
    from local.graph_emulator.emulator import GraphEmulator


async def get_user(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    mailbox = emu.state.find_mailbox(params["id"])
    if mailbox is None:
        raise GraphError(
            404,
            "Request_ResourceNotFound",
            f"Resource '{params['id']}' does not exist or one of its queried reference-property "
            "objects are not present.",
        )
    user = apply_select(mailbox.to_user_json(), request.param("$select"))
    return ok({"@odata.context": context_url(request, "users/$entity"), **user})


async def get_calendar(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    """The default calendar; its ``id`` is the ``parentFolderId`` of the events in it."""
    mailbox = require_mailbox(emu, params)
    calendar = {
        "id": mailbox.calendar_id,
        "name": "Calendar",
        "color": "auto",
        "isDefaultCalendar": True,
        "canEdit": True,
        "canShare": True,
        "canViewPrivateItems": True,
        "owner": {"name": mailbox.display_name, "address": mailbox.upn},
    }
    calendar = apply_select(calendar, request.param("$select"))
    context = context_url(request, f"users('{mailbox.upn}')/calendar/$entity")
    return ok({"@odata.context": context, **calendar})
