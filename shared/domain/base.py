"""Base model and field types shared by the domain models."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel


class DomainModel(BaseModel):
    """Immutable model; camelCase on the wire (API, queues), snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        frozen=True,
        extra="forbid",
        str_strip_whitespace=True,
    )


def _to_utc(value: datetime) -> datetime:
    # Whole seconds: Outlook keeps no finer time, so a finer one would read back "moved".
    return value.astimezone(UTC).replace(microsecond=0)


# A datetime that must carry an offset; stored and compared in UTC, to the second.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
# Ids we accept from callers: safe as Table Storage keys (no / \ # ? or control chars).
ResourceId = Annotated[str, StringConstraints(pattern=_ID_PATTERN)]
BookingId = Annotated[str, StringConstraints(pattern=_ID_PATTERN)]

# Pragmatic mailbox check (Graph is the authority on whether it exists).
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,63}$")


def _check_email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("must be an email address like name@example.com")
    return value.lower()


EmailAddress = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=320), AfterValidator(_check_email)
]

ShortText = Annotated[str, StringConstraints(min_length=1, max_length=255)]
LongText = Annotated[str, StringConstraints(max_length=4000)]
PositiveVersion = Annotated[int, Field(ge=1)]


def utc_now() -> datetime:
    return datetime.now(UTC)
