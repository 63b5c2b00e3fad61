"""Bearer-token checks on Graph routes and a client-credentials token endpoint.

Tokens look like JWTs (unsigned) so that code which peeks at ``exp`` or ``tid`` works; the
emulator itself only looks them up in its own table.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from local.graph_emulator.errors import GraphError

logger = logging.getLogger(__name__)

GRAPH_AUDIENCE = "https://graph.microsoft.com"
_WWW_AUTHENTICATE = (
    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/'
    'authorize", client_id="00000003-0000-0000-c000-000000000000"'
)


@dataclass(frozen=True)
class TokenError(Exception):
    """An AAD-style token endpoint failure (``{"error", "error_description"}``)."""

    status: int
    error: str
    description: str

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


class TokenStore:
    def __init__(
        self,
        tenant_id: str,
        lifetime_s: int,
        clients: Mapping[str, str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant_id = tenant_id
        self.lifetime_s = lifetime_s
        self.clients = dict(clients)
        self._clock = clock
        self._issued: dict[str, float] = {}

    def _check_tenant(self, tenant: str) -> None:
        """A tenant GUID must be ours; domain names and the multi-tenant aliases pass."""
        try:
            tenant_guid = uuid.UUID(tenant)
        except ValueError:
            return
        if str(tenant_guid) != self.tenant_id.lower():
            raise TokenError(
                400,
                "invalid_request",
                f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the "
                "correct tenant ID and are signing into the correct cloud.",
            )

    def issue(self, tenant: str, form: Mapping[str, str]) -> dict[str, Any]:
        """Answer a client-credentials token request. Raises TokenError."""
        self._check_tenant(tenant)
        if form.get("grant_type") != "client_credentials":
            raise TokenError(
                400,
                "unsupported_grant_type",
                "AADSTS70003: The app requested an unsupported grant type.",
            )
        client_id = form.get("client_id", "")
        secret = form.get("client_secret", "")
        scope = form.get("scope", "")
        if not client_id or not scope:
            raise TokenError(
                400,
                "invalid_request",
                "AADSTS900144: The request body must contain client_id and scope.",
            )
        if not scope.endswith("/.default"):
            raise TokenError(
                400,
                "invalid_scope",
                f"AADSTS1002012: The provided value for scope {scope} is not valid. Client "
                "credential flows must have a scope value with /.default suffixed.",
            )
        expected = self.clients.get(client_id) if self.clients else None
        if self.clients and expected is None:
            raise TokenError(
                400,
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found in the "
                f"directory '{tenant}'.",
            )
        if not secret or (expected is not None and secret != expected):
            raise TokenError(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided.",
            )
        now = self._clock()
        expires = now + self.lifetime_s
        payload = {
            "aud": GRAPH_AUDIENCE,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "tid": self.tenant_id,
            "appid": client_id,
            "roles": ["Calendars.ReadWrite"],
            "iat": int(now),
            "exp": int(expires),
            "jti": secrets.token_hex(8),
        }
        token = f"{_b64({'typ': 'JWT', 'alg': 'none'})}.{_b64(payload)}.{secrets.token_hex(16)}"
        self._issued[token] = expires
        logger.info("token issued to client %s", client_id)
        return {
            "token_type": "Bearer",
            "expires_in": self.lifetime_s,
            "ext_expires_in": self.lifetime_s,
            "access_token": token,
        }

    def check(self, authorization: str | None, strict: bool) -> None:
        """Raise GraphError(401) unless the header carries an acceptable bearer token."""
        token = ""
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        if not token:
            raise _unauthorized("Access token is empty.")
        if not strict:
            return
        expires = self._issued.get(token)
        if expires is None:
            raise _unauthorized("Access token validation failure. Invalid audience.")
        if expires <= self._clock():
            raise _unauthorized("Lifetime validation failed, the token is expired.")

    def revoke_all(self) -> int:
        count = len(self._issued)
        self._issued.clear()
        return count


def _unauthorized(message: str) -> GraphError:
    return GraphError(
        401,
        "InvalidAuthenticationToken",
        message,
        headers={"WWW-Authenticate": _WWW_AUTHENTICATE},
    )


def openid_configuration(base_url: str, tenant: str) -> dict[str, Any]:
    """Enough of AAD's discovery document for clients that look it up before asking."""
    root = f"{base_url}/{tenant}"
    return {
        "token_endpoint": f"{root}/oauth2/v2.0/token",
        "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
        "issuer": f"{root}/v2.0",
        "jwks_uri": f"{root}/discovery/v2.0/keys",
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "response_types_supported": ["token"],
        "tenant_region_scope": "EU",
    }
