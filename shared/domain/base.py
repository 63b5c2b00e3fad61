"""Base model and field types shared by the domain models."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
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


# A date and time as ISO 8601 text (its offset is checked by AwareDatetime). pydantic
# would also take epoch numbers, as numbers or digit strings; the API speaks ISO 8601 only.
_ISO_8601_DATETIME = re.compile(r"\s*\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
# Table Storage's Edm.DateTime starts at 1601-01-01 UTC; an earlier time cannot be stored
# (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model).
EARLIEST_DATETIME = datetime(1601, 1, 1, tzinfo=UTC)


def _iso_8601_only(value: object) -> object:
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_8601_DATETIME.match(value)):
        return value
    raise ValueError("must be an ISO 8601 date and time with an offset, like 2030-01-07T09:00Z")


def _to_utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:30+01:00, before year 1 in UTC
        raise ValueError("is out of range in UTC") from None
    if utc < EARLIEST_DATETIME:
        raise ValueError(f"must not be before {EARLIEST_DATETIME.isoformat()}")
    # Whole seconds: Outlook keeps no finer time, so a finer one would read back "moved".
    return utc.replace(microsecond=0)


# A datetime that must carry an offset; stored and compared in UTC, to the second.
UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_8601_only), AfterValidator(_to_utc)]


def _to_utc_milliseconds(value: datetime) -> datetime:
    # An offset is whole minutes, so the fraction of a second is the same in UTC.
    return _to_utc(value).replace(microsecond=value.microsecond // 1000 * 1000)


# When something happened, as our own records keep it: UTC, to the millisecond (what
# orders a resource's sync log; several entries often fall in one second).
RecordedAt = Annotated[
    AwareDatetime, BeforeValidator(_iso_8601_only), AfterValidator(_to_utc_milliseconds)
]

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
    str,
    # The pattern also goes into the OpenAPI document, so clients and fuzzers see the rule.
    StringConstraints(strip_whitespace=True, max_length=320, pattern=_EMAIL.pattern),
    AfterValidator(_check_email),
]

# Characters XML 1.0 does not allow (https://www.w3.org/TR/xml/#charsets): C0 controls
# other than tab, line feed and carriage return, and U+FFFE and U+FFFF. Exchange keeps
# items as XML-based MAPI properties; what Graph does with one in an event's subject or
# body is not documented, so the harsher reading: a booking's text refuses them up front,
# and whatever else reaches an event (templates, older bookings) is written without them.
_NOT_XML_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def refuse_control_characters(value: str | None) -> str | None:
    """`value` unchanged, or ValueError when it holds a character an event cannot."""
    if value is not None and _NOT_XML_CHARACTERS.search(value):
        raise ValueError(
            "must not contain control characters (U+0000 to U+001F but tab and line "
            "breaks) or U+FFFE, U+FFFF"
        )
    return value


def without_control_characters(text: str) -> str:
    """`text` less the characters `refuse_control_characters` refuses."""
    return _NOT_XML_CHARACTERS.sub("", text)


ShortText = Annotated[str, StringConstraints(min_length=1, max_length=255)]
LongText = Annotated[str, StringConstraints(max_length=4000)]
PositiveVersion = Annotated[int, Field(ge=1)]


def utc_now() -> datetime:
    return datetime.now(UTC)
