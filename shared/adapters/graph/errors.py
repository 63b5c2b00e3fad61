"""Microsoft Graph failures, described once and translated into the domain's Graph* errors.

A failure comes from one of three places: the SDK (kiota's `APIError`, of which msgraph's
`ODataError` is a subclass), the HTTP transport (httpx), or the credential (azure-identity),
or from one inner answer of a `$batch`. All become a `GraphFailure` first, so that the
retry policy and the translation see the same facts whichever way the request went.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from azure.core.exceptions import ClientAuthenticationError
from kiota_abstractions.api_error import APIError
from kiota_abstractions.serialization import ParsableFactory
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from shared.domain.errors import (
    GraphAccessDenied,
    GraphConflict,
    GraphError,
    GraphMailboxNotFound,
    GraphNotFound,
    GraphSyncStateLost,
    GraphThrottled,
    GraphTransient,
)

logger = logging.getLogger(__name__)

# Statuses Graph asks clients to retry after a pause (Retry-After when it names one).
RETRYABLE_STATUSES = frozenset({429, 503, 504})
# Delta tokens Graph no longer knows: the caller must start over with a full sync.
_SYNC_STATE_CODES = frozenset({"syncstatenotfound", "syncstateinvalid", "resyncrequired"})
# Codes that mean "this app may not touch this mailbox" whatever the status.
_ACCESS_CODES = frozenset(
    {
        "erroraccessdenied",
        "accessdenied",
        "authorization_requestdenied",
        "invalidauthenticationtoken",
        "authenticationerror",
        "unauthorized",
    }
)

# 404 codes that mean the mailbox itself is unknown (or has no Exchange Online mailbox),
# as opposed to ErrorItemNotFound for an event that is gone.
_MAILBOX_MISSING_CODES = frozenset(
    {
        "errorinvaliduser",
        "errornonexistentmailbox",  # "The SMTP address has no mailbox associated with it."
        "resourcenotfound",
        "mailboxnotenabledforrestapi",
        "usernotfound",
    }
)

# How the SDK's adapter reads any failed answer.
ERROR_MAPPING: dict[str, type[ParsableFactory]] = {"XXX": ODataError}

# Errors this module knows how to describe; anything else is a bug and propagates.
GRAPH_CALL_ERRORS: tuple[type[BaseException], ...] = (
    APIError,
    httpx.TransportError,
    ClientAuthenticationError,
)


class GraphItemNotFound(GraphNotFound):
    """The addressed event (or other item) is gone, while its mailbox exists. Callers of
    the port see a GraphNotFound; the gateway uses the difference to make deletes
    idempotent and reads return None without hiding an unknown mailbox."""


class GraphTimeZoneRefused(GraphError):
    """Graph does not take the event's time zone name for writes (it takes Windows names
    and only a subset of IANA ones). The gateway writes such events in UTC instead and
    says so in the write's result (`refused_time_zone`)."""


@dataclass(frozen=True)
class GraphFailure:
    """What went wrong with one Graph request.

    `status` is None when no HTTP answer arrived (connection failed, timed out) or the
    credential could not get a token (`auth_failed`).
    """

    status: int | None
    code: str | None
    message: str
    retry_after_s: float | None = None
    auth_failed: bool = False

    @property
    def retryable(self) -> bool:
        """Worth sending again: throttled, briefly unavailable, or no answer at all."""
        if self.auth_failed:
            return False
        return self.status is None or self.status in RETRYABLE_STATUSES

    @property
    def may_have_applied(self) -> bool:
        """Whether the request may have been carried out all the same: no answer came, or
        a server error did (a gateway's 504 after the mailbox wrote). A 429 or another
        4xx says it was not."""
        if self.auth_failed:
            return False
        return self.status is None or self.status >= 500

    def describe(self) -> str:
        status = "no response" if self.status is None else str(self.status)
        return f"{status} {self.code or ''}".strip()


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    if not headers:
        return None
    lowered = name.lower()
    for key, value in headers.items():
        if str(key).lower() == lowered:
            if isinstance(value, list | tuple | set):
                return ", ".join(str(v) for v in value) or None
            return str(value)
    return None


def failure_from_exception(exc: BaseException) -> GraphFailure:
    """Describe an exception raised by an SDK call (one of GRAPH_CALL_ERRORS)."""
    if isinstance(exc, ODataError):
        main = exc.error
        return GraphFailure(
            status=exc.response_status_code,
            code=main.code if main else None,
            message=(main.message if main else None) or "Graph returned an error",
            retry_after_s=parse_retry_after(_header(exc.response_headers, "Retry-After")),
        )
    if isinstance(exc, APIError):
        return GraphFailure(
            status=exc.response_status_code,
            code=None,
            message=exc.message or "Graph returned an error",
            retry_after_s=parse_retry_after(_header(exc.response_headers, "Retry-After")),
        )
    if isinstance(exc, ClientAuthenticationError):
        # The message can name the tenant and client but never holds a token.
        return GraphFailure(
            status=None, code="TokenAcquisitionFailed", message=str(exc), auth_failed=True
        )
    if isinstance(exc, httpx.TransportError):
        return GraphFailure(status=None, code=type(exc).__name__, message=str(exc) or "no answer")
    raise TypeError(f"not a Graph call error: {type(exc).__name__}") from exc


def failure_from_batch_answer(
    status: int, headers: Mapping[str, Any] | None, body: Any
) -> GraphFailure:
    """Describe one failed inner answer of a `$batch` response."""
    code: str | None = None
    message = "Graph returned an error"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = str(error["code"]) if error.get("code") else None
        message = str(error.get("message") or message)
    return GraphFailure(
        status=status,
        code=code,
        message=message,
        retry_after_s=parse_retry_after(_header(headers, "Retry-After")),
    )


def _refuses_time_zone(code: str, message: str) -> bool:
    """A refused time zone: `TimeZoneNotSupportedException`, or the generic
    `ErrorPropertyValidationFailure` naming the zone (docs-contrib #19286)."""
    if "timezone" in code:
        return True
    text = message.lower()
    return code == "errorpropertyvalidationfailure" and ("time zone" in text or "timezone" in text)


def to_domain_error(failure: GraphFailure, context: str) -> GraphError:
    """The domain error for a failure; `context` names the operation and its ids for the
    message (never a token, clientState or event body)."""
    code = (failure.code or "").lower()
    text = f"{context}: Graph {failure.describe()}: {failure.message}"
    status = failure.status
    if failure.auth_failed or status in (401, 403) or code in _ACCESS_CODES:
        return GraphAccessDenied(text)
    if status == 410 or code in _SYNC_STATE_CODES:
        return GraphSyncStateLost(text)
    if status == 404:
        if code in _MAILBOX_MISSING_CODES:
            return GraphMailboxNotFound(text)
        return GraphItemNotFound(text)
    if status == 409:
        return GraphConflict(text)
    if status == 429:
        return GraphThrottled(text, retry_after_seconds=failure.retry_after_s)
    if status == 400 and _refuses_time_zone(code, failure.message):
        return GraphTimeZoneRefused(text)
    if status is None or status >= 500:
        return GraphTransient(text)
    return GraphError(text)
