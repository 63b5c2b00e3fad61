"""The check of recorded answers against the OpenAPI document (tests/fixtures/contract.py)
refuses what the document does not declare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.contract import AnswerCheck

CHECK = AnswerCheck()


def answer(
    method: str,
    route: str,
    status: int,
    body: object = None,
    *,
    content_type: str | None = "application/json",
    retry_after: str | None = None,
) -> dict[str, Any]:
    return {
        "function": "f",
        "method": method,
        "route": route,
        "path": route,
        "status": status,
        "contentType": content_type if body is not None else None,
        "retryAfter": retry_after,
        "body": "" if body is None else body if isinstance(body, str) else json.dumps(body),
    }


def error(code: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": "m", "details": []}}


def test_a_declared_error_with_a_declared_code_passes() -> None:
    taken = answer("POST", "/api/bookings", 409, error("slot_unavailable"))
    assert CHECK.problem(taken) is None


@pytest.mark.parametrize(
    ("recorded", "says"),
    [
        (answer("PUT", "/api/resources/{resourceId}", 201, {}), "status not declared"),
        (answer("POST", "/api/bookings", 500), "status not declared"),
        (answer("GET", "/api/nowhere", 200, {}), "no operation"),
        (answer("POST", "/api/bookings", 409, error("mailbox_in_use")), "is not one of"),
        (answer("GET", "/api/bookings/{bookingId}", 200, {"bookingId": 1}), "required"),
        (answer("GET", "/api/bookings/{bookingId}", 200, "<html>", content_type="text/html"),
         "content type"),
        (answer("POST", "/api/bookings", 409, error("slot_unavailable"), retry_after="0"),
         "not a number of seconds"),
        (answer("GET", "/api/bookings/{bookingId}", 404, error("not_found"), retry_after="5"),
         "Retry-After sent but not declared"),
        (answer("POST", "/api/graph/notifications", 202, "{}"), "a body where"),
    ],
)  # fmt: skip
def test_an_answer_the_document_does_not_declare_is_a_problem(
    recorded: dict[str, Any], says: str
) -> None:
    problem = CHECK.problem(recorded)
    assert problem is not None
    assert says in problem


def test_only_complete_new_lines_are_read(tmp_path: Path) -> None:
    check = AnswerCheck()
    log = tmp_path / "host-1-1.jsonl"
    wrong = answer("POST", "/api/bookings", 418, error("teapot"))
    log.write_text(json.dumps(wrong) + "\n" + json.dumps(wrong)[:20])
    assert len(check.problems(tmp_path)) == 1
    assert check.problems(tmp_path) == []  # read once; the half line is still being written
    with log.open("a") as more:
        more.write(json.dumps(wrong)[20:] + "\n")
    assert len(check.problems(tmp_path)) == 1
