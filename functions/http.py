"""HTTP plumbing shared by the HTTP-triggered functions: JSON in, JSON or errors out."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import azure.functions as func
from pydantic import BaseModel, ValidationError

from shared.domain.callers import Caller, ClientPrincipal, Role
from shared.domain.errors import (
    AlreadyExists,
    CalendarUnavailable,
    ConcurrencyConflict,
    DomainError,
    Forbidden,
    GraphError,
    GraphThrottled,
    IdempotencyKeyReused,
    InvalidInput,
    LiveCalendarUnreadable,
    MailboxInUse,
    NotFound,
    SlotUnavailable,
    StorageUnavailable,
    TransactionTooLarge,
    Unauthorized,
)
from shared.services.push import PushIncomplete

logger = logging.getLogger(__name__)

JSON = "application/json"
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class MalformedJson(InvalidInput):
    code = "malformed_json"


class BodyTooLarge(InvalidInput):
    code = "body_too_large"


class UnsupportedMediaType(InvalidInput):
    code = "unsupported_media_type"


# Domain error → HTTP status; the first matching class wins, so specific ones come first.
# Anything not listed is a 500 (and a bug to look at).
STATUS_BY_ERROR: dict[type[DomainError], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    MalformedJson: 400,
    BodyTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidInput: 422,
    NotFound: 404,
    SlotUnavailable: 409,
    MailboxInUse: 409,
    AlreadyExists: 409,
    ConcurrencyConflict: 409,
    IdempotencyKeyReused: 422,
    # A request whose day rows break Azure's transaction rules (input the rules above
    # should have refused already): the request, not the service, has to change.
    TransactionTooLarge: 422,
    CalendarUnavailable: 503,
    StorageUnavailable: 503,
    # Graph could not be asked (throttled, down, access lost): retry later.
    GraphError: 503,
    PushIncomplete: 503,
}


# Errors a client should simply send again, and after how many seconds (Retry-After on
# the answer). Not the others: calendar_unavailable lasts as long as the resource's
# connection is not healthy (GET /api/resources/{id} says why), and a 409 for a taken
# slot or a mailbox in use does not change by waiting.
RETRY_AFTER_BY_ERROR: dict[type[DomainError], int] = {
    ConcurrencyConflict: 1,
    # The live look at a slot met a passing Graph failure (a calendar_unavailable that
    # passes, unlike the resource-health one).
    LiveCalendarUnreadable: 5,
    StorageUnavailable: 5,
    GraphError: 5,
    PushIncomplete: 5,
}
# Graph's own Retry-After is passed on, within these bounds.
MAX_RETRY_AFTER_SECONDS = 120


def status_for(kind: type[DomainError]) -> int:
    """The HTTP status of a domain error class (500 when unmapped)."""
    return next((code for error, code in STATUS_BY_ERROR.items() if issubclass(kind, error)), 500)


def retry_after_for(kind: type[DomainError]) -> int | None:
    """Seconds of the Retry-After sent with an error of this class, or None (not sent)."""
    return next(
        (seconds for error, seconds in RETRY_AFTER_BY_ERROR.items() if issubclass(kind, error)),
        None,
    )


def json_response(body: BaseModel | dict[str, Any], status: int = 200) -> func.HttpResponse:
    text = body.model_dump_json() if isinstance(body, BaseModel) else json.dumps(body)
    return func.HttpResponse(text, status_code=status, mimetype=JSON, charset="utf-8")


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    *,
    retry_after: int | None = None,
) -> func.HttpResponse:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return func.HttpResponse(
        json.dumps(body), status_code=status, headers=headers, mimetype=JSON, charset="utf-8"
    )


def domain_error_response(error: DomainError) -> func.HttpResponse:
    status = status_for(type(error))
    if status == 500:
        logger.error("unmapped domain error %s: %s", type(error).__name__, error.message)
    message = error.message
    if isinstance(error, StorageUnavailable):
        # Its message names tables and keys: for the log, not for the caller.
        logger.warning("storage unavailable: %s", error.message)
        message = "storage is unavailable; retry later"
    retry_after = retry_after_for(type(error))
    graphs_wait = (
        error.retry_after_seconds
        if isinstance(error, GraphThrottled | LiveCalendarUnreadable)
        else None
    )
    if retry_after is not None and graphs_wait:
        retry_after = min(MAX_RETRY_AFTER_SECONDS, max(1, math.ceil(graphs_wait)))
    return error_response(status, error.code, message, list(error.details), retry_after=retry_after)


MAX_BODY_BYTES = 64 * 1024

ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_body(
    req: func.HttpRequest, model: type[ModelT], *, max_bytes: int = MAX_BODY_BYTES
) -> ModelT:
    """The JSON body as `model`; InvalidInput (naming the fields) when it is not."""
    return validate(model, parse_json_object(req, max_bytes=max_bytes))


def parse_json_object(req: func.HttpRequest, *, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object. Raises BodyTooLarge beyond `max_bytes` (checked here,
    in the app, so it holds whatever the host in front allows: Azure's is 100 MB) and
    MalformedJson for anything else than one JSON object in UTF-8, UnsupportedMediaType for a
    body declared as something else than JSON (no Content-Type is read as JSON)."""
    declared = req.headers.get("Content-Type")
    if declared is not None and not _is_json(declared):
        raise UnsupportedMediaType(
            f"the body must be application/json, not {declared.split(';')[0].strip()[:100]}",
            details=[{"field": "Content-Type", "message": "not application/json"}],
        )
    body = req.get_body()
    if len(body) > max_bytes:
        raise BodyTooLarge(f"the body may hold at most {max_bytes} bytes")
    try:
        # UTF-8 only, no BOM (RFC 8259 §8.1); json.loads of bytes would also take
        # UTF-16 and UTF-32, which no client of ours is told it may send.
        data = json.loads(body.decode("utf-8") if body else "null")
    except ValueError as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from exc
    except RecursionError:
        # json's C scanner recurses per nesting level: 60 KB of `[` exhaust the stack.
        raise MalformedJson("the body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise MalformedJson("the body must be a JSON object")
    return data


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == JSON or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def parse_query(req: func.HttpRequest, model: type[ModelT], names: dict[str, str]) -> ModelT:
    """Query parameters (`names`: query name → field alias) as `model`."""
    data = {alias: req.params[name] for name, alias in names.items() if name in req.params}
    return validate(model, data)


def validate(model: type[ModelT], data: object) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc) from exc


