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


LATE_ANSWER_CONFTEST = """
import json

import pytest

from tests.fixtures.contract import response_log_folder

pytest_plugins = ["tests.fixtures.contract"]


@pytest.fixture(scope="session", autouse=True)
def an_answer_after_the_last_test():
    yield
    if {planted}:  # as a notification's answer may come after the last test
        late = dict(method="GET", route="/nope", path="/api/nope", status=200,
                    contentType=None, retryAfter=None, body="")
        with (response_log_folder() / "late.jsonl").open("a") as log:
            log.write(json.dumps(late) + "\\n")
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist"])
@pytest.mark.parametrize("planted", [True, False], ids=["late answer", "none"])
def test_an_answer_after_the_last_test_fails_the_run_under_xdist_too(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: list[str], planted: bool
) -> None:
    """Under pytest-xdist the late check runs in each worker, which hands its findings to
    the controller: lost there, a bad answer after the last test would pass unseen."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    pytester.makeconftest(LATE_ANSWER_CONFTEST.format(planted=planted))
    pytester.makepyfile("def test_one():\n    pass\n\ndef test_two():\n    pass\n")

    result = pytester.runpytest_subprocess(*workers, "-p", "no:randomly")

    if planted:
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(
            ["*answers after the last test*", "*GET /api/nope -> 200: no operation GET /nope*"]
        )
    else:
        assert result.ret == pytest.ExitCode.OK
        result.stdout.no_fnmatch_line("*answers after the last test*")
    result.assert_outcomes(passed=2)
