"""Windowed reads: ``calendarView``, ``instances`` and ``calendarView/delta``.

Delta keeps, per token, the instance ids and changeKeys of the last finished round. A later
round compares the window's current instances with that baseline: new or changed ones are
returned in full, vanished ones as ``@removed``. The window is fixed by the first request
and baked into the tokens; an unknown or expired token answers 410 ``syncStateNotFound``.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any

from local.graph_emulator.calendar_view import find_event, instances_in_window, series_instances
from local.graph_emulator.errors import GraphError, not_found_item
from local.graph_emulator.events import render_event
from local.graph_emulator.lookups import (
    context_url,
    path_url,
    preference_headers,
    preferred_zone,
    require_mailbox,
)
from local.graph_emulator.odata import (
    apply_orderby,
    apply_select,
    link_with,
    page_window,
    parse_expand,
    parse_filter,
)
from local.graph_emulator.router import GraphRequest, GraphResponse, Params, ok
from local.graph_emulator.state import DeltaToken, Mailbox, SkipToken
from local.graph_emulator.timezones import parse_query_date_time

if TYPE_CHECKING:
    from local.graph_emulator.emulator import GraphEmulator

_UNSUPPORTED_ON_DELTA = ("$filter", "$expand", "$orderby", "$search")
# Graph forgets old sync states too; the oldest go first once this many are held.
MAX_DELTA_TOKENS = 10_000


def _window(request: GraphRequest) -> tuple[datetime, datetime]:
    start = request.param("startDateTime")
    end = request.param("endDateTime")
    if not start or not end:
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters "
            "StartDateTime and EndDateTime.",
        )
    window_start = parse_query_date_time(start, "startDateTime")
    window_end = parse_query_date_time(end, "endDateTime")
    if window_end < window_start:
        raise GraphError(
            400, "ErrorInvalidParameter", "The EndDateTime must not be before the StartDateTime."
        )
    return window_start, window_end


def _page_of_instances(
    emu: GraphEmulator,
    request: GraphRequest,
    mailbox: Mailbox,
    instances: list[Any],
) -> GraphResponse:
    zone = preferred_zone(request)
    expansion = parse_expand(request.param("$expand"))
    predicate = parse_filter(request.param("$filter"))
    if predicate is not None:
        instances = [i for i in instances if predicate(i)]
    instances = apply_orderby(instances, request.param("$orderby"))
    skip, size, _ = page_window(
        request.query, request.prefs, emu.config.default_page_size, emu.config.max_page_size
    )
    select = request.param("$select")
    body: dict[str, Any] = {
        "@odata.context": context_url(request, f"users('{mailbox.upn}')/calendarView"),
        "value": [
            apply_select(
                render_event(
                    i,
                    zone=zone,
                    expansion=expansion,
                    parent_folder=emu.config.event_parent_folder_id,
                ),
                select,
            )
            for i in instances[skip : skip + size]
        ],
    }
    if skip + size < len(instances):
        body["@odata.nextLink"] = link_with(path_url(request), request.query, skip=str(skip + size))
    return ok(body, headers=preference_headers(request, page_size_applied=True))


async def calendar_view(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    mailbox = require_mailbox(emu, params)
    window_start, window_end = _window(request)
    return _page_of_instances(
        emu, request, mailbox, instances_in_window(mailbox, window_start, window_end)
    )


async def instances(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    mailbox = require_mailbox(emu, params)
    master = find_event(mailbox, params["eventId"])
    if master is None:
        raise not_found_item()
    window_start, window_end = _window(request)
    found = (
        sorted(series_instances(master, window_start, window_end), key=lambda e: e.start)
        if master.type == "seriesMaster"
        else []
    )
    return _page_of_instances(emu, request, mailbox, found)


# Delta ---------------------------------------------------------------------------------


def _gone() -> GraphError:
    return GraphError(410, "syncStateNotFound", "The sync state generation is not found.")


def _removed(event_id: str) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.event",
        "id": event_id,
        "@removed": {"reason": "deleted"},
    }


def _delta_page(
    emu: GraphEmulator,
    request: GraphRequest,
    session: SkipToken,
) -> GraphResponse:
    """Serve the next page of a round and mint the token for what follows."""
    page = session.remaining[: session.page_size]
    rest = session.remaining[session.page_size :]
    token = secrets.token_urlsafe(24)
    base = path_url(request)
    body: dict[str, Any] = {
        "@odata.context": context_url(request, "Collection(event)"),
        "value": page,
    }
    if rest:
        emu.state.delta_tokens[token] = SkipToken(
            mailbox_key=session.mailbox_key,
            window_start=session.window_start,
            window_end=session.window_end,
            zone=session.zone,
            remaining=rest,
            page_size=session.page_size,
            next_baseline=session.next_baseline,
        )
        body["@odata.nextLink"] = f"{base}?$skiptoken={token}"
    else:
        emu.state.delta_tokens[token] = DeltaToken(
            mailbox_key=session.mailbox_key,
            window_start=session.window_start,
            window_end=session.window_end,
            zone=session.zone,
            baseline=session.next_baseline,
        )
        body["@odata.deltaLink"] = f"{base}?$deltatoken={token}"
    tokens = emu.state.delta_tokens
    while len(tokens) > MAX_DELTA_TOKENS:
        del tokens[next(iter(tokens))]
    return ok(body, headers=preference_headers(request, page_size_applied=True))


async def delta(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    mailbox = require_mailbox(emu, params)
    for option in _UNSUPPORTED_ON_DELTA:
        if request.param(option) is not None:
            raise GraphError(
                400,
                "ErrorInvalidUrlQuery",
                f"The query parameter '{option}' is not supported with delta on calendarView.",
            )
    # $select is accepted and ignored: delta always returns calendarView's full properties.
    skip_token = request.param("$skiptoken")
    delta_token = request.param("$deltatoken")
    _, page_size, _ = page_window(
        {k: v for k, v in request.query.items() if k.lower() == "$top"},
        request.prefs,
        emu.config.default_page_size,
        emu.config.max_page_size,
    )

    if skip_token is not None:
        session = emu.state.delta_tokens.get(skip_token)
        if not isinstance(session, SkipToken) or session.mailbox_key != mailbox.key:
            raise _gone()
        return _delta_page(emu, request, session)

    if delta_token is not None:
        token = emu.state.delta_tokens.get(delta_token)
        if not isinstance(token, DeltaToken) or token.mailbox_key != mailbox.key:
            raise _gone()
        window_start, window_end, zone = token.window_start, token.window_end, token.zone
        if "outlook.timezone" in request.prefs:
            zone = preferred_zone(request)
        current = instances_in_window(mailbox, window_start, window_end)
        baseline = {i.id: i.change_key for i in current}
        items = [
            render_event(i, zone=zone, parent_folder=emu.config.event_parent_folder_id)
            for i in current
            if token.baseline.get(i.id) != i.change_key
        ]
        items.extend(_removed(event_id) for event_id in token.baseline if event_id not in baseline)
    else:
        window_start, window_end = _window(request)
        zone = preferred_zone(request)
        current = instances_in_window(mailbox, window_start, window_end)
        baseline = {i.id: i.change_key for i in current}
        items = [
            render_event(i, zone=zone, parent_folder=emu.config.event_parent_folder_id)
            for i in current
        ]

    return _delta_page(
        emu,
        request,
        SkipToken(
            mailbox_key=mailbox.key,
            window_start=window_start,
            window_end=window_end,
            zone=zone,
            remaining=items,
            page_size=page_size,
            next_baseline=baseline,
        ),
    )
