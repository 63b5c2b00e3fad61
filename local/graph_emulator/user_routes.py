"""``GET /users/{id}``: the mailbox's user, by UPN/email or by user id."""

from __future__ import annotations

from typing import TYPE_CHECKING

from local.graph_emulator.errors import GraphError
from local.graph_emulator.lookups import context_url
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
