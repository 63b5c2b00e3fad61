"""Graph failures arrive as domain errors: access denied, unknown mailbox, gone events."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.adapters.graph import GraphCalendarGateway
from shared.domain.errors import (
    GraphAccessDenied,
    GraphMailboxNotFound,
    GraphNotFound,
    GraphTransient,
)
from shared.ports import EventWrite
from tests.gateway.conftest import ALICE, BOB, EmulatorControl
from tests.gateway.test_events import START, draft

NOBODY = "nobody@contoso.com"


async def test_403_is_access_denied(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    await control.add_fault(mailbox=ALICE, status=403, code="ErrorAccessDenied")

    with pytest.raises(GraphAccessDenied):
        await gateway.check_mailbox(ALICE)
    with pytest.raises(GraphAccessDenied):
        await gateway.calendar_view(ALICE, START, START + timedelta(days=1))
    (result,) = await gateway.write_batch(
        [EventWrite(mailbox=ALICE, op="create", draft=draft("bk-1"), transaction_id="tx-1")]
    )
    assert isinstance(result.error, GraphAccessDenied)
    await gateway.check_mailbox(BOB)  # other mailboxes are unaffected


async def test_401_is_access_denied(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    await control.add_fault(mailbox=ALICE, status=401, count=1)

    with pytest.raises(GraphAccessDenied):
        await gateway.list_our_events(ALICE)


async def test_unknown_mailbox_is_not_found_and_never_passes_for_a_gone_event(
    gateway: GraphCalendarGateway,
) -> None:
    with pytest.raises(GraphNotFound):
        await gateway.check_mailbox(NOBODY)
    with pytest.raises(GraphNotFound):
        await gateway.get_event(NOBODY, "AAMkAGnope")
    with pytest.raises(GraphNotFound):
        await gateway.delete_event(NOBODY, "AAMkAGnope")
    (result,) = await gateway.write_batch(
        [EventWrite(mailbox=NOBODY, op="delete", event_id="AAMkAGnope")]
    )
    assert isinstance(result.error, GraphMailboxNotFound)


@pytest.mark.parametrize(
    "code", ["ErrorInvalidUser", "ErrorNonExistentMailbox", "MailboxNotEnabledForRESTAPI"]
)
async def test_a_mailbox_without_mailbox_is_never_an_event_already_deleted(
    gateway: GraphCalendarGateway, control: EmulatorControl, code: str
) -> None:
    """Each of Graph's 404 codes for a mailbox that is not there fails a delete: taken
    for a gone event, the event would stay with nothing pointing at it."""
    await control.add_fault(mailbox=ALICE, status=404, code=code)

    (result,) = await gateway.write_batch(
        [EventWrite(mailbox=ALICE, op="delete", event_id="AAMkAGsome")]
    )

    assert isinstance(result.error, GraphMailboxNotFound)


async def test_a_gone_event_reads_as_none_and_deletes_quietly(
    gateway: GraphCalendarGateway,
) -> None:
    assert await gateway.get_event(ALICE, "AAMkAGnope") is None
    await gateway.delete_event(ALICE, "AAMkAGnope")
    with pytest.raises(GraphNotFound):
        await gateway.update_event(ALICE, "AAMkAGnope", draft("bk-1"))


async def test_a_lasting_503_gives_up_as_transient_within_the_budget(
    gateway: GraphCalendarGateway, control: EmulatorControl
) -> None:
    await control.add_fault(mailbox=ALICE, status=503)

    with pytest.raises(GraphTransient):
        await gateway.check_mailbox(ALICE)

    assert await control.request_count("GET", "/users/{id}/events", ALICE) == 4  # max_attempts
