"""GraphCalendarGateway: the CalendarGateway port over msgraph-sdk.

Every call runs under its mailbox's slot (at most 4 in flight per mailbox in this process)
and the retry policy (429/503/504 and lost connections, Retry-After honoured, bounded in
attempts and time), and raises only Graph* domain errors. Reads ask for UTC times and
expand our booking-id property; writes carry explicit time zones; creates carry a
transactionId, so a retried POST never duplicates an event.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

from azure.core.credentials_async import AsyncTokenCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.request_information import RequestInformation
from kiota_http.httpx_request_adapter import HttpxRequestAdapter
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.users.item.calendar.calendar_request_builder import CalendarRequestBuilder
from msgraph.generated.users.item.calendar.calendar_view.calendar_view_request_builder import (
    CalendarViewRequestBuilder as CalendarCalendarViewRequestBuilder,
)
from msgraph.generated.users.item.calendar.events.events_request_builder import (
    EventsRequestBuilder as CalendarEventsRequestBuilder,
)
from msgraph.generated.users.item.calendar.get_schedule.get_schedule_post_request_body import (
    GetSchedulePostRequestBody,
)
from msgraph.generated.users.item.calendar_view.calendar_view_request_builder import (
    CalendarViewRequestBuilder,
)
from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import (
    DeltaRequestBuilder,
)
from msgraph.generated.users.item.events.events_request_builder import EventsRequestBuilder
from msgraph.generated.users.item.events.item.event_item_request_builder import (
    EventItemRequestBuilder,
)
from msgraph.generated.users.item.events.item.instances.instances_request_builder import (
    InstancesRequestBuilder,
)
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
from msgraph.graph_service_client import GraphServiceClient

from shared.adapters.graph.batch import (
    BatchAnswer,
    BatchGatherer,
    BatchSender,
    BatchStep,
    Recheck,
)
from shared.adapters.graph.client import (
    UTC_PREFERENCE,
    build_graph_client,
    build_http_client,
    expand_url_once,
    graph_credential,
)
from shared.adapters.graph.errors import (
    ERROR_MAPPING,
    GRAPH_CALL_ERRORS,
    GraphItemNotFound,
    GraphTimeZoneRefused,
    failure_from_exception,
    to_domain_error,
)
from shared.adapters.graph.mapping import (
    EXPAND_BOOKING_ID,
    HAS_BOOKING_ID_FILTER,
    ScheduleBlock,
    booking_id_filter,
    calendar_event,
    event_from_draft,
    graph_zone_name,
    is_removed,
    parse_graph_time,
    show_as_of,
)
from shared.adapters.graph.throttle import GraphCaller, MailboxSlots, RetryPolicy
from shared.domain.calendar import (
    CalendarEvent,
    DeltaRound,
    EventDraft,
    GraphSubscription,
)
from shared.domain.errors import (
    DomainError,
    GraphError,
    GraphNotFound,
    GraphTransient,
    InvalidInput,
)
from shared.ports import EventWrite, EventWriteResult
from shared.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

SUBSCRIPTION_CHANGE_TYPES = "created,updated,deleted"
# Live tenants have refused expiries Graph documents as allowed (10,080 min, even 10,070);
# a refused one is asked again once with this many minutes.
FALLBACK_SUBSCRIPTION_MINUTES = 4230
DEFAULT_PAGE_SIZE = 100
# Events listed per booking id when telling whether one is in the calendar: ours are one
# per booking, a few more only while duplicates wait for the round to remove them.
CONFIRM_PAGE_SIZE = 25
# A booking request waits on the live look at its slot: retry a throttled view once or
# twice, briefly, then let the booking fail closed rather than hang.
LIVE_VIEW_RETRY = RetryPolicy(max_attempts=3, max_elapsed_s=10.0, max_wait_s=5.0)
# The whole live look (its $batch, retries and further pages) within this many seconds: a
# booking request waits on it, and one slow answer may otherwise take the read timeout
# (30 s) before the retry policy's budget is even looked at.
LIVE_VIEW_BUDGET_S = 10.0


@dataclass(frozen=True)
class _Page:
    """One page of a collection (Graph JSON items) and the links it ends with."""

    value: list[dict[str, Any]]
    next_link: str | None
    delta_link: str | None = None

    @classmethod
    def of(cls, answer: dict[str, Any] | None) -> _Page:
        answer = answer or {}
        items = answer.get("value")
        return cls(
            value=[item for item in items if isinstance(item, dict)]
            if isinstance(items, list)
            else [],
            next_link=answer.get("@odata.nextLink"),
            delta_link=answer.get("@odata.deltaLink"),
        )


def _utc_query_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _config(query: Any = None, *, prefer: Sequence[str] = (UTC_PREFERENCE,)) -> Any:
    """A request configuration with our Prefer values (merged with IdType by middleware)."""
    config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=query)
    for value in prefer:
        config.headers.add("Prefer", value)
    return config


_ONE_MINUTE = timedelta(minutes=1)
_EVENT_READ_QUERY = EventItemRequestBuilder.EventItemRequestBuilderGetQueryParameters(
    expand=[EXPAND_BOOKING_ID]
)
_EVENT_READ_QUERY_STRING = f"%24expand={quote(EXPAND_BOOKING_ID, safe='')}"


def _listed_ids(
    answer: BatchAnswer | GraphError, context: str, *, also: str | None = None
) -> set[str] | GraphError | None:
    """The ids (and `also`, when given) a listing step answered; None when it holds more
    pages than the one read (unsettled); an error when it failed or holds no listing."""
    if isinstance(answer, GraphError):
        return answer
    body = answer.body if isinstance(answer.body, dict) else {}
    page = body.get("value")
    if not isinstance(page, list):
        # No listing to look in: unknown, and a doubt never reads as deleted.
        return GraphError(f"{context}: Graph answered no listing")
    if body.get("@odata.nextLink"):
        return None
    listed: set[str] = set()
    for item in page:
        if isinstance(item, dict):
            for key in ("id", also):
                value = item.get(key) if key else None
                if isinstance(value, str):
                    listed.add(value)
    return listed


class GraphCalendarGateway:
    """CalendarGateway over one GraphServiceClient. Build it once per process (see
    `build_calendar_gateway`) and share it; `close()` releases the HTTP connections.

    msgraph-sdk builds and sends every request (URL templates, auth, middleware); event
    answers are read as JSON and mapped in mapping.py (see there why).
    """

    def __init__(
        self,
        client: GraphServiceClient,
        *,
        retry: RetryPolicy | None = None,
        slots: MailboxSlots | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        adapter = client.request_adapter
        if not isinstance(adapter, HttpxRequestAdapter):
            raise TypeError("GraphCalendarGateway needs msgraph-sdk's httpx request adapter")
        self._client = client
        self._adapter = adapter
        self._caller = GraphCaller(retry, slots)
        self._batch = BatchSender(adapter, self._caller)
        self._reads = BatchGatherer(self._batch)
        self._page_size = page_size
        self._closers = list(closers)
        self._calendar_ids: dict[str, str] = {}

    @classmethod
    def connect(
        cls,
        base_url: str,
        credential: AsyncTokenCredential,
        *,
        owns_credential: bool = False,
        retry: RetryPolicy | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> GraphCalendarGateway:
        """A gateway for the Graph at `base_url` (no I/O happens here)."""
        http_client = build_http_client(base_url)
        client = build_graph_client(base_url, credential, http_client=http_client)
        closers: list[Callable[[], Awaitable[None]]] = [http_client.aclose]
        if owns_credential:
            closers.append(credential.close)
        return cls(client, retry=retry, page_size=page_size, closers=closers)

    async def close(self) -> None:
        for close in self._closers:
            await close()

    # Plumbing ------------------------------------------------------------------------

    def _user(self, mailbox: str) -> UserItemRequestBuilder:
        return self._client.users.by_user_id(mailbox)

    def _event(self, mailbox: str, event_id: str) -> EventItemRequestBuilder:
        return self._user(mailbox).events.by_event_id(event_id)

    def _event_read(self, mailbox: str, event_id: str) -> RequestInformation:
        """The GET of one event with our booking id expanded, as the SDK builds it, its URL
        written here rather than expanded from the SDK's template: std-uritemplate
        percent-encodes character by character, some 0.4 ms of CPU for an event id and
        this `$expand`, on every event a notification reads. `quote` with nothing safe
        encodes exactly what a simple expansion does (every character but RFC 3986's
        unreserved ones, as UTF-8); `tests/gateway/test_request_urls.py` compares them."""
        request = self._event(mailbox, event_id).to_get_request_information(
            _config(_EVENT_READ_QUERY)
        )
        request.path_parameters = {}  # the setter clears it; it is the builder's own
        request.url = (
            f"{self._adapter.base_url}/users/{quote(mailbox, safe='')}"
            f"/events/{quote(event_id, safe='')}?{_EVENT_READ_QUERY_STRING}"
        )
        return request

    async def _call(
        self,
        send: Callable[[], Awaitable[T]],
        *,
        mailbox: str | None,
        context: str,
        idempotent: bool = True,
    ) -> T:
        return await self._caller.call(
            send, mailbox=mailbox, context=context, idempotent=idempotent
        )

    async def _send_json(self, request: RequestInformation) -> dict[str, Any] | None:
        """Send through the SDK's adapter; the answer's JSON object (None for 204)."""
        expand_url_once(self._adapter, request)
        # kiota types the result as a TypeVar bound to nothing; "bytes" gives bytes.
        raw = await self._adapter.send_primitive_async(request, "bytes", ERROR_MAPPING)  # type: ignore[func-returns-value]
        if not raw:
            return None
        try:
            document = json.loads(raw)
        except ValueError as exc:
            raise GraphTransient("Graph answered with a body that is not JSON") from exc
        if not isinstance(document, dict):
            raise GraphError("Graph answered with something other than a JSON object")
        return document

    async def _json(
        self,
        build: Callable[[], RequestInformation],
        *,
        mailbox: str | None,
        context: str,
        idempotent: bool = True,
    ) -> dict[str, Any] | None:
        """`build()` (afresh per attempt) sent under the mailbox slot and retry policy."""
        return await self._call(
            lambda: self._send_json(build()),
            mailbox=mailbox,
            context=context,
            idempotent=idempotent,
        )

    async def _all_pages(
        self,
        mailbox: str,
        first: Callable[[], RequestInformation],
        following: Callable[[str], RequestInformation],
        context: str,
        *,
        limit: int | None = None,
    ) -> _Page:
        """Every item of a paged collection, following nextLinks; the last deltaLink.
        With `limit`, no further page is read once that many items are in."""
        page = _Page.of(await self._json(first, mailbox=mailbox, context=context))
        items = list(page.value)
        while page.next_link and (limit is None or len(items) < limit):
            build = functools.partial(following, page.next_link)
            page = _Page.of(await self._json(build, mailbox=mailbox, context=context))
            items.extend(page.value)
        return _Page(value=items, next_link=None, delta_link=page.delta_link)

    # Events --------------------------------------------------------------------------

    async def check_reachable(self) -> None:
        """One light request (the app's subscriptions), without retries: raises a Graph*
        error when Graph does not answer or refuses our token. `GET /subscriptions` takes
        no OData query options (400), so none are sent."""
        request = self._client.subscriptions.to_get_request_information(_config(prefer=()))
        try:
            await self._send_json(request)
        except GRAPH_CALL_ERRORS as exc:
            raise to_domain_error(failure_from_exception(exc), "health probe") from exc

    async def check_mailbox(self, mailbox: str) -> None:
        """Raises GraphNotFound (no such mailbox) or GraphAccessDenied (not ours to read)."""
        query = EventsRequestBuilder.EventsRequestBuilderGetQueryParameters(top=1, select=["id"])
        await self._json(
            lambda: self._user(mailbox).events.to_get_request_information(_config(query)),
            mailbox=mailbox,
            context=f"check mailbox {mailbox}",
        )

    async def create_event(
        self, mailbox: str, draft: EventDraft, transaction_id: str
    ) -> CalendarEvent:
        """Create the event; repeating it with the same transaction_id returns the first
        one (Graph dedupes on transactionId), so it is safe to retry. A time zone Graph
        does not take for writes is replaced by UTC (same instants)."""
        try:
            return await self._create(mailbox, draft, transaction_id)
        except GraphTimeZoneRefused:
            _log_zone_fallback(mailbox, draft)
            return await self._create(mailbox, _in_utc(draft), transaction_id)

    async def _create(self, mailbox: str, draft: EventDraft, transaction_id: str) -> CalendarEvent:
        body = event_from_draft(draft, transaction_id=transaction_id)
        created = await self._json(
            lambda: self._user(mailbox).events.to_post_request_information(body, _config()),
            mailbox=mailbox,
            context=f"create event for booking {draft.booking_id} in {mailbox}",
        )
        if created is None:
            raise GraphError(f"create event in {mailbox}: Graph returned no event")
        return calendar_event(created, booking_id=draft.booking_id)

    async def update_event(self, mailbox: str, event_id: str, draft: EventDraft) -> CalendarEvent:
        """Rewrite our fields of the event (PATCH). Raises GraphNotFound when it is gone.
        A time zone Graph does not take for writes is replaced by UTC."""
        try:
            return await self._update(mailbox, event_id, draft)
        except GraphTimeZoneRefused:
            _log_zone_fallback(mailbox, draft)
            return await self._update(mailbox, event_id, _in_utc(draft))

    async def _update(self, mailbox: str, event_id: str, draft: EventDraft) -> CalendarEvent:
        body = event_from_draft(draft)
        updated = await self._json(
            lambda: self._event(mailbox, event_id).to_patch_request_information(body, _config()),
            mailbox=mailbox,
            context=f"update event {event_id} in {mailbox}",
        )
        if updated is None:
            raise GraphError(f"update event {event_id} in {mailbox}: Graph returned no event")
        return calendar_event(updated, booking_id=draft.booking_id)

    async def delete_event(self, mailbox: str, event_id: str) -> None:
        """Idempotent: an event already gone is not an error."""
        try:
            await self._json(
                lambda: self._event(mailbox, event_id).to_delete_request_information(
                    _config(prefer=())
                ),
                mailbox=mailbox,
                context=f"delete event {event_id} in {mailbox}",
            )
        except GraphItemNotFound:
            logger.info("event %s in %s was already gone", event_id, mailbox)

    async def get_event(self, mailbox: str, event_id: str) -> CalendarEvent | None:
        """The event with our booking id (when it has one), or None when it is gone.

        Gone includes deleted but still readable: Graph's DELETE (and an Outlook user's)
        moves an event to Deleted Items, where a GET by its immutable id still finds it.
        An event in any folder other than the mailbox's calendar counts as deleted (see
        `_confirm_in_calendar` for how that is told without a `parentFolderId`).
        """
        answer = (await self._read(mailbox, [event_id], confirm=True))[event_id]
        if isinstance(answer, GraphError):
            raise answer
        return answer

    async def get_events(
        self, mailbox: str, event_ids: Sequence[str]
    ) -> dict[str, CalendarEvent | None]:
        """Several events of one mailbox by id, as `$batch` GETs of at most 20 (each
        throttled and retried on its own); None for one that is gone, or in a folder other
        than the calendar (deleted, as for `get_event`). Raises the first
        other error a read met (a mailbox gone, access denied, Graph down)."""
        found: dict[str, CalendarEvent | None] = {}
        for event_id, answer in (await self._read(mailbox, event_ids, confirm=True)).items():
            if isinstance(answer, GraphError):
                raise answer
            found[event_id] = answer
        return found

    async def read_events(
        self, mailbox: str, event_ids: Sequence[str]
    ) -> dict[str, CalendarEvent | GraphError | None]:
        """Each event as Graph answers its GET by id, with what a read finally failed with
        as its answer instead of raised: a `$batch` answers each request on its own, so
        one event's failure does not cost the others theirs.

        An event Graph places in another folder reads as None, but one whose folder Graph
        does not name (Graph's event has no `parentFolderId`) is taken as read: one in
        Deleted Items may read as present. For notifications that is enough (a delete
        comes as its own `deleted` notification); whoever must know an event is still in
        the calendar uses `get_events`."""
        return await self._read(mailbox, event_ids, confirm=False)

    async def _read(
        self, mailbox: str, event_ids: Sequence[str], *, confirm: bool
    ) -> dict[str, CalendarEvent | GraphError | None]:
        ids = list(dict.fromkeys(event_ids))
        answers = await self._get_raw_events(mailbox, ids)
        found: dict[str, CalendarEvent | GraphError | None] = {}
        unsure: dict[str, CalendarEvent] = {}
        for event_id in ids:
            answer = answers[event_id]
            if not isinstance(answer, dict):
                found[event_id] = answer
                continue
            folder = answer.get("parentFolderId")
            if isinstance(folder, str) and folder:
                try:
                    in_calendar = folder == await self._calendar_id(mailbox)
                except GraphError as exc:
                    found[event_id] = exc
                    continue
                # In Deleted Items (or another folder): deleted.
                found[event_id] = calendar_event(answer) if in_calendar else None
                continue
            event = calendar_event(answer)
            found[event_id] = event
            if confirm and event.booking_id:
                unsure[event_id] = event
        if unsure:
            found.update(await self._confirm_in_calendar(mailbox, unsure))
        return found

    async def _get_raw_events(
        self, mailbox: str, ids: list[str]
    ) -> dict[str, dict[str, Any] | GraphError | None]:
        """Each event's JSON as its GET by id answers it (None: not found). The reads go
        through the process's gatherer: with other mailboxes' reads in one `$batch` when
        Graph is busy with earlier ones, alone as a plain GET when it is not."""
        steps = [
            BatchStep(
                mailbox=mailbox,
                request=self._event_read(mailbox, event_id),
                context=f"get event {event_id} in {mailbox}",
            )
            for event_id in ids
        ]
        raw: dict[str, dict[str, Any] | GraphError | None] = {}
        for event_id, answer in zip(
            ids, await self._reads.send(steps) if steps else [], strict=True
        ):
            if isinstance(answer, GraphItemNotFound):
                raw[event_id] = None
            elif isinstance(answer, GraphError):
                raw[event_id] = answer
            elif not isinstance(answer.body, dict):
                raw[event_id] = GraphError(
                    f"get event {event_id} in {mailbox}: Graph answered no event"
                )
            else:
                raw[event_id] = answer.body
        return raw

    async def _confirm_in_calendar(
        self, mailbox: str, events: dict[str, CalendarEvent]
    ) -> dict[str, CalendarEvent | GraphError | None]:
        """Whether events of ours that a GET by id found are in the calendar, not in
        Deleted Items. Graph's event resource names no folder, and a GET by immutable id
        finds an item wherever it is; listing `/calendar/events` is scoped to the calendar
        ("List events": "Retrieve a list of events in a calendar"), so each event is looked
        for there by its booking id (one `$batch` step per event). An event that listing
        does not hold is looked for once more, in the calendar's view of its own times
        (`_in_calendar_view`), and is gone only when neither holds it: a filter that lags a
        fresh event, or an event moved between the reads, never reads as deleted. One the
        listing could not settle (more pages than one) is kept, and an answer holding no
        listing is an error, so a doubt never deletes a booking."""
        calendar = self._user(mailbox).calendar.events
        ids = list(events)
        steps = [
            BatchStep(
                mailbox=mailbox,
                request=calendar.to_get_request_information(
                    _config(
                        CalendarEventsRequestBuilder.EventsRequestBuilderGetQueryParameters(
                            filter=booking_id_filter(events[event_id].booking_id or ""),
                            select=["id"],
                            top=CONFIRM_PAGE_SIZE,
                        ),
                        prefer=(),
                    )
                ),
                context=f"look for event {event_id} in the calendar of {mailbox}",
            )
            for event_id in ids
        ]
        confirmed: dict[str, CalendarEvent | GraphError | None] = {}
        missing: dict[str, CalendarEvent] = {}
        for event_id, answer in zip(ids, await self._batch.send(steps), strict=True):
            listed = _listed_ids(answer, f"look for event {event_id} in the calendar of {mailbox}")
            if isinstance(listed, GraphError):
                confirmed[event_id] = listed
            elif listed is None or event_id in listed:
                confirmed[event_id] = events[event_id]
            else:
                missing[event_id] = events[event_id]
        if missing:
            confirmed.update(await self._in_calendar_view(mailbox, missing))
        return confirmed

    async def _in_calendar_view(
        self, mailbox: str, events: dict[str, CalendarEvent]
    ) -> dict[str, CalendarEvent | GraphError | None]:
        """The second look for events of ours the calendar's listing did not hold: the
        calendar's view of each event's own times ("List calendarView": the occurrences,
        exceptions and single instances of the calendar in a time range), one `$batch` step
        per event. Held there (by its id, or as an occurrence of it): present; else gone."""
        view = self._user(mailbox).calendar.calendar_view
        ids = list(events)
        steps = [
            BatchStep(
                mailbox=mailbox,
                request=view.to_get_request_information(
                    _config(
                        CalendarCalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters(
                            start_date_time=_utc_query_time(events[event_id].start),
                            end_date_time=_utc_query_time(
                                max(events[event_id].end, events[event_id].start + _ONE_MINUTE)
                            ),
                            select=["id", "seriesMasterId"],
                            top=self._page_size,
                        ),
                        prefer=(),
                    )
                ),
                context=f"look for event {event_id} in the calendar view of {mailbox}",
            )
            for event_id in ids
        ]
        found: dict[str, CalendarEvent | GraphError | None] = {}
        for event_id, answer in zip(ids, await self._batch.send(steps), strict=True):
            context = f"look for event {event_id} in the calendar view of {mailbox}"
            listed = _listed_ids(answer, context, also="seriesMasterId")
            if isinstance(listed, GraphError):
                found[event_id] = listed
            elif listed is None or event_id in listed:
                found[event_id] = events[event_id]
            else:
                logger.info("event %s in %s is not in its calendar (deleted)", event_id, mailbox)
                found[event_id] = None
        return found

    async def _calendar_id(self, mailbox: str) -> str:
        """The id of the mailbox's default calendar (read once per process: it never
        changes), the `parentFolderId` of the events in it."""
        key = mailbox.lower()
        known = self._calendar_ids.get(key)
        if known is not None:
            return known
        query = CalendarRequestBuilder.CalendarRequestBuilderGetQueryParameters(select=["id"])
        answer = await self._json(
            lambda: self._user(mailbox).calendar.to_get_request_information(
                _config(query, prefer=())
            ),
            mailbox=mailbox,
            context=f"get the calendar of {mailbox}",
        )
        calendar_id = (answer or {}).get("id")
        if not isinstance(calendar_id, str) or not calendar_id:
            raise GraphError(f"get the calendar of {mailbox}: Graph returned no id")
        self._calendar_ids[key] = calendar_id
        return calendar_id

    async def _in_calendar(self, mailbox: str, item: dict[str, Any]) -> bool:
        """Whether a listed event sits in the mailbox's calendar (True when Graph does not
        say which folder holds it: the listings are of the calendar itself)."""
        folder = item.get("parentFolderId")
        if not isinstance(folder, str) or not folder:
            return True
        return folder == await self._calendar_id(mailbox)

    async def _list_events(
        self, mailbox: str, filter_: str, context: str, *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        top = self._page_size if limit is None else max(1, min(self._page_size, limit))
        query = CalendarEventsRequestBuilder.EventsRequestBuilderGetQueryParameters(
            filter=filter_, expand=[EXPAND_BOOKING_ID], top=top
        )
        # The calendar's events, not the mailbox's: only those are in the calendar.
        events = self._user(mailbox).calendar.events
        pages = await self._all_pages(
            mailbox,
            lambda: events.to_get_request_information(_config(query)),
            lambda link: events.with_url(link).to_get_request_information(_config()),
            context,
            limit=limit,
        )
        # Only what is in the calendar: an event deleted to Deleted Items is gone.
        return [item for item in pages.value if await self._in_calendar(mailbox, item)]

    async def list_our_events(
        self, mailbox: str, *, limit: int | None = None
    ) -> list[CalendarEvent]:
        """Every event (single instances and series masters) carrying our booking-id
        property, or with `limit` about that many (the pages that hold them); the
        property is checked again here, so a foreign event never passes."""
        found = await self._list_events(
            mailbox, HAS_BOOKING_ID_FILTER, f"list our events in {mailbox}", limit=limit
        )
        ours = [calendar_event(item) for item in found]
        return [event for event in ours if event.booking_id]

    async def find_events_for_booking(self, mailbox: str, booking_id: str) -> list[CalendarEvent]:
        """Our events for the booking in the calendar (one, unless a crash left a
        duplicate), as the calendar lists them: none in Deleted Items."""
        found = await self._list_events(
            mailbox, booking_id_filter(booking_id), f"find booking {booking_id} in {mailbox}"
        )
        # Graph compares extended-property values case-insensitively; ids are not.
        return [e for e in map(calendar_event, found) if e.booking_id == booking_id]

    async def calendar_view(
        self, mailbox: str, start: datetime, end: datetime
    ) -> list[CalendarEvent]:
        """Every instance in [start, end] (series expanded into occurrences and exceptions;
        events that only touch an edge included), in UTC, with our booking id when ours."""
        query = CalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters(
            start_date_time=_utc_query_time(start),
            end_date_time=_utc_query_time(end),
            expand=[EXPAND_BOOKING_ID],
            top=self._page_size,
        )
        view = self._user(mailbox).calendar_view
        pages = await self._all_pages(
            mailbox,
            lambda: view.to_get_request_information(_config(query)),
            lambda link: view.with_url(link).to_get_request_information(_config()),
            f"calendarView of {mailbox}",
        )
        return [calendar_event(item) for item in pages.value]

    async def calendar_views(
        self, mailboxes: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, list[CalendarEvent]]:
        """calendarView of [start, end] in each mailbox as `$batch` GETs (20 per POST, so
        a panel's views go in one): the live look at a slot before a booking is promised.
        Retries are short (LIVE_VIEW_RETRY) because a booking request waits on them; a
        view with more than one page follows its nextLinks one by one. Raises the first
        Graph* error a view met, naming its mailbox (`GraphError.mailbox`), and
        GraphTransient when the whole look took longer than LIVE_VIEW_BUDGET_S."""
        budget = LIVE_VIEW_BUDGET_S
        try:
            async with asyncio.timeout(budget):
                return await self._calendar_views(mailboxes, start, end)
        except TimeoutError as exc:
            raise GraphTransient(
                f"calendarView of {', '.join(mailboxes)}: Graph did not answer within {budget} s"
            ) from exc

    async def _calendar_views(
        self, mailboxes: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, list[CalendarEvent]]:
        query = CalendarViewRequestBuilder.CalendarViewRequestBuilderGetQueryParameters(
            start_date_time=_utc_query_time(start),
            end_date_time=_utc_query_time(end),
            expand=[EXPAND_BOOKING_ID],
            top=self._page_size,
        )
        wanted = list(dict.fromkeys(mailboxes))
        steps = [
            BatchStep(
                mailbox=mailbox,
                request=self._user(mailbox).calendar_view.to_get_request_information(
                    _config(query)
                ),
                context=f"calendarView of {mailbox}",
            )
            for mailbox in wanted
        ]
        answers = await self._batch.send(steps, policy=LIVE_VIEW_RETRY) if steps else []
        views: dict[str, list[CalendarEvent]] = {}
        for mailbox, answer in zip(wanted, answers, strict=True):
            if isinstance(answer, GraphError):
                answer.mailbox = mailbox
                raise answer
            page = _Page.of(answer.body if isinstance(answer.body, dict) else None)
            items = list(page.value)
            while page.next_link:
                page = _Page.of(
                    await self._json(
                        functools.partial(self._view_page, mailbox, page.next_link),
                        mailbox=mailbox,
                        context=f"calendarView of {mailbox}",
                    )
                )
                items.extend(page.value)
            views[mailbox] = [calendar_event(item) for item in items]
        return views

    def _view_page(self, mailbox: str, link: str) -> RequestInformation:
        view = self._user(mailbox).calendar_view
        return view.with_url(link).to_get_request_information(_config())

    async def series_instances(
        self, mailbox: str, master_id: str, start: datetime, end: datetime
    ) -> list[CalendarEvent]:
        """The occurrences and exceptions of one series in [start, end]
        (`/events/{id}/instances`): what a change to the series needs, instead of the
        whole calendarView. Empty when the series is gone."""
        query = InstancesRequestBuilder.InstancesRequestBuilderGetQueryParameters(
            start_date_time=_utc_query_time(start),
            end_date_time=_utc_query_time(end),
            expand=[EXPAND_BOOKING_ID],
            top=self._page_size,
        )
        instances = self._event(mailbox, master_id).instances
        try:
            pages = await self._all_pages(
                mailbox,
                lambda: instances.to_get_request_information(_config(query)),
                lambda link: instances.with_url(link).to_get_request_information(_config()),
                f"instances of series {master_id} in {mailbox}",
            )
        except GraphItemNotFound:
            return []
        return [calendar_event(item) for item in pages.value]

    async def delta(
        self, mailbox: str, start: datetime, end: datetime, delta_link: str | None
    ) -> DeltaRound:
        """One calendarView/delta round, all pages followed. Without `delta_link` it is an
        initial (full) round over [start, end]; with it, the changes since that round (the
        window is the one baked into the link). Raises GraphSyncStateLost when Graph no
        longer knows the link: the caller starts over with a full sync."""
        prefer = (UTC_PREFERENCE, f"odata.maxpagesize={self._page_size}")
        delta = self._user(mailbox).calendar_view.delta

        def following(link: str) -> RequestInformation:
            return delta.with_url(link).to_get_request_information(_config(prefer=prefer))

        def first() -> RequestInformation:
            if delta_link is not None:
                return following(delta_link)
            query = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
                start_date_time=_utc_query_time(start), end_date_time=_utc_query_time(end)
            )
            return delta.to_get_request_information(_config(query, prefer=prefer))

        kind = "incremental" if delta_link else "initial"
        pages = await self._all_pages(mailbox, first, following, f"{kind} delta of {mailbox}")
        if not pages.delta_link:
            raise GraphError(f"delta of {mailbox}: the last page carried no deltaLink")
        events: list[CalendarEvent] = []
        removed: list[str] = []
        for item in pages.value:
            if is_removed(item):
                if isinstance(item.get("id"), str):
                    removed.append(item["id"])
            else:
                events.append(calendar_event(item))
        logger.info(
            "%s delta of %s: %s changed, %s removed", kind, mailbox, len(events), len(removed)
        )
        return DeltaRound(events=events, removed_ids=removed, delta_link=pages.delta_link)

    async def get_schedule(
        self,
        mailbox: str,
        schedules: list[str],
        start: datetime,
        end: datetime,
        *,
        interval_minutes: int = 30,
    ) -> list[ScheduleBlock]:
        """Busy blocks of `schedules` (mailboxes) in [start, end], asked as `mailbox`.
        Not part of the port: free/busy for mailboxes we do not mirror."""
        utc_start, utc_end = _utc_query_time(start), _utc_query_time(end)
        body = GetSchedulePostRequestBody(
            schedules=schedules,
            start_time=DateTimeTimeZone(date_time=utc_start.rstrip("Z"), time_zone="UTC"),
            end_time=DateTimeTimeZone(date_time=utc_end.rstrip("Z"), time_zone="UTC"),
            availability_view_interval=interval_minutes,
        )
        schedule = self._user(mailbox).calendar.get_schedule
        answer = await self._json(
            lambda: schedule.to_post_request_information(body, _config()),
            mailbox=mailbox,
            context=f"getSchedule as {mailbox}",
        )
        blocks: list[ScheduleBlock] = []
        for info in _Page.of(answer).value:
            error = info.get("error")
            if error:
                # A schedule Graph could not read is unknown, never free: fail closed.
                detail = error.get("responseCode") if isinstance(error, dict) else None
                raise GraphError(
                    f"getSchedule as {mailbox}: schedule {info.get('scheduleId')} unreadable"
                    f" ({detail or 'error'})"
                )
            for item in info.get("scheduleItems") or []:
                blocks.append(
                    ScheduleBlock(
                        mailbox=str(info.get("scheduleId") or ""),
                        start=parse_graph_time(item.get("start"), "start"),
                        end=parse_graph_time(item.get("end"), "end"),
                        show_as=show_as_of(item.get("status")),
                        subject=None if item.get("isPrivate") else item.get("subject"),
                    )
                )
        return blocks

    # Batches -------------------------------------------------------------------------

    async def write_batch(self, writes: list[EventWrite]) -> list[EventWriteResult]:
        """Many writes, possibly across mailboxes, as `$batch` requests of at most 20.

        Results are in the order of `writes`; a failed write carries its domain error
        (a delete of an event already gone counts as done). Inner 429/503/504 answers are
        sent again after their Retry-After, within the retry policy. Writes whose time
        zone Graph refuses are sent once more in UTC (the same instants, so the time stays
        blocked), their results naming the refused zone (`refused_time_zone`) for the
        caller to show: never a silent fallback.
        """
        results = await self._write_batch_once(writes)
        refused = [
            index
            for index, (write, result) in enumerate(zip(writes, results, strict=True))
            if isinstance(result.error, GraphTimeZoneRefused) and write.draft is not None
        ]
        if refused:
            retry = [writes[index] for index in refused]
            for write in retry:
                if write.draft is not None:
                    _log_zone_fallback(write.mailbox, write.draft)
            in_utc = [
                replace(write, draft=_in_utc(write.draft)) if write.draft else write
                for write in retry
            ]
            again = await self._write_batch_once(in_utc)
            for index, write, result in zip(refused, retry, again, strict=True):
                draft = write.draft
                sent = graph_zone_name(draft.time_zone, draft.start, draft.end) if draft else None
                results[index] = replace(result, refused_time_zone=sent)
        return results

    async def _write_batch_once(self, writes: list[EventWrite]) -> list[EventWriteResult]:
        steps: list[BatchStep | None] = []
        prepared: list[EventWriteResult | None] = []
        for write in writes:
            try:
                steps.append(self._batch_step(write))
                prepared.append(None)
            except DomainError as error:
                steps.append(None)
                prepared.append(EventWriteResult(error=error))
        to_send = [step for step in steps if step is not None]
        answers = iter(await self._batch.send(to_send) if to_send else [])
        results: list[EventWriteResult] = []
        for write, step, early in zip(writes, steps, prepared, strict=True):
            if step is None:
                results.append(early or EventWriteResult(error=GraphError("not sent")))
                continue
            results.append(_write_result(write, next(answers)))
        return results

    def _batch_step(self, write: EventWrite) -> BatchStep:
        """The inner request for one write. Raises InvalidInput for a malformed write."""
        request: RequestInformation
        if write.op == "create":
            if write.draft is None or not write.transaction_id:
                raise _invalid_write(write, "a create needs a draft and a transaction_id")
            body = event_from_draft(write.draft, transaction_id=write.transaction_id)
            request = self._user(write.mailbox).events.to_post_request_information(body, _config())
            context = f"create event for booking {write.draft.booking_id} in {write.mailbox}"
        elif write.op == "update":
            if write.draft is None or not write.event_id:
                raise _invalid_write(write, "an update needs an event_id and a draft")
            request = self._event(write.mailbox, write.event_id).to_patch_request_information(
                event_from_draft(write.draft), _config()
            )
            context = f"update event {write.event_id} in {write.mailbox}"
            read = BatchStep(
                mailbox=write.mailbox,
                request=self._event_read(write.mailbox, write.event_id),
                context=f"read back event {write.event_id} in {write.mailbox}",
            )
            return BatchStep(
                mailbox=write.mailbox,
                request=request,
                context=context,
                recheck=Recheck(read, functools.partial(_update_still_to_send, write.change_key)),
            )
        elif write.op == "delete":
            if not write.event_id:
                raise _invalid_write(write, "a delete needs an event_id")
            request = self._event(write.mailbox, write.event_id).to_delete_request_information(
                _config(prefer=())
            )
            context = f"delete event {write.event_id} in {write.mailbox}"
        else:
            raise _invalid_write(write, f"unknown op {write.op!r}")
        return BatchStep(mailbox=write.mailbox, request=request, context=context)

    # Subscriptions -------------------------------------------------------------------

    async def create_subscription(
        self,
        mailbox: str,
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        expires_at: datetime,
    ) -> GraphSubscription:
        """Subscribe to created/updated/deleted events of the mailbox. An expiry Graph
        refuses as too far is asked again once, clamped to 4,230 minutes from now.
        Raises GraphConflict (409) when the app already has one on the mailbox."""

        async def post(expiry: datetime) -> GraphSubscription:
            body = Subscription(
                change_type=SUBSCRIPTION_CHANGE_TYPES,
                notification_url=notification_url,
                lifecycle_notification_url=lifecycle_url,
                resource=f"/users/{mailbox}/events",
                expiration_date_time=expiry,
                client_state=client_state,
            )
            created = await self._call(
                lambda: self._client.subscriptions.post(body, _config(prefer=())),
                mailbox=mailbox,
                context=f"subscribe to {mailbox}",
                # No answer may still mean subscribed: a blind repeat could make two.
                idempotent=False,
            )
            return _subscription(created, expiry, f"subscribe to {mailbox}")

        return await _with_clamped_expiry(post, expires_at, f"subscription for {mailbox}")

    async def renew_subscription(
        self, subscription_id: str, expires_at: datetime
    ) -> GraphSubscription:
        """Move the expiry (PATCH); clamped once like create. Raises GraphNotFound when
        the subscription is gone (recreate it)."""
        item = self._client.subscriptions.by_subscription_id(subscription_id)

        async def patch(expiry: datetime) -> GraphSubscription:
            renewed = await self._call(
                lambda: item.patch(Subscription(expiration_date_time=expiry), _config(prefer=())),
                mailbox=None,
                context=f"renew subscription {subscription_id}",
            )
            return _subscription(renewed, expiry, f"renew subscription {subscription_id}")

        return await _with_clamped_expiry(patch, expires_at, f"subscription {subscription_id}")

    async def reauthorize_subscription(self, subscription_id: str) -> None:
        """Answer a `reauthorizationRequired` lifecycle event."""
        item = self._client.subscriptions.by_subscription_id(subscription_id)
        await self._call(
            lambda: item.reauthorize.post(_config(prefer=())),
            mailbox=None,
            context=f"reauthorize subscription {subscription_id}",
        )

    async def list_subscriptions(self) -> list[GraphSubscription]:
        """The app's subscriptions, all pages. Sent without query options (Graph refuses
        them on this route); Graph never returns a clientState here, so none is read."""
        subscriptions = self._client.subscriptions

        def build(link: str | None) -> RequestInformation:
            builder = subscriptions.with_url(link) if link else subscriptions
            return builder.to_get_request_information(_config(prefer=()))

        found: list[GraphSubscription] = []
        link: str | None = None
        while True:
            answer = await self._json(
                functools.partial(build, link), mailbox=None, context="list subscriptions"
            )
            page = _Page.of(answer)
            found += [s for s in map(_listed_subscription, page.value) if s is not None]
            if not page.next_link:
                return found
            link = page.next_link

    async def delete_subscription(self, subscription_id: str) -> None:
        """Idempotent: a subscription already gone is not an error."""
        item = self._client.subscriptions.by_subscription_id(subscription_id)
        try:
            await self._call(
                lambda: item.delete(_config(prefer=())),
                mailbox=None,
                context=f"delete subscription {subscription_id}",
            )
        except GraphNotFound:
            logger.info("subscription %s was already gone", subscription_id)


def build_calendar_gateway(
    settings: Settings,
    managed_identity: AsyncTokenCredential | None = None,
    *,
    retry: RetryPolicy | None = None,
) -> GraphCalendarGateway:
    """The process's gateway from settings: GRAPH_BASE_URL, and GRAPH_AUTH_MODE choosing
    the credential (managed identity: `managed_identity`, the process's shared one, when
    given; client secret; or a static token for the emulator). No I/O happens here."""
    base_url = str(settings.graph_base_url).rstrip("/")
    credential, owned = graph_credential(settings, managed_identity)
    logger.info("graph gateway on %s (auth: %s)", base_url, settings.graph_auth_mode.value)
    return GraphCalendarGateway.connect(base_url, credential, owns_credential=owned, retry=retry)


# Helpers ---------------------------------------------------------------------------------


def _in_utc(draft: EventDraft) -> EventDraft:
    return draft.model_copy(update={"time_zone": "UTC"})


def _log_zone_fallback(mailbox: str, draft: EventDraft) -> None:
    logger.warning(
        "Graph refused time zone %s for booking %s in %s; writing it in UTC",
        draft.time_zone,
        draft.booking_id,
        mailbox,
    )


def _invalid_write(write: EventWrite, reason: str) -> DomainError:
    return InvalidInput(f"{write.op} in {write.mailbox}: {reason}")


def _update_still_to_send(change_key: str | None, read: BatchAnswer) -> bool:
    """Whether an update whose answer may have been lost is still to be sent, from the
    event as read since: yes while it shows the changeKey it had before (the update did
    not land, and nobody changed it), or when that changeKey is not known. Otherwise it
    changed since, by the update or by someone else: the read stands as the update's
    answer, and the caller, comparing it with what it wrote, sees either its own write or
    an Outlook edit for the resource's policy, never one undone unseen. (The times alone
    cannot tell: a cancel that prefixes the subject leaves them as they were.)"""
    body = read.body if isinstance(read.body, dict) else {}
    return change_key is None or body.get("changeKey") == change_key


def _write_result(write: EventWrite, answer: BatchAnswer | GraphError) -> EventWriteResult:
    if isinstance(answer, GraphError):
        if write.op == "delete" and isinstance(answer, GraphItemNotFound):
            return EventWriteResult()
        return EventWriteResult(error=answer)
    if write.op == "delete":
        return EventWriteResult()
    booking_id = write.draft.booking_id if write.draft else None
    if not isinstance(answer.body, dict):
        return EventWriteResult(error=GraphError(f"{write.op}: Graph answered without an event"))
    try:
        return EventWriteResult(
            event=calendar_event(answer.body, booking_id=booking_id),
            earlier_attempt_unanswered=answer.after_unsure_attempt,
        )
    except GraphError as error:
        return EventWriteResult(error=error)


def _listed_subscription(item: dict[str, Any]) -> GraphSubscription | None:
    subscription_id = item.get("id")
    raw_expiry = item.get("expirationDateTime")
    if not isinstance(subscription_id, str) or not isinstance(raw_expiry, str):
        return None
    expires = datetime.fromisoformat(raw_expiry.replace("Z", "+00:00"))
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    resource = item.get("resource")
    return GraphSubscription(
        subscription_id=subscription_id,
        expires_at=expires,
        resource=resource if isinstance(resource, str) else None,
    )


def _subscription(answer: Subscription | None, asked: datetime, context: str) -> GraphSubscription:
    if answer is None or not answer.id:
        raise GraphError(f"{context}: Graph returned no subscription")
    expires = answer.expiration_date_time or asked
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return GraphSubscription(subscription_id=answer.id, expires_at=expires)


async def _with_clamped_expiry(
    send: Callable[[datetime], Awaitable[GraphSubscription]], expires_at: datetime, what: str
) -> GraphSubscription:
    """`send(expires_at)`; when Graph refuses that expiry (400 naming the expiration) and a
    shorter one exists, `send` once more with now + FALLBACK_SUBSCRIPTION_MINUTES."""
    try:
        return await send(expires_at)
    except GraphError as error:
        shorter = datetime.now(UTC) + timedelta(minutes=FALLBACK_SUBSCRIPTION_MINUTES)
        if not _refused_expiry(error) or shorter >= expires_at:
            raise
        logger.warning(
            "%s: Graph refused expiry %s; asking for %s",
            what,
            expires_at.isoformat(),
            shorter.isoformat(),
        )
        return await send(shorter)


def _refused_expiry(error: GraphError) -> bool:
    cause = error.__cause__
    if not isinstance(cause, GRAPH_CALL_ERRORS):
        return False
    failure = failure_from_exception(cause)
    return failure.status == 400 and "expir" in failure.message.lower()
