"""HTTP route templates, matched the way the Functions host (ASP.NET Core routing) does.

Supported: literal segments (case-insensitive), `{name}`, optional `{name?}`, defaults
`{name=value}`, catch-all `{*name}` / `{**name}`, complex segments such as
`{file}.{ext}`, and the common inline constraints (`int`, `long`, `bool`, `alpha`,
`guid`, `decimal`, `double`, `float`, `datetime`, `min`, `max`, `range`, `length`,
`minlength`, `maxlength`, `regex`, `required`). Unknown constraints are logged and
ignored rather than rejected, so an app using one still runs locally.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

logger = logging.getLogger(__name__)

Constraint = Callable[[str], bool]

# Ranks from ASP.NET's RoutePrecedence (inbound): lower is tried first.
_RANK_LITERAL = 1
_RANK_COMPLEX = 2
_RANK_CONSTRAINED = 3
_RANK_PARAMETER = 4
_RANK_CATCH_ALL = 5


class RouteTemplateError(ValueError):
    """A route template that cannot be parsed."""


@dataclass(frozen=True)
class RouteParameter:
    name: str
    group: str
    optional: bool
    default: str | None
    catch_all: bool
    constraints: tuple[Constraint, ...]


class RouteTemplate:
    """One function's route below the route prefix, e.g. `bookings/{id:guid}`."""

    def __init__(self, template: str, *, prefix: str = "api") -> None:
        self.template = template.strip().lstrip("~").strip("/")
        segments = [s for s in (prefix.strip("/"), self.template) if s]
        self.path_template = "/" + "/".join(segments)
        self.parameters: list[RouteParameter] = []
        pattern, ranks = self._compile("/".join(segments))
        self.precedence: tuple[int, ...] = ranks
        self._regex = re.compile(pattern, re.IGNORECASE | re.DOTALL)

    def __repr__(self) -> str:
        return f"RouteTemplate({self.path_template!r})"

    def match(self, raw_path: str) -> dict[str, str] | None:
        """Route values for a percent-encoded request path, or None if it does not match."""
        found = self._regex.match(raw_path)
        if found is None:
            return None
        values: dict[str, str] = {}
        for parameter in self.parameters:
            raw = found.group(parameter.group)
            if raw is None or raw == "":
                if parameter.default is not None:
                    values[parameter.name] = parameter.default
                elif not (parameter.optional or parameter.catch_all):
                    return None
                continue
            value = _decoded_except_slash(raw)
            if not all(check(value) for check in parameter.constraints):
                return None
            values[parameter.name] = value
        return values

    def _compile(self, template: str) -> tuple[str, tuple[int, ...]]:
        if not template:
            return r"^/?$", ()
        pattern = ["^"]
        ranks: list[int] = []
        raw_segments = template.split("/")
        for index, segment in enumerate(raw_segments):
            if not segment:
                raise RouteTemplateError(f"route '{template}' has an empty segment")
            parts = _split_segment(segment, template)
            if len(parts) == 1 and isinstance(parts[0], str):
                pattern.append("/" + re.escape(parts[0]))
                ranks.append(_RANK_LITERAL)
                continue
            if len(parts) == 1:
                parameter = self._parameter(parts[0][1], template)
                if parameter.catch_all:
                    if index != len(raw_segments) - 1:
                        raise RouteTemplateError(
                            f"route '{template}': a catch-all parameter must be the last segment"
                        )
                    pattern.append(f"(?:/(?P<{parameter.group}>.*))?")
                    ranks.append(_RANK_CATCH_ALL)
                elif parameter.optional or parameter.default is not None:
                    pattern.append(f"(?:/(?P<{parameter.group}>[^/]+))?")
                    ranks.append(_RANK_CONSTRAINED if parameter.constraints else _RANK_PARAMETER)
                else:
                    pattern.append(f"/(?P<{parameter.group}>[^/]+)")
                    ranks.append(_RANK_CONSTRAINED if parameter.constraints else _RANK_PARAMETER)
                continue
            pattern.append("/")
            for part in parts:
                if isinstance(part, str):
                    pattern.append(re.escape(part))
                    continue
                parameter = self._parameter(part[1], template)
                if parameter.catch_all:
                    raise RouteTemplateError(
                        f"route '{template}': a catch-all parameter cannot share a segment"
                    )
                quantifier = "*?" if parameter.optional else "+?"
                pattern.append(f"(?P<{parameter.group}>[^/]{quantifier})")
            ranks.append(_RANK_COMPLEX)
        pattern.append("/?$")
        return "".join(pattern), tuple(ranks)

    def _parameter(self, body: str, template: str) -> RouteParameter:
        catch_all = body.startswith("*")
        body = body.lstrip("*")
        optional = body.endswith("?")
        if optional:
            body = body[:-1]
        name, constraint_texts, default = _split_parameter(body, template)
        if not name or any(p.name.lower() == name.lower() for p in self.parameters):
            raise RouteTemplateError(f"route '{template}': bad or repeated parameter '{name}'")
        parameter = RouteParameter(
            name=name,
            group=f"p{len(self.parameters)}",
            optional=optional,
            default=default,
            catch_all=catch_all,
            constraints=tuple(
                c for c in (_constraint(t, template) for t in constraint_texts) if c is not None
            ),
        )
        self.parameters.append(parameter)
        return parameter


