"""The OpenAPI document says what the handlers answer: statuses, error codes per
operation, Retry-After, examples that the body models accept, tags."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from functions.http import domain_error_response
from functions.openapi import BODYLESS_TOO, OPERATIONS, Operation, build_openapi, error_codes
from shared.domain.errors import (
    CalendarUnavailable,
    ConcurrencyConflict,
    DomainError,
    GraphThrottled,
    SlotUnavailable,
    StorageUnavailable,
)


def operation(spec: dict[str, Any], op: Operation) -> dict[str, Any]:
    found: dict[str, Any] = spec["paths"][f"/api/{op.route}"][op.method.lower()]
    return found


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.operation_id)
def test_each_error_status_declares_exactly_its_codes(op: Operation) -> None:
    spec = build_openapi()
    responses = operation(spec, op)["responses"]
    for status, kinds in error_codes(op).items():
        ref = responses[str(status)]["content"]["application/json"]["schema"]["$ref"]
        body = spec["components"]["schemas"][ref.rsplit("/", 1)[1] + "Body"]
        assert body["properties"]["code"]["enum"] == list(dict.fromkeys(k.code for k in kinds))


@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.body], ids=lambda op: op.operation_id)
def test_each_request_body_has_an_example_its_model_accepts(op: Operation) -> None:
    assert op.body is not None
    assert op.example is not None
    op.body.model_validate(op.example)
    content = operation(build_openapi(), op)["requestBody"]["content"]["application/json"]
    assert content["example"] == op.example


def test_a_connect_answers_202_and_an_update_200_both_with_the_resource() -> None:
    put = operation(build_openapi(), next(op for op in OPERATIONS if op.method == "PUT"))
    ok = {status for status in put["responses"] if status.startswith("2")}
    assert ok == {"200", "202"}
    for status in ok:
        schema = put["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ResourceView"}


def test_create_declares_the_idempotency_key_and_its_answers() -> None:
    create = next(op for op in OPERATIONS if op.operation_id == "createBooking")
    declared = operation(build_openapi(), create)
    (header,) = [p for p in declared["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key"
    assert not header.get("required")
    codes = {status: [k.code for k in kinds] for status, kinds in error_codes(create).items()}
    assert "concurrency_conflict" in codes[409]
    assert "idempotency_key_reused" in codes[422]
    assert "Retry-After" in declared["responses"]["409"]["headers"]


def test_frontend_operations_are_tagged_apart_from_administration() -> None:
    tags = {op.operation_id: op.tag for op in OPERATIONS}
    assert {name for name, tag in tags.items() if tag == "frontend"} == {
        "createBooking",
        "listBookings",
        "getBooking",
        "cancelBooking",
        "rescheduleBooking",
        "getAvailability",
    }
    assert tags["putResource"] == tags["deleteResource"] == "administration"


def test_the_host_answers_are_declared_without_a_body() -> None:
    spec = build_openapi()
    for op in OPERATIONS:
        responses = operation(spec, op)["responses"]
        assert "content" not in responses["429"]
        assert ("401" in responses) == (op.auth != "anonymous" or bool(op.roles))
        if op.roles:  # the app's 401 has a body, Easy Auth's and the host's none
            assert responses["401"][BODYLESS_TOO] is True
            assert "content" in responses["401"]
        elif "401" in responses:
            assert "content" not in responses["401"]


@pytest.mark.parametrize(
    ("error", "retry_after"),
    [
        (ConcurrencyConflict("x"), "1"),
        (StorageUnavailable("x"), "5"),
        (GraphThrottled("x", retry_after_seconds=7.2), "8"),
        (GraphThrottled("x", retry_after_seconds=86400), "120"),
        (SlotUnavailable("x"), None),
        (CalendarUnavailable("x"), None),
    ],
)
def test_retry_after_is_sent_with_errors_that_pass_by_waiting(
    error: DomainError, retry_after: str | None
) -> None:
    response = domain_error_response(error)
    assert response.headers.get("Retry-After") == retry_after


def test_a_storage_failure_is_answered_without_naming_tables_or_keys(
    caplog: pytest.LogCaptureFixture,
) -> None:
    error = StorageUnavailable("storage failed on idempotency 78470e/request: ServiceRequestError")
    response = domain_error_response(error)
    body = json.loads(response.get_body())
    assert (response.status_code, body["error"]["code"]) == (503, "storage_unavailable")
    assert "idempotency" not in body["error"]["message"]
    assert "78470e" in caplog.text  # the operator still sees which


def test_the_readme_lists_every_error_code_with_its_status() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## For booking frontends", 1)[1].split("\n## ", 1)[0]
    listed = {
        (code, int(status))
        for codes, status in re.findall(r"^\| (`[a-z_`, ]+`) \| (\d{3})", section, re.MULTILINE)
        for code in re.findall(r"`([a-z_]+)`", codes)
    }
    declared = {
        (kind.code, status)
        for op in OPERATIONS
        for status, kinds in error_codes(op).items()
        for kind in kinds
        if not (kind.code == "invalid_input" and status == 400)  # the webhooks' own 400
    }
    assert listed == declared


def test_every_reference_in_the_document_resolves_in_it() -> None:
    """A model's own `#/$defs/...` copied into a parameter points nowhere in the
    document; generators skip such an operation (the sync log's `outcome` once)."""
    spec = build_openapi()
    refs: list[str] = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for item in node:
                collect(item)

    collect(spec)
    assert refs, "the document uses references"
    for ref in refs:
        target: Any = spec
        assert ref.startswith("#/"), ref
        for part in ref[2:].split("/"):
            assert isinstance(target, dict), ref
            assert part in target, ref
            target = target[part]