def invalid_input(error: ValidationError) -> InvalidInput:
    """InvalidInput naming every offending field (camelCase paths, as the API spells them)."""
    details = [
        {
            "field": ".".join(str(part) for part in item["loc"]) or "body",
            "message": item["msg"],
        }
        for item in error.errors(include_url=False, include_input=False)
    ]
    fields = ", ".join(sorted({detail["field"] for detail in details}))
    return InvalidInput(f"invalid value for: {fields}", details=details)


def route_id(req: func.HttpRequest, name: str) -> str:
    """A `{name}` route parameter, checked to be a well-formed id."""
    value = str(req.route_params.get(name, ""))
    # fullmatch: `$` in ID_PATTERN also matches before a trailing newline.
    if not ID_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"{name} must be 1-64 letters, digits, '.', '_' or '-'",
            details=[{"field": name, "message": "not a valid id"}],
        )
    return value


async def respond(call: Callable[[], Awaitable[func.HttpResponse]]) -> func.HttpResponse:
    """Run a handler, turning domain errors into their statuses."""
    try:
        return await call()
    except DomainError as error:
        return domain_error_response(error)


# --- The caller ---------------------------------------------------------------------------
# App Service Authentication (Easy Auth) sets these on every request it lets through and
# removes any a client sent (configure-authentication-user-identities); the local Functions
# host does the same with --local-caller.
PRINCIPAL_HEADER = "X-MS-CLIENT-PRINCIPAL"
PRINCIPAL_ID_HEADER = "X-MS-CLIENT-PRINCIPAL-ID"
# A principal is a few KB of claims; far more is not one.
MAX_PRINCIPAL_CHARS = 64 * 1024

Handler = Callable[[func.HttpRequest], Awaitable[func.HttpResponse]]

