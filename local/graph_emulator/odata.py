"""The slice of OData the app uses: Prefer headers, $select, $top/$skip paging, $orderby,
$expand of single-value extended properties, and a small $filter language.

$filter supports conjunctions (``and``) of: comparisons (``eq ne gt ge lt le``) on simple
event properties and on ``start/dateTime``/``end/dateTime``; ``contains``/``startswith``/
``endswith``; and ``singleValueExtendedProperties/any(ep: ep/id eq '..' and ep/value eq '..')``.
Anything else fails with Graph's ``ErrorInvalidUrlQueryFilter``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from local.graph_emulator.errors import GraphError
from local.graph_emulator.state import EventRecord
from local.graph_emulator.timezones import parse_query_date_time

# Prefer ------------------------------------------------------------------------------


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_prefer(headers: Iterable[str]) -> dict[str, str]:
    """All preferences from every Prefer header (each may hold several, comma-separated).
    Keys are lower-cased; quoted values are unquoted. A later duplicate wins."""
    prefs: dict[str, str] = {}
    for header in headers:
        for part in _split_outside_quotes(header, ","):
            key, _, value = part.strip().partition("=")
            if not key.strip():
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            prefs[key.strip().lower()] = value
    return prefs


# Extended-property ids ---------------------------------------------------------------

_NAMED_PROPERTY = re.compile(r"^\s*(\w+)\s+\{([0-9a-fA-F-]{36})\}\s+Name\s+(.+?)\s*$", re.I)


def normalize_property_id(property_id: str) -> str:
    """Graph matches the type and GUID of a property id case-insensitively and the Name
    part case-sensitively."""
    match = _NAMED_PROPERTY.match(property_id)
    if match:
        kind, guid, name = match.groups()
        return f"{kind.lower()} {{{guid.lower()}}} name {name}"
    return " ".join(property_id.split()).lower()


# $select, paging, $orderby -----------------------------------------------------------


def apply_select(item: dict[str, Any], select: str | None) -> dict[str, Any]:
    if not select:
        return item
    wanted = {name.strip().lower() for name in select.split(",") if name.strip()}
    return {
        key: value
        for key, value in item.items()
        if key.lower() in wanted or key in ("id", "@odata.etag", "@odata.type", "@removed")
    }


def _non_negative_int(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError as exc:
        raise GraphError(
            400, "BadRequest", f"Invalid value '{value}' for query option {name}."
        ) from exc
    if number < 0:
        raise GraphError(400, "BadRequest", f"Invalid value '{value}' for query option {name}.")
    return number


def page_window(
    query: Mapping[str, str], prefs: Mapping[str, str], default_size: int, max_size: int
) -> tuple[int, int, bool]:
    """(skip, page size, whether $top set the size). $top wins over odata.maxpagesize."""
    top = _non_negative_int(query.get("$top"), "$top")
    skip = _non_negative_int(query.get("$skip"), "$skip") or 0
    if top is not None:
        return skip, max(1, min(top, max_size)), True
    max_page = prefs.get("odata.maxpagesize")
    if max_page is not None:
        size = _non_negative_int(max_page, "odata.maxpagesize") or default_size
        return skip, max(1, min(size, max_size)), False
    return skip, default_size, False


def link_with(base: str, query: Mapping[str, str], **changes: str | None) -> str:
    """``base?query`` with some parameters replaced (None removes). Keeps ``$`` literal,
    as Graph's own links do."""
    params = {k: v for k, v in query.items()}
    for key, value in changes.items():
        name = "$" + key
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    if not params:
        return base
    return base + "?" + urlencode(params, safe="$'(),:/@", quote_via=quote)


_ORDERABLE: dict[str, Callable[[EventRecord], Any]] = {
    "start/datetime": lambda e: e.start,
    "end/datetime": lambda e: e.end,
    "createddatetime": lambda e: e.created,
    "lastmodifieddatetime": lambda e: e.last_modified,
    "subject": lambda e: str(e.props.get("subject") or "").lower(),
}


