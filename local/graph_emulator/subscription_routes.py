"""``/subscriptions``: create (with the validation handshake), list, get, renew, delete.

Only Outlook event subscriptions on a user (``/users/{id}/events``) are offered, the one
resource the app subscribes to with application permissions.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from local.graph_emulator.errors import GraphError
from local.graph_emulator.lookups import context_url
from local.graph_emulator.router import GraphRequest, GraphResponse, Params, no_content, ok
from local.graph_emulator.state import SubscriptionRecord
from local.graph_emulator.timezones import format_timestamp, parse_timestamp, utc_now

if TYPE_CHECKING:
    from local.graph_emulator.emulator import GraphEmulator

CHANGE_TYPES = ("created", "updated", "deleted")
_RESOURCE = re.compile(r"^/?users/([^/]+)/events/?$", re.I)


def _invalid(message: str) -> GraphError:
    return GraphError(400, "InvalidRequest", message)


def _not_found() -> GraphError:
    return GraphError(404, "ResourceNotFound", "The object was not found.")


def mailbox_ref_of_resource(resource: Any) -> str | None:
    if not isinstance(resource, str):
        return None
    match = _RESOURCE.match(resource.strip())
    return match.group(1).strip("'\"") if match else None


def subscription_mailbox(emu: GraphEmulator, request: GraphRequest, params: Params) -> str | None:
    """The mailbox a subscription request concerns, for the request counters."""
    if "subscriptionId" in params:
        subscription = emu.state.subscriptions.get(params["subscriptionId"])
        return subscription.mailbox_key if subscription else None
    if isinstance(request.body, dict):
        return mailbox_ref_of_resource(request.body.get("resource"))
    return None


def render_subscription(
    subscription: SubscriptionRecord,
    *,
    tenant_id: str | None = None,
    reveal_client_state: bool = False,
) -> dict[str, Any]:
    """Graph's JSON for a subscription. ``clientState`` is null unless revealed: Graph
    echoes it only in the answer to the POST that set it (the control API reveals it)."""
    rendered: dict[str, Any] = {
        "id": subscription.id,
        "resource": subscription.resource,
        "applicationId": subscription.application_id,
        "changeType": ",".join(subscription.change_types),
        "clientState": subscription.client_state if reveal_client_state else None,
        "notificationUrl": subscription.notification_url,
        "notificationQueryOptions": None,
        "lifecycleNotificationUrl": subscription.lifecycle_url,
        "expirationDateTime": format_timestamp(subscription.expiration),
        "creatorId": subscription.creator_id,
        "includeResourceData": False,
        "latestSupportedTlsVersion": subscription.latest_tls,
        "encryptionCertificate": None,
        "encryptionCertificateId": None,
        "notificationUrlAppId": None,
    }
    if tenant_id is not None:
        rendered["tenantId"] = tenant_id
    return rendered


def _url(emu: GraphEmulator, value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"'{name}' is required.")
    parts = urlsplit(value)
    schemes = ("http", "https") if emu.config.allow_http_notification_urls else ("https",)
    if parts.scheme.lower() not in schemes or not parts.netloc:
        raise _invalid(f"Invalid {name}: '{value}'. The URL must use the https scheme.")
    return value


def _expiration(emu: GraphEmulator, value: Any) -> Any:
    expiration = parse_timestamp(value, "expirationDateTime")
    now = utc_now()
    limit = emu.config.max_subscription_minutes
    if expiration <= now:
        raise _invalid("Subscription expiration can only be in the future.")
    if expiration > now + timedelta(minutes=limit):
        raise _invalid(f"Subscription expiration can only be {limit} minutes in the future.")
    return expiration


async def _validate(emu: GraphEmulator, url: str) -> None:
    reason = await emu.notifier.validate_endpoint(url)
    if reason is not None:
        raise _invalid(reason)


async def create(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    body = request.json_object()
    raw_types = body.get("changeType")
    if not isinstance(raw_types, str) or not raw_types.strip():
        raise _invalid("'changeType' is required.")
    change_types = tuple(dict.fromkeys(t.strip().lower() for t in raw_types.split(",")))
    unknown = [t for t in change_types if t not in CHANGE_TYPES]
    if unknown:
        raise _invalid(f"Invalid changeType '{','.join(unknown)}'.")
    notification_url = _url(emu, body.get("notificationUrl"), "notificationUrl")
    lifecycle_raw = body.get("lifecycleNotificationUrl")
    lifecycle_url = _url(emu, lifecycle_raw, "lifecycleNotificationUrl") if lifecycle_raw else None
    resource = body.get("resource")
    mailbox_ref = mailbox_ref_of_resource(resource)
    if mailbox_ref is None:
        raise _invalid(
            f"Resource '{resource}' is not supported. Subscribe to '/users/{{id}}/events' "
            "with application permissions."
        )
    mailbox = emu.state.find_mailbox(mailbox_ref)
    if mailbox is None:
        raise GraphError(
            404,
            "ExtensionError",
            "Operation: Create; Exception: [Status Code: NotFound; Reason: The specified "
            "object was not found in the store.]",
        )
    expiration = _expiration(emu, body.get("expirationDateTime"))
    client_state = body.get("clientState")
    if client_state is not None:
        client_state = str(client_state)
        if len(client_state) > emu.config.max_client_state_length:
            raise _invalid(
                f"clientState must be at most {emu.config.max_client_state_length} characters."
            )
    if body.get("includeResourceData"):
        raise _invalid("includeResourceData is not supported by the Graph emulator.")
    _refuse_duplicate(emu, mailbox.key, change_types)

    await _validate(emu, notification_url)
    if lifecycle_url:
        await _validate(emu, lifecycle_url)

    now = utc_now()
    subscription = SubscriptionRecord(
        id=str(uuid.uuid4()),
        resource=str(resource),
        mailbox_key=mailbox.key,
        change_types=change_types,
        notification_url=notification_url,
        lifecycle_url=lifecycle_url,
        client_state=client_state,
        expiration=expiration,
        created=now,
        application_id=emu.config.application_id,
        creator_id=str(uuid.uuid5(uuid.NAMESPACE_URL, emu.config.application_id)),
        latest_tls=str(body.get("latestSupportedTlsVersion") or "v1_2"),
    )
    emu.state.subscriptions[subscription.id] = subscription
    # The answer to the POST is the one place Graph echoes the clientState it was given.
    rendered = render_subscription(subscription, reveal_client_state=True)
    return ok({"@odata.context": context_url(request, "subscriptions/$entity"), **rendered}, 201)


def _refuse_duplicate(emu: GraphEmulator, mailbox_key: str, change_types: tuple[str, ...]) -> None:
    """Graph refuses a second subscription of one app with the same resource and
    changeType (409); the caller has to find the first one itself."""
    wanted = frozenset(change_types)
    for existing in emu.state.active_subscriptions(utc_now()):
        if (
            existing.mailbox_key == mailbox_key
            and existing.application_id == emu.config.application_id
            and frozenset(existing.change_types) == wanted
        ):
            raise GraphError(
                409,
                "Conflict",
                f"Subscription Id {existing.id} already exists for the requested combination",
            )


async def list_all(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    options = sorted(name for name in request.query if name.startswith("$"))
    if options:
        raise GraphError(
            400,
            "BadRequest",
            f"Query option '{options[0]}' is not supported: GET /subscriptions takes no "
            "OData query options.",
        )
    active = emu.state.active_subscriptions(utc_now())
    return ok(
        {
            "@odata.context": context_url(request, "subscriptions"),
            "value": [render_subscription(s) for s in active],
        }
    )


def _find(emu: GraphEmulator, params: Params) -> SubscriptionRecord:
    subscription = emu.state.find_subscription(params["subscriptionId"], utc_now())
    if subscription is None:
        raise _not_found()
    return subscription


async def get(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    rendered = render_subscription(_find(emu, params))
    return ok({"@odata.context": context_url(request, "subscriptions/$entity"), **rendered})


async def update(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    subscription = _find(emu, params)
    body = request.json_object()
    lifecycle = body.get("lifecycleNotificationUrl")
    if lifecycle is not None and lifecycle != subscription.lifecycle_url:
        raise _invalid("lifecycleNotificationUrl can only be set when creating a subscription.")
    expiration = (
        _expiration(emu, body["expirationDateTime"]) if "expirationDateTime" in body else None
    )
    new_url = body.get("notificationUrl")
    if new_url is not None and new_url != subscription.notification_url:
        await _validate(emu, _url(emu, new_url, "notificationUrl"))
        subscription.notification_url = new_url
    if expiration is not None:
        subscription.expiration = expiration
    rendered = render_subscription(subscription)
    return ok({"@odata.context": context_url(request, "subscriptions/$entity"), **rendered})


async def delete(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    subscription = _find(emu, params)
    del emu.state.subscriptions[subscription.id]
    return no_content()


async def reauthorize(emu: GraphEmulator, request: GraphRequest, params: Params) -> GraphResponse:
    _find(emu, params)
    return no_content()