# Every HTTP function's name → the roles (any one) it takes; empty: anonymous on purpose.
# Filled by `requires` and `anonymous`; a test fails for a route missing here.
ROUTE_ROLES: dict[str, frozenset[Role]] = {}


def caller_of(req: func.HttpRequest) -> Caller:
    """The caller the platform authenticated. Raises Unauthorized when there is no
    principal header or it is not one (malformed base64 or JSON, wrong shape)."""
    encoded = (req.headers.get(PRINCIPAL_HEADER) or "").strip()
    if not encoded:
        raise Unauthorized(
            "no authenticated caller: sign in, or send a Microsoft Entra access token for "
            "this API (App Service Authentication passes the caller on)"
        )
    if len(encoded) > MAX_PRINCIPAL_CHARS:
        raise Unauthorized(f"the {PRINCIPAL_HEADER} header is not a client principal")
    try:
        principal = ClientPrincipal.model_validate_json(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as exc:  # ValidationError is a ValueError
        raise Unauthorized(f"the {PRINCIPAL_HEADER} header is not a client principal") from exc
    return Caller.from_principal(principal, principal_id=req.headers.get(PRINCIPAL_ID_HEADER))


def requires(*roles: Role) -> Callable[[Handler], Handler]:
    """Decorator (under `bp.route`): the route answers only a caller holding one of
    `roles`; 401 `unauthorized` without a caller, 403 `forbidden` naming the roles."""
    allowed = frozenset(roles)
    if not allowed:
        raise ValueError("requires() needs at least one role; use anonymous() for none")

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def checked(req: func.HttpRequest) -> func.HttpResponse:
            try:
                caller = caller_of(req)
            except Unauthorized as error:
                logger.info("%s: no caller", handler.__name__)
                return domain_error_response(error)
            try:
                caller.require(allowed)
            except Forbidden as error:
                logger.info("%s refused caller %s: no role of %s", handler.__name__,
                            caller.id, sorted(allowed))  # fmt: skip
                return domain_error_response(error)
            try:
                refuse_cross_site(req)
            except Forbidden as error:
                logger.warning("%s refused a cross-site request of caller %s",
                               handler.__name__, caller.id)  # fmt: skip
                return domain_error_response(error)
            return await handler(req)

        _register(handler, allowed)
        return checked

    return wrap


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What a browser says of a request's initiator (Fetch Metadata): only the page's own origin
# or the user themselves (typing a URL, a bookmark) may change anything.
_OWN_SITE = frozenset({"same-origin", "none"})


def refuse_cross_site(req: func.HttpRequest) -> None:
    """Raise Forbidden for a state-changing request another site made a browser send.

    A signed-in administrator's browser attaches the sign-in (Easy Auth's session cookie;
    the local host's caller) to a form POST from any site, with no CORS preflight. So a
    request whose `Sec-Fetch-Site` is not same-origin (or none), or, from browsers without
    Fetch Metadata, whose `Origin` is not this host, changes nothing. Servers (booking
    frontends, scripts) send neither header and pass. The rule of Go's
    net/http.CrossOriginProtection and OWASP's CSRF cheat sheet (Fetch Metadata, then
    the Origin header)."""
    if req.method.upper() in SAFE_METHODS:
        return
    site = req.headers.get("Sec-Fetch-Site")
    if site is not None:
        if site.strip().lower() not in _OWN_SITE:
            raise Forbidden(f"a {site[:20]} request may not change anything here")
        return
    origin = req.headers.get("Origin")
    if origin is None:
        return
    host = req.headers.get("Host") or urlsplit(req.url).netloc
    if urlsplit(origin.strip()).netloc.lower() != host.strip().lower():
        raise Forbidden("a request from another origin may not change anything here")


def anonymous(handler: Handler) -> Handler:
    """Decorator (under `bp.route`): the route takes no caller, on purpose (Graph's
    webhooks, the terse health probe, the OpenAPI document)."""
    _register(handler, frozenset())
    return handler


def _register(handler: Handler, roles: frozenset[Role]) -> None:
    if handler.__name__ in ROUTE_ROLES:
        raise ValueError(f"two HTTP functions named {handler.__name__}")
    ROUTE_ROLES[handler.__name__] = roles
