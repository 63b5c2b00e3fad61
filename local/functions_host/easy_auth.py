"""App Service Authentication (Easy Auth) in front of the local host: one local caller.

In Azure, Easy Auth checks the caller's token before a request reaches the Functions host
and hands the app the caller's claims in X-MS-CLIENT-PRINCIPAL (base64 JSON) with
X-MS-CLIENT-PRINCIPAL-ID, -NAME and -IDP. "External requests aren't allowed to set these
headers, so they're present only if set by App Service"
(https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities):
whatever a client sends under those names never reaches the app.

`LocalCaller` plays that part with `--local-caller ROLES`: every request loses the
X-MS-CLIENT-PRINCIPAL* and X-MS-TOKEN-* headers its client sent and carries the principal
of one configured caller, an Entra (`aad`) principal holding ROLES as `roles` claims, as
Easy Auth builds it from an Entra token. Without the option the host passes headers on as
it gets them, as the Functions host does without Easy Auth in front (and as `func start`
does): then a caller must send a principal itself and the app refuses a request without
one (401).

Not modelled: sign-in (`/.auth/login/aad`), tokens, `excludedPaths` (every request gets
the principal; the app's anonymous routes ignore it).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Easy Auth's headers; the ones clients must never get through.
PRINCIPAL = "x-ms-client-principal"
PRINCIPAL_ID = "x-ms-client-principal-id"
PRINCIPAL_NAME = "x-ms-client-principal-name"
PRINCIPAL_IDP = "x-ms-client-principal-idp"
_PLATFORM_PREFIXES = ("x-ms-client-principal", "x-ms-token-")

# The claim types Easy Auth's Entra provider uses.
NAME_CLAIM = "name"
ROLES_CLAIM = "roles"
OBJECT_ID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
NAME_TYPE = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
ROLE_TYPE = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"


@dataclass(frozen=True)
class LocalCaller:
    """The caller Easy Auth would pass on after an Entra sign-in: its app `roles`."""

    roles: tuple[str, ...]
    name: str = "local-admin@localhost"
    object_id: str = "00000000-0000-0000-0000-00000000a11c"

    @classmethod
    def parse(cls, text: str) -> LocalCaller:
        """`ROLE[,ROLE...]` (empty: a signed-in caller holding no role)."""
        return cls(roles=tuple(part.strip() for part in text.split(",") if part.strip()))

    def headers(self) -> dict[str, str]:
        """The headers Easy Auth sets for this caller, names lower-cased as the host
        hands them to the worker."""
        return principal_headers(self.roles, name=self.name, object_id=self.object_id)


def principal_headers(
    roles: Iterable[str], *, name: str, object_id: str, provider: str = "aad"
) -> dict[str, str]:
    """X-MS-CLIENT-PRINCIPAL and its siblings for a principal with these app roles."""
    claims = [
        {"typ": OBJECT_ID_CLAIM, "val": object_id},
        {"typ": NAME_CLAIM, "val": name},
        *({"typ": ROLES_CLAIM, "val": role} for role in roles),
    ]
    principal = {
        "auth_typ": provider,
        "claims": claims,
        "name_typ": NAME_TYPE,
        "role_typ": ROLE_TYPE,
    }
    encoded = base64.b64encode(json.dumps(principal).encode("utf-8")).decode("ascii")
    return {
        PRINCIPAL: encoded,
        PRINCIPAL_ID: object_id,
        PRINCIPAL_NAME: name,
        PRINCIPAL_IDP: provider,
    }


def in_front(headers: Mapping[str, str], caller: LocalCaller) -> dict[str, str]:
    """The request's headers (lower-case names) as Easy Auth passes them on: the client's
    platform headers dropped, the caller's principal added."""
    kept = {k: v for k, v in headers.items() if not k.startswith(_PLATFORM_PREFIXES)}
    return {**kept, **caller.headers()}
