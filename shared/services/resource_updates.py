"""Updating a resource under its ETag, re-reading when someone else wrote first."""

from __future__ import annotations

from collections.abc import Callable

from shared.domain.errors import ConcurrencyConflict
from shared.domain.resources import Resource
from shared.ports import ResourceRepository

ATTEMPTS = 5


async def update_resource(
    resources: ResourceRepository,
    resource_id: str,
    change: Callable[[Resource], Resource | None],
) -> Resource | None:
    """Apply `change` to the latest stored version and write it under that version's
    ETag, re-reading and re-applying on a conflict. Returns what was written, or None when
    the resource is absent or `change` returned None (nothing to do).

    Raises ConcurrencyConflict when the resource kept changing for ATTEMPTS rounds.
    """
    for _ in range(ATTEMPTS):
        stored = await resources.get(resource_id)
        if stored is None:
            return None
        changed = change(stored.value)
        if changed is None:
            return None
        try:
            return (await resources.update(changed, stored.etag)).value
        except ConcurrencyConflict:
            continue
    raise ConcurrencyConflict(f"resource {resource_id} kept changing; retry")
