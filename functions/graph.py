"""Microsoft Graph's webhooks: change notifications and lifecycle notifications.

Anonymous routes: a notification is trusted only when its clientState matches its
subscription's (constant-time) and its tenantId ours. They answer within Graph's limits
by only validating and enqueueing — never calling Graph inline.
"""

from __future__ import annotations

import azure.functions as func

from functions.http import (
    BodyTooLarge,
    MalformedJson,
    UnsupportedMediaType,
    anonymous,
    domain_error_response,
    error_response,
    parse_json_object,
    respond,
    validate,
)
from shared.composition import get_services
from shared.domain.errors import InvalidInput
from shared.observability import correlate
from shared.services.inbound import MAX_NOTIFICATIONS_PER_POST, NotificationBatch

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions lacks annotations here

# Graph delivers many notifications in one POST; we take up to 1,000, and anything bigger
# is not Graph. An item of the documented shape ("Users/{user}@{tenant}/Events/{id}" in
# `resource` and `@odata.id`) with an Outlook event id of ~150 characters is about 1.1 KB,
# so 1,000 of them pass 1 MB: 2 MB leaves room. The API's 64 KB limit would refuse a
# genuine batch of 100, and a refused POST is retried for up to 4 hours, then lost
# (https://learn.microsoft.com/graph/change-notifications-delivery-webhooks).
MAX_NOTIFICATION_BYTES = 2 * 1024 * 1024
MAX_VALIDATION_TOKEN = 2048


def _validation(req: func.HttpRequest) -> func.HttpResponse | None:
    """Graph's handshake: echo the (already URL-decoded) token as text/plain, verbatim;
    `nosniff`, so that no browser takes an echoed token for markup or script."""
    token = req.params.get("validationToken")
    if token is None:
        return None
    if len(token) > MAX_VALIDATION_TOKEN:
        return error_response(400, "invalid_input", "validationToken is too long")
    return func.HttpResponse(
        token,
        status_code=200,
        mimetype="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def _notifications(req: func.HttpRequest) -> NotificationBatch:
    """The POST's notifications. Raises BodyTooLarge above 2 MB or 1,000 items (counted
    before any item is validated), MalformedJson, InvalidInput."""
    data = parse_json_object(req, max_bytes=MAX_NOTIFICATION_BYTES)
    items = data.get("value")
    if isinstance(items, list) and len(items) > MAX_NOTIFICATIONS_PER_POST:
        raise BodyTooLarge(
            f"a notification POST may hold at most {MAX_NOTIFICATIONS_PER_POST} items"
        )
    return validate(NotificationBatch, data)


async def _accept(req: func.HttpRequest) -> func.HttpResponse:
    handshake = _validation(req)
    if handshake is not None:
        return handshake
    try:
        batch = _notifications(req)
    except (BodyTooLarge, MalformedJson, UnsupportedMediaType) as exc:
        return domain_error_response(exc)  # 413, 400, 415: as on every route
    except InvalidInput as exc:
        return error_response(400, exc.code, exc.message, list(exc.details))

    # Graph batches per subscription as a rule; a mixed batch carries no subscription id.
    subscriptions = {item.subscription_id for item in batch.value}
    only = subscriptions.pop() if len(subscriptions) == 1 else None

    async def handle() -> func.HttpResponse:
        with correlate(subscription_id=only):
            await get_services().intake.accept(batch)  # logs one line for the POST
            return func.HttpResponse(status_code=202)

    # A failure to enqueue answers 503, so Graph delivers again later.
    return await respond(handle)


@bp.route(route="graph/notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@anonymous
async def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    return await _accept(req)


@bp.route(route="graph/lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@anonymous
async def graph_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    return await _accept(req)