def _decoded_except_slash(raw: str) -> str:
    """Percent-decoded, except `%2F`: Kestrel decodes the request path but leaves an
    encoded slash encoded (so it cannot split a segment), and routing passes the value on
    as it is."""
    return "%2F".join(unquote(part) for part in re.split("%2[Ff]", raw))


def _split_segment(segment: str, template: str) -> list[str | tuple[None, str]]:
    """Literal text and `(None, parameter body)` parts of one path segment."""
    parts: list[str | tuple[None, str]] = []
    literal: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char in "{}" and segment[i : i + 2] == char * 2:
            literal.append(char)  # `{{` and `}}` are escaped braces
            i += 2
            continue
        if char == "}":
            raise RouteTemplateError(f"route '{template}': unmatched '}}'")
        if char != "{":
            literal.append(char)
            i += 1
            continue
        end, body = _parameter_body(segment, i + 1, template)
        if literal:
            parts.append("".join(literal))
            literal = []
        elif parts and not isinstance(parts[-1], str):
            raise RouteTemplateError(
                f"route '{template}': two parameters must be separated by literal text"
            )
        parts.append((None, body))
        i = end + 1
    if literal:
        parts.append("".join(literal))
    return parts


def _parameter_body(segment: str, start: int, template: str) -> tuple[int, str]:
    """Index of the closing brace and the text between the braces."""
    depth = 0
    body: list[str] = []
    i = start
    while i < len(segment):
        char = segment[i]
        if char in "{}" and segment[i : i + 2] == char * 2:
            body.append(char)
            i += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "}" and depth <= 0:
            return i, "".join(body)
        elif char == "{" and depth <= 0:
            raise RouteTemplateError(f"route '{template}': nested '{{'")
        body.append(char)
        i += 1
    raise RouteTemplateError(f"route '{template}': unmatched '{{'")


def _split_parameter(body: str, template: str) -> tuple[str, list[str], str | None]:
    """`name:c1:c2(x)=default` -> (name, [c1, c2(x)], default)."""
    pieces: list[str] = []
    current: list[str] = []
    depth = 0
    default: str | None = None
    for i, char in enumerate(body):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if depth == 0 and char == ":":
            pieces.append("".join(current))
            current = []
            continue
        if depth == 0 and char == "=":
            default = body[i + 1 :]
            break
        current.append(char)
    pieces.append("".join(current))
    name, constraints = pieces[0].strip(), [p.strip() for p in pieces[1:]]
    if any(not c for c in constraints):
        raise RouteTemplateError(f"route '{template}': empty constraint in '{{{body}}}'")
    return name, constraints, default


_CONSTRAINT = re.compile(r"^(?P<name>[A-Za-z]+)(?:\((?P<args>.*)\))?$", re.DOTALL)


def _constraint(text: str, template: str) -> Constraint | None:
    match = _CONSTRAINT.match(text)
    if match is None:
        raise RouteTemplateError(f"route '{template}': cannot read constraint '{text}'")
    name, args = match["name"].lower(), match["args"]
    try:
        return _build_constraint(name, args)
    except (ValueError, re.error) as error:
        raise RouteTemplateError(f"route '{template}': bad constraint '{text}': {error}") from error


def _build_constraint(name: str, args: str | None) -> Constraint | None:
    numbers = [int(a) for a in args.split(",")] if args and name != "regex" else []
    simple: dict[str, Constraint] = {
        "int": lambda v: _is_int(v, 32),
        "long": lambda v: _is_int(v, 64),
        "bool": lambda v: v.lower() in ("true", "false"),
        "alpha": lambda v: v.isascii() and v.isalpha(),
        "guid": _is_guid,
        "decimal": _is_number,
        "double": _is_number,
        "float": _is_number,
        "datetime": _is_datetime,
        "required": lambda v: v != "",
    }
    if name in simple:
        return simple[name]
    if name == "regex":
        compiled = re.compile(args or "", re.IGNORECASE)
        return lambda v: compiled.search(v) is not None
    if name in ("min", "max") and len(numbers) == 1:
        bound = numbers[0]
        if name == "min":
            return lambda v: _is_int(v, 64) and int(v) >= bound
        return lambda v: _is_int(v, 64) and int(v) <= bound
    if name == "range" and len(numbers) == 2:
        low, high = numbers
        return lambda v: _is_int(v, 64) and low <= int(v) <= high
    if name in ("minlength", "maxlength") and len(numbers) == 1:
        size = numbers[0]
        if name == "minlength":
            return lambda v: len(v) >= size
        return lambda v: len(v) <= size
    if name == "length" and len(numbers) in (1, 2):
        low, high = (numbers[0], numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])
        return lambda v: low <= len(v) <= high
    if name in ("min", "max", "range", "minlength", "maxlength", "length"):
        raise ValueError(f"wrong number of arguments for '{name}'")
    logger.warning("Route constraint '%s' is not known to the local host; ignoring it", name)
    return None


def _is_int(value: str, bits: int) -> bool:
    if not re.fullmatch(r"[+-]?\d+", value):
        return False
    limit = 1 << (bits - 1)
    return -limit <= int(value) < limit


def _is_number(value: str) -> bool:
    return re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", value) is not None


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
