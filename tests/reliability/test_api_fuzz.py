"""The HTTP API fuzzed from its own OpenAPI document (schemathesis): whatever a client
sends, no answer is a 5xx and every answer matches the document (status, content type,
body schema); requests the document forbids are refused with a 4xx.

The stack runs on this test's event loop, so the (blocking) fuzzing runs in a thread.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import CheckContext, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from functions.openapi import build_openapi
from tests.fixtures.callers import EVERY_ROLE
from tests.fixtures.stack import KEY_HEADER, Mailboxes, Stack

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 25


def no_undocumented_server_error(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """No 5xx, except a 503 the operation documents (fail closed: a resource that is not
    connected, or storage down), which schemathesis' own check would count as well."""
    status = response.status_code
    documented = str(status) in case.operation.definition.raw.get("responses", {})
    if status >= 500 and not (status == 503 and documented):
        raise AssertionError(f"server error {status}: {response.text[:500]}")
    return None


CHECKS = [
    no_undocumented_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


# aiohttp's own answer when no route matches, unlike every answer of the app (JSON).
HOST_ROUTER_404 = "404: Not Found"


@dataclass
class Report:
    requests: Counter[str] = field(default_factory=Counter)  # operation -> requests sent
    refused_by_host: Counter[str] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # operation -> first failure


def fuzz(base_url: str, known: dict[str, str], key: str) -> Report:
    """Every operation, EXAMPLES_PER_OPERATION cases each, valid and invalid ones mixed;
    path ids are sometimes those of a real resource and booking (`known`). Every request
    carries the host's function `key` (the host checks keys, as Azure does)."""
    schema = schemathesis.openapi.from_dict(build_openapi())
    # The bearer token is App Service Authentication's to check, before the app runs (the
    # app reads the principal it passes on, sent below): no cases without or with a bad one.
    schema.config.generation.update(with_security_parameters=False)
    # A body over the size limit is refused with the 413 each operation taking a body
    # documents, before its items are looked at (1,000 made-up notifications, say): a
    # rejection of invalid data too, which schemathesis' list of statuses leaves out.
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    report = Report()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # else the document itself is invalid
        fuzz_operation(result.ok(), base_url, known, key, report)
    return report


def fuzz_operation(
    operation: Any, base_url: str, known: dict[str, str], key: str, report: Report
) -> None:
    # The real ids go everywhere but to DELETE, which would disconnect the resource for
    # every operation fuzzed after it.
    ids = {
        name: value
        for name, value in known.items()
        if f"{{{name}}}" in operation.path and operation.method.upper() != "DELETE"
    }
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    raw = operation.definition.raw
    if not raw.get("parameters") and "requestBody" not in raw:
        # Nothing to get wrong but the function key, which the local host does not check
        # (Azure's does, before the app runs).
        modes = [GenerationMode.POSITIVE]
    strategy = st.one_of(
        *(operation.as_strategy(mode) for mode in modes),
        operation.as_strategy(GenerationMode.POSITIVE, path_parameters=ids),
    )

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        # Whatever headers the case made up, the key is the host's (else a 401) and the
        # principal one holding every role, as Easy Auth would pass it (else a 401 or 403).
        case.headers = {**(case.headers or {}), KEY_HEADER: key, **EVERY_ROLE}
        response = case.call(base_url=base_url, timeout=30)
        report.requests[operation.label] += 1
        if response.status_code == 404 and response.text == HOST_ROUTER_404:
            # A path with an encoded newline: the local host's router refuses it before
            # any function runs (Azure's host passes it on, to a 422); not the app's answer.
            report.refused_by_host[operation.label] += 1
            return
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, FailureGroup) as failure:
            report.failures.setdefault(
                operation.label,
                f"{case.as_curl_command()}\n  -> {response.status_code}: {failure}",
            )

    check()


async def test_no_request_gets_a_server_error_or_an_undocumented_answer(
    stack: Stack, mb: Mailboxes
) -> None:
    resource_id = await stack.connect(mb.room)
    day = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    status, booking = await stack.call(
        "POST",
        "/bookings",
        {
            "resourceIds": [resource_id],
            "start": f"{day}T09:00:00Z",
            "end": f"{day}T10:00:00Z",
            "title": "Fuzzed",
            "customer": {"name": "Ada", "email": "ada@example.com"},
        },
    )
    assert status == 201, booking
    known = {"resourceId": resource_id, "bookingId": booking["bookingId"]}

    report = await asyncio.to_thread(fuzz, stack.host_url, known, stack.keys.function)

    # Every operation of the document was exercised, most of them many times.
    assert set(report.requests) == {
        f"{method.upper()} {path}"
        for path, methods in build_openapi()["paths"].items()
        for method in methods
    }
    assert sum(report.requests.values()) >= EXAMPLES_PER_OPERATION * 8, report.requests
    assert not report.failures, "\n\n".join(f"{k}:\n{v}" for k, v in report.failures.items())
