"""Who calls the API: the app roles of the app registration, and the caller's principal as
App Service Authentication (Easy Auth) hands it over.

Easy Auth validates the caller's Microsoft Entra token in front of the app and passes its
claims on in the X-MS-CLIENT-PRINCIPAL header, base64 JSON of this shape
(https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities):

    {"auth_typ": "aad", "name_typ": "...", "role_typ": "...",
     "claims": [{"typ": "roles", "val": "BookingSync.Admin"}, ...]}

An app role assigned to a user (an administrator signing in) or to an application (a
booking frontend's client-credentials token) arrives as one `roles` claim per role.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.errors import Forbidden


class Role(StrEnum):
    """The app roles of the app registration (their `value`s); docs/deploy-to-azure.md
    says how to assign them."""

    # Booking frontends: availability; create, read, list, cancel, reschedule bookings.
    FRONTEND = "BookingSync.Frontend"
    # Administrators: resources (connect, settings, disconnect), resync, sync log, health
    # details, the console; they read bookings too (the console shows them).
    ADMIN = "BookingSync.Admin"


# The provider whose principals carry app roles: Microsoft Entra ID (Easy Auth's `aad`).
ENTRA_PROVIDER = "aad"
# Entra puts app roles in `roles` claims (Easy Auth keeps the token's claim names); a
# principal may also declare its own role claim type in `role_typ`.
ROLES_CLAIM = "roles"
# The caller's Entra object id, when X-MS-CLIENT-PRINCIPAL-ID is not sent.
OBJECT_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")


class PrincipalClaim(BaseModel):
    model_config = ConfigDict(frozen=True)

    typ: str = Field(max_length=1024)
    val: str = Field(max_length=4096)


class ClientPrincipal(BaseModel):
    """The decoded X-MS-CLIENT-PRINCIPAL; other fields are ignored."""

    model_config = ConfigDict(frozen=True)

    auth_typ: str
    claims: list[PrincipalClaim] = Field(max_length=1000)
    name_typ: str | None = None
    role_typ: str | None = None

    def claim_values(self, *types: str) -> list[str]:
        return [claim.val for claim in self.claims if claim.typ in types]


class Caller(BaseModel):
    """An authenticated caller and the app roles it holds (unknown role values dropped)."""

    model_config = ConfigDict(frozen=True)

    id: str | None
    identity_provider: str
    roles: frozenset[Role]

    @classmethod
    def from_principal(cls, principal: ClientPrincipal, *, principal_id: str | None) -> Caller:
        """The caller a principal describes. Only Entra principals carry app roles: a
        principal of another provider is a caller without roles."""
        role_types = {ROLES_CLAIM, principal.role_typ or ROLES_CLAIM}
        known = {role.value: role for role in Role}
        roles = (
            frozenset(known[v] for v in principal.claim_values(*role_types) if v in known)
            if principal.auth_typ == ENTRA_PROVIDER
            else frozenset()
        )
        object_ids = principal.claim_values(*OBJECT_ID_CLAIMS)
        return cls(
            id=principal_id or (object_ids[0] if object_ids else None),
            identity_provider=principal.auth_typ,
            roles=roles,
        )

    def require(self, allowed: frozenset[Role]) -> None:
        """Raises Forbidden, naming the roles that would do, unless the caller holds one."""
        if not self.roles & allowed:
            needed = " or ".join(sorted(allowed))
            raise Forbidden(
                f"this operation needs the {needed} app role; the caller has "
                + (", ".join(sorted(self.roles)) or "none"),
                details=[{"field": "roles", "message": f"needs {needed}"}],
            )
