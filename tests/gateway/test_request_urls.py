"""A request's URL template is expanded once per request sent.

kiota expands `RequestInformation.url` afresh on every read, and a request is read three
times on its way out (the auth provider's host check, the adapter's tracing attributes and
the httpx request). std-uritemplate percent-encodes value by value, character by
character: for an event read with its `$expand` that is about 0.3 ms of CPU each time."""

from __future__ import annotations

import pytest
from stduritemplate import StdUriTemplate

from shared.adapters.graph import GraphCalendarGateway
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


async def test_a_single_event_read_expands_its_url_once(
    gateway: GraphCalendarGateway, expansions: list[str]
) -> None:
    created = await gateway.create_event(ALICE, draft("bk-url-1"), transaction_id="tx-url-1")
    expansions.clear()

    found = await gateway.read_events(ALICE, [created.event_id])

    assert found[created.event_id] is not None
    assert len(expansions) == 1


async def test_a_batched_read_expands_each_step_once_and_the_batch_url_once(
    gateway: GraphCalendarGateway, expansions: list[str]
) -> None:
    ids = [
        (await gateway.create_event(ALICE, draft(f"bk-url-{n}"), f"tx-url-{n}")).event_id
        for n in range(3)
    ]
    expansions.clear()

    found = await gateway.read_events(ALICE, ids)

    assert all(found[event_id] is not None for event_id in ids)
    assert len(expansions) == len(ids) + 1
