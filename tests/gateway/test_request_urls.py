"""A request's URL template is expanded once per request sent, and not at all for an
event's read.

kiota expands `RequestInformation.url` afresh on every read, and a request is read three
times on its way out (the auth provider's host check, the adapter's tracing attributes and
the httpx request). std-uritemplate percent-encodes value by value, character by
character: for an event read with its `$expand` that is about 0.3 ms of CPU each time.
Event reads (one per notification) have their URL written by the gateway instead, which
must be exactly the template's expansion."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stduritemplate import StdUriTemplate

from shared.adapters.graph import GraphCalendarGateway
from shared.adapters.graph.gateway import _EVENT_READ_QUERY, _config
from tests.gateway.conftest import ALICE
from tests.gateway.test_events import draft


@pytest.fixture
def expansions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every URL template std-uritemplate expands while the test runs."""
    seen: list[str] = []
    expand = StdUriTemplate.expand

    def counted(template: str, substitutions: dict[str, object]) -> str:
        seen.append(template)
        return expand(template, substitutions)

    monkeypatch.setattr(StdUriTemplate, "expand", counted)
    return seen


async def test_a_single_event_read_expands_no_url_template(
    gateway: GraphCalendarGateway, expansions: list[str]
) -> None:
    created = await gateway.create_event(ALICE, draft("bk-url-1"), transaction_id="tx-url-1")
    expansions.clear()

    found = await gateway.read_events(ALICE, [created.event_id])

    assert found[created.event_id] is not None
    assert expansions == []


async def test_a_batched_read_expands_only_the_batch_url(
    gateway: GraphCalendarGateway, expansions: list[str]
) -> None:
    ids = [
        (await gateway.create_event(ALICE, draft(f"bk-url-{n}"), f"tx-url-{n}")).event_id
        for n in range(3)
    ]
    expansions.clear()

    found = await gateway.read_events(ALICE, ids)

    assert all(found[event_id] is not None for event_id in ids)
    assert len(expansions) == 1
    assert "$batch" in expansions[0]


@settings(max_examples=300, deadline=None)
@given(mailbox=st.text(min_size=1), event_id=st.text(min_size=1))
def test_an_event_reads_url_is_its_templates_expansion(
    session_gateway: GraphCalendarGateway, mailbox: str, event_id: str
) -> None:
    written = session_gateway._event_read(mailbox, event_id)

    expanded = session_gateway._event(mailbox, event_id).to_get_request_information(
        _config(_EVENT_READ_QUERY)
    )
    session_gateway._adapter.set_base_url_for_request_information(expanded)
    assert written.url == expanded.url
    assert written.http_method == expanded.http_method
    assert written.request_headers == expanded.request_headers