def apply_orderby(records: list[EventRecord], orderby: str | None) -> list[EventRecord]:
    if not orderby:
        return records
    ordered = list(records)
    for clause in reversed([c.strip() for c in orderby.split(",") if c.strip()]):
        name, _, direction = clause.partition(" ")
        key = _ORDERABLE.get(name.lower())
        if key is None or direction.strip().lower() not in ("", "asc", "desc"):
            raise GraphError(400, "BadRequest", f"The $orderby clause '{clause}' is not supported.")
        ordered.sort(key=key, reverse=direction.strip().lower() == "desc")
    return ordered


# $expand -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Expansion:
    """Which extended properties to include; ``None`` ids means all of them."""

    property_ids: frozenset[str] | None


_EXPAND_ITEM = re.compile(r"^\s*(\w+)\s*(?:\((.*)\))?\s*$", re.S)
_EXPAND_FILTER = re.compile(r"^\s*\$filter\s*=\s*(.+)$", re.S | re.I)
_ID_EQ = re.compile(r"^\s*id\s+eq\s+'((?:[^']|'')*)'\s*$", re.I)


def _split_top_level(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == separator and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_expand(expand: str | None) -> Expansion | None:
    """Parse ``$expand``; only singleValueExtendedProperties (optionally filtered by id)."""
    if not expand:
        return None
    ids: set[str] | None = set()
    for item in _split_top_level(expand, ","):
        match = _EXPAND_ITEM.match(item)
        if not match or match.group(1).lower() != "singlevalueextendedproperties":
            raise GraphError(
                400, "BadRequest", f"Parsing OData Select and Expand failed: '{item.strip()}'."
            )
        options = match.group(2)
        if not options:
            ids = None
            continue
        filter_match = _EXPAND_FILTER.match(options)
        if not filter_match:
            raise GraphError(400, "BadRequest", f"Unsupported $expand options '{options}'.")
        for alternative in re.split(r"\s+or\s+", filter_match.group(1), flags=re.I):
            id_match = _ID_EQ.match(alternative)
            if not id_match:
                raise GraphError(
                    400,
                    "ErrorInvalidUrlQueryFilter",
                    "The query filter contains one or more invalid nodes.",
                )
            if ids is not None:
                ids.add(normalize_property_id(id_match.group(1).replace("''", "'")))
    return Expansion(property_ids=frozenset(ids) if ids is not None else None)


def expanded_properties(record: EventRecord, expansion: Expansion) -> list[dict[str, str]]:
    return [
        {"id": original, "value": value}
        for key, (original, value) in record.extended.items()
        if expansion.property_ids is None or key in expansion.property_ids
    ]


# $filter -----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)
  | (?P<punct>[(),:])
  | (?P<word>[^\s(),':]+)
    """,
    re.X,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise _bad_filter()
        position = match.end()
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(_Tok(kind, match.group(kind)))
    return tokens


def _bad_filter() -> GraphError:
    return GraphError(
        400, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes."
    )


Predicate = Callable[[EventRecord, tuple[str, str] | None], bool]

_SIMPLE_FIELDS: dict[str, Callable[[EventRecord], Any]] = {
    "subject": lambda e: e.props.get("subject"),
    "icaluid": lambda e: e.ical_uid,
    "transactionid": lambda e: e.transaction_id,
    "showas": lambda e: e.props.get("showAs"),
    "sensitivity": lambda e: e.props.get("sensitivity"),
    "importance": lambda e: e.props.get("importance"),
    "type": lambda e: e.type,
    "seriesmasterid": lambda e: e.series_master_id,
    "isallday": lambda e: e.is_all_day,
    "iscancelled": lambda e: bool(e.props.get("isCancelled")),
    "id": lambda e: e.id,
}
_TIME_FIELDS: dict[str, Callable[[EventRecord], datetime]] = {
    "start/datetime": lambda e: e.start,
    "end/datetime": lambda e: e.end,
    "createddatetime": lambda e: e.created,
    "lastmodifieddatetime": lambda e: e.last_modified,
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a is not None and a > b,
    "ge": lambda a, b: a is not None and a >= b,
    "lt": lambda a, b: a is not None and a < b,
    "le": lambda a, b: a is not None and a <= b,
}
_TEXT_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda hay, needle: needle in hay,
    "startswith": lambda hay, needle: hay.startswith(needle),
    "endswith": lambda hay, needle: hay.endswith(needle),
}


class _FilterParser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.tokens = tokens
        self.position = 0
        self.variable: str | None = None

    def peek(self) -> _Tok | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self, kind: str | None = None, text: str | None = None) -> _Tok:
        token = self.peek()
        if token is None or (kind and token.kind != kind):
            raise _bad_filter()
        if text is not None and token.text.lower() != text:
            raise _bad_filter()
        self.position += 1
        return token

    def parse(self) -> Predicate:
        predicate = self.conjunction()
        if self.peek() is not None:
            raise _bad_filter()
        return predicate

    def conjunction(self) -> Predicate:
        terms = [self.term()]
        while (token := self.peek()) is not None and token.kind == "word":
            if token.text.lower() != "and":
                raise _bad_filter()
            self.take()
            terms.append(self.term())
        if len(terms) == 1:
            return terms[0]
        return lambda record, ep: all(term(record, ep) for term in terms)

    def term(self) -> Predicate:
        token = self.take()
        if token.kind == "punct" and token.text == "(":
            inner = self.conjunction()
            self.take("punct", ")")
            return inner
        if token.kind != "word":
            raise _bad_filter()
        name = token.text.lower()
        if name in _TEXT_FUNCTIONS:
            return self.text_function(name)
        if name.endswith("/any"):
            return self.any_clause(name[: -len("/any")])
        return self.comparison(name)

    def literal(self) -> Any:
        token = self.take()
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'")
        if token.kind == "datetime":
            return parse_query_date_time(token.text, "$filter")
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true"
        if token.kind == "word" and token.text.lower() == "null":
            return None
        raise _bad_filter()

    def text_function(self, name: str) -> Predicate:
        self.take("punct", "(")
        field = self.take("word").text.lower()
        self.take("punct", ",")
        needle = self.literal()
        self.take("punct", ")")
        if not isinstance(needle, str):
            raise _bad_filter()
        test = _TEXT_FUNCTIONS[name]
        lowered = needle.lower()
        if self.variable and field == f"{self.variable}/value":
            return lambda record, ep: ep is not None and test(ep[1].lower(), lowered)
        getter = _SIMPLE_FIELDS.get(field)
        if getter is None:
            raise _bad_filter()
        return lambda record, ep: test(str(getter(record) or "").lower(), lowered)

    def comparison(self, field: str) -> Predicate:
        operator = self.take("word").text.lower()
        compare = _COMPARE.get(operator)
        if compare is None:
            raise _bad_filter()
        value = self.literal()
        if self.variable and field == f"{self.variable}/id":
            if operator != "eq" or not isinstance(value, str):
                raise _bad_filter()
            wanted = normalize_property_id(value)
            return lambda record, ep: ep is not None and ep[0] == wanted
        if self.variable and field == f"{self.variable}/value":
            text = str(value).lower()
            return lambda record, ep: ep is not None and compare(ep[1].lower(), text)
        time_getter = _TIME_FIELDS.get(field)
        if time_getter is not None:
            moment = value if isinstance(value, datetime) else None
            if isinstance(value, str):
                moment = parse_query_date_time(value, "$filter")
            if moment is None:
                raise _bad_filter()
            return lambda record, ep: compare(time_getter(record), moment)
        getter = _SIMPLE_FIELDS.get(field)
        if getter is None:
            raise _bad_filter()
        if isinstance(value, str):
            text = value.lower()
            return lambda record, ep: compare(str(getter(record) or "").lower(), text)
        return lambda record, ep: compare(getter(record), value)

    def any_clause(self, collection: str) -> Predicate:
        if collection != "singlevalueextendedproperties" or self.variable is not None:
            raise _bad_filter()
        self.take("punct", "(")
        self.variable = self.take("word").text.lower()
        self.take("punct", ":")
        inner = self.conjunction()
        self.take("punct", ")")
        self.variable = None

        def any_property(record: EventRecord, ep: tuple[str, str] | None) -> bool:
            return any(inner(record, (key, value)) for key, (_, value) in record.extended.items())

        return any_property


def parse_filter(text: str | None) -> Callable[[EventRecord], bool] | None:
    """Compile ``$filter`` into a predicate on stored events. Raises GraphError(400)."""
    if not text or not text.strip():
        return None
    predicate = _FilterParser(_tokenize(text)).parse()
    return lambda record: predicate(record, None)
