"""Opaque identifiers shaped like Outlook's (base64 with ``-``, ``_`` and ``=``), so that a
client that forgets to URL-encode ids breaks here as it would against Graph."""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from datetime import UTC, datetime

_EVENT_PREFIX = "AAMkAG"
_OCCURRENCE_PREFIX = "AAMkOC"
_OCCURRENCE_STAMP = "%Y%m%dT%H%M%SZ"
# A fixed namespace so a mailbox keeps its user id across emulator restarts.
_USER_NAMESPACE = uuid.UUID("3f8a2c1e-7b6d-4e5f-8a9b-0c1d2e3f4a5b")


def new_event_id() -> str:
    return _EVENT_PREFIX + base64.urlsafe_b64encode(os.urandom(33)).decode() + "AAA="


def new_change_key() -> str:
    return base64.b64encode(os.urandom(22)).decode()


def new_ical_uid() -> str:
    return "040000008200E00074C5B7101A82E00800000000" + os.urandom(24).hex().upper()


def user_id_for(upn: str) -> str:
    return str(uuid.uuid5(_USER_NAMESPACE, upn.lower()))


def folder_id_for(upn: str, folder: str) -> str:
    """A stable folder id (the mailbox's calendar, its Deleted Items), shaped like Outlook's."""
    digest = uuid.uuid5(_USER_NAMESPACE, f"{upn.lower()}/{folder}").bytes
    return "AAMkAGFo" + base64.urlsafe_b64encode(digest + digest[:8]).decode() + "AAA="


def occurrence_id(master_id: str, original_start: datetime) -> str:
    """Occurrences and exceptions are addressed by series master + original start, like
    Outlook's ids, so an occurrence keeps its id when it becomes an exception."""
    raw = f"{master_id}|{original_start.astimezone(UTC).strftime(_OCCURRENCE_STAMP)}"
    return _OCCURRENCE_PREFIX + base64.urlsafe_b64encode(raw.encode()).decode()


def parse_occurrence_id(event_id: str) -> tuple[str, datetime] | None:
    if not event_id.startswith(_OCCURRENCE_PREFIX):
        return None
    try:
        raw = base64.urlsafe_b64decode(event_id[len(_OCCURRENCE_PREFIX) :].encode()).decode()
        master_id, stamp = raw.rsplit("|", 1)
        original = datetime.strptime(stamp, _OCCURRENCE_STAMP).replace(tzinfo=UTC)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return master_id, original
