"""Building the one GraphServiceClient of a process: credential, base URL, middleware.

The middleware chain is kiota's default one with these changes:
- `PreferHeaderHandler` puts `IdType="ImmutableId"` into every request's single Prefer
  header, merged with what the request asked itself (`outlook.timezone`, page size), so
  one preference never overwrites another;
- kiota's RetryHandler is left out: retries are ours (throttle.py), bounded in attempts
  and time, and cover `$batch` inner answers too. Two layers would multiply attempts;
- the handlers that act only on request options the app never sets are left out: the
  URL replacer (Graph's `/me`, which an app-only token cannot use) and the header and
  body inspectors. Each costs every request a tracing span, the replacer also a second
  parse of the URL (some 0.15 ms of CPU a request for the three).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from kiota_abstractions.request_information import RequestInformation
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from kiota_http.httpx_request_adapter import HttpxRequestAdapter
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_http.middleware import (
    BodyInspectionHandler,
    HeadersInspectionHandler,
    RetryHandler,
    UrlReplaceHandler,
)
from kiota_http.middleware.middleware import BaseMiddleware
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import GraphClientFactory
from msgraph_core.middleware import GraphTelemetryHandler

from shared.settings import GraphAuthMode, Settings

logger = logging.getLogger(__name__)

IMMUTABLE_ID_PREFERENCE = 'IdType="ImmutableId"'
UTC_PREFERENCE = 'outlook.timezone="UTC"'
# Graph answers within seconds or not at all; a stuck connection must not eat the budget.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def _split_preferences(header: str) -> list[str]:
    """`a="x, y", b=1` → [`a="x, y"`, `b=1`] (commas inside quotes do not split)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in header:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def merge_preferences(headers: list[str], *required: str) -> str:
    """One Prefer value from every Prefer header of a request plus `required` preferences.

    The first value given for a preference wins (the request's own over the defaults).
    """
    merged: dict[str, str] = {}
    for header in [*headers, *required]:
        for preference in _split_preferences(header):
            name = preference.split("=", 1)[0].strip().lower()
            merged.setdefault(name, preference)
    return ", ".join(merged.values())


class PreferHeaderHandler(BaseMiddleware):
    """Sends exactly one Prefer header, always holding `IdType="ImmutableId"` (ids then
    survive moves between folders), merged with any preference the request set."""

    async def send(
        self, request: httpx.Request, transport: httpx.AsyncBaseTransport
    ) -> httpx.Response:
        existing = request.headers.get_list("Prefer")
        if "Prefer" in request.headers:
            del request.headers["Prefer"]
        request.headers["Prefer"] = merge_preferences(existing, IMMUTABLE_ID_PREFERENCE)
        response: httpx.Response = await super().send(request, transport)
        return response


class StaticTokenCredential:
    """A fixed bearer token, for the Graph emulator (which accepts any non-empty one).
    Implements azure-core's AsyncTokenCredential protocol."""

    # The default is a placeholder the emulator accepts, not a secret.
    def __init__(self, token: str = "emulator-token", lifetime_s: int = 24 * 3600) -> None:  # noqa: S107
        if not token:
            raise ValueError("the token must not be empty")
        self._token = token
        self._lifetime_s = lifetime_s

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + self._lifetime_s)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> StaticTokenCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def graph_credential(
    settings: Settings, managed_identity: AsyncTokenCredential | None = None
) -> tuple[AsyncTokenCredential, bool]:
    """The credential for the configured auth mode, and whether the caller of this
    function owns it (must close it). `managed_identity` is the process's shared one."""
    mode = settings.graph_auth_mode
    if mode is GraphAuthMode.EMULATOR:
        return StaticTokenCredential(), True
    # Not at indexing: see shared.composition.azure_credential.
    from azure.identity.aio import ClientSecretCredential, ManagedIdentityCredential

    if mode is GraphAuthMode.CLIENT_SECRET:
        if settings.graph_client_id is None or settings.graph_client_secret is None:
            raise ValueError("GRAPH_AUTH_MODE=client_secret needs GRAPH_CLIENT_ID and _SECRET")
        secret = settings.graph_client_secret.get_secret_value()
        credential = ClientSecretCredential(
            settings.graph_tenant_id, settings.graph_client_id, secret
        )
        return credential, True
    if managed_identity is not None:
        return managed_identity, False
    return ManagedIdentityCredential(client_id=settings.azure_client_id), True


def graph_scope(base_url: str) -> str:
    """The app-only scope for the Graph at `base_url` (national clouds have their own)."""
    return f"https://{urlsplit(base_url).hostname}/.default"


def expand_url_once(adapter: HttpxRequestAdapter, request: RequestInformation) -> None:
    """Fix `request`'s URL to its template's expansion now, for every later read of it.

    kiota expands `RequestInformation.url` afresh on each read, and a request is read
    three times on its way out (the auth provider's host check, the adapter's tracing
    attributes, the httpx request). std-uritemplate percent-encodes a value character by
    character: for an event read with its `$expand` about 0.3 ms of CPU each read. The
    setter is kiota's own (the SDK's page iterator sets next links with it); it clears the
    request's path parameters, which are its request builder's own dict (kiota passes it
    on, not a copy), so the request gets a dict of its own first: a builder is used again
    for a retry's request."""
    adapter.set_base_url_for_request_information(request)
    url = request.url
    request.path_parameters = {}
    request.url = url


# kiota's default handlers the app does without (see the module's docstring).
_LEFT_OUT: tuple[type[BaseMiddleware], ...] = (
    RetryHandler,
    UrlReplaceHandler,
    HeadersInspectionHandler,
    BodyInspectionHandler,
)


def graph_middleware() -> list[BaseMiddleware]:
    """Ours, kiota's default handlers but those in `_LEFT_OUT`, then Graph's telemetry."""
    middleware: list[BaseMiddleware] = [PreferHeaderHandler()]
    middleware.extend(
        handler
        for handler in KiotaClientFactory.get_default_middleware(None)
        if not isinstance(handler, _LEFT_OUT)
    )
    middleware.append(GraphTelemetryHandler())
    return middleware


def build_http_client(
    base_url: str, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT
) -> httpx.AsyncClient:
    """An httpx client with the middleware of `graph_middleware`."""
    client = httpx.AsyncClient(base_url=base_url, timeout=timeout)
    with_middleware: httpx.AsyncClient = GraphClientFactory.create_with_custom_middleware(
        graph_middleware(), client=client
    )
    return with_middleware


def build_graph_client(
    base_url: str, credential: AsyncTokenCredential, *, http_client: httpx.AsyncClient
) -> GraphServiceClient:
    """A GraphServiceClient for `base_url` (e.g. https://graph.microsoft.com/v1.0 or the
    emulator's .../v1.0). Tokens are only ever sent to that host, and asked for its
    `.default` scope (https://graph.microsoft.com/.default in the global cloud)."""
    host = urlsplit(base_url).hostname
    if not host:
        raise ValueError(f"graph base URL without a host: {base_url!r}")
    auth = AzureIdentityAuthenticationProvider(
        credential, scopes=[graph_scope(base_url)], allowed_hosts=[host]
    )
    adapter = GraphRequestAdapter(auth, client=http_client)
    adapter.base_url = base_url.rstrip("/")
    return GraphServiceClient(request_adapter=adapter)
