"""Query parameters declared once per endpoint: the parsing, the unknown-parameter check and the
OpenAPI parameters all come from the same declaration.

A `QueryArgs` lists the `Param`s an endpoint accepts; each `Param` has a `Kind` (how its text becomes
a value, and how the OpenAPI document describes it). Lists declare theirs through
app/core/pagination.py's ListSpec, which builds a QueryArgs the same way. Errors are 422s naming the
parameter, like a body field: an unknown parameter is never silently ignored.
"""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import request
from sqlalchemy import Boolean, Date, DateTime, Integer
from werkzeug.datastructures import MultiDict

from app.core.errors import ValidationFailed
from app.core.schemas import (
    DATE_PATTERN,
    DATETIME_PATTERN,
    HAS_NUL,
    INT_MAX,
    INT_MIN,
    NUL,
    OUT_OF_RANGE,
    parse_date,
    parse_datetime,
)

UNKNOWN = "is not a known query parameter"


@dataclass(frozen=True)
class Kind:
    """parse(raw, name) -> value, raising ValidationFailed({name: ...}); schema: the OpenAPI schema, or a
    function giving it when the document is built (values from the app's config)."""

    schema: dict | Callable[[], dict]
    parse: Callable[[str, str], Any]


def _text(raw: str, name: str) -> str:
    return raw


# Plain digits (int() would also read " 7", "+7", "7_0" and other scripts' digits); "7.0" is the integer
# 7 in JSON Schema, so it is one here too.
_DIGITS = re.compile(r"^(-?[0-9]+)(\.0+)?$")


def _integer(raw: str, name: str) -> int:
    match = _DIGITS.match(raw)
    if match is None:
        raise ValidationFailed({name: "must be an integer"})
    value = int(match.group(1))
    if not INT_MIN <= value <= INT_MAX:
        raise ValidationFailed({name: OUT_OF_RANGE})
    return value


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
# The same words as a pattern, in any case, for the document (JSON Schema patterns have no flags).
_BOOLEAN_PATTERN = "^(" + "|".join("".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in w)
                              for w in _TRUE + _FALSE) + ")$"  # fmt: skip


def _boolean(raw: str, name: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ValidationFailed({name: "must be true or false"})


TEXT = Kind({"type": "string"}, _text)
INTEGER = Kind({"type": "integer", "minimum": INT_MIN, "maximum": INT_MAX}, _integer)
BOOLEAN = Kind(
    {"type": "string", "pattern": _BOOLEAN_PATTERN, "description": "true or false (also 1/0, yes/no)"},
    _boolean,
)
DATE = Kind({"type": "string", "format": "date", "pattern": DATE_PATTERN}, parse_date)
DATETIME = Kind(
    {"type": "string", "pattern": DATETIME_PATTERN, "description": "ISO 8601; without an offset: UTC"},
    parse_datetime,
)


def integer(low: int, high: int, message: str | None = None) -> Kind:
    """An integer from low to high inclusive."""
    message = message or f"must be between {low} and {high}"

    def parse(raw: str, name: str) -> int:
        value = _integer(raw, name)
        if not low <= value <= high:
            raise ValidationFailed({name: message})
        return value

    return Kind({"type": "integer", "minimum": low, "maximum": high}, parse)


def one_of(*values: str) -> Kind:
    """One of a fixed set of strings (an enum in the document)."""
    allowed = frozenset(values)
    message = f"must be one of {', '.join(values)}"

    def parse(raw: str, name: str) -> str:
        if raw not in allowed:
            raise ValidationFailed({name: message})
        return raw

    return Kind({"type": "string", "enum": list(values)}, parse)


def matching(pattern: str, message: str) -> Kind:
    """Text matching a regular expression (documented as the same pattern)."""
    compiled = re.compile(pattern)

    def parse(raw: str, name: str) -> str:
        if not compiled.match(raw):
            raise ValidationFailed({name: message})
        return raw

    return Kind({"type": "string", "pattern": pattern}, parse)


def raw_as(schema: dict) -> Kind:
    """Documented as `schema` but handed over as text: for a value its service parses itself."""
    return Kind(schema, _text)


def kind_of(column) -> Kind:
    """The kind of a `column == value` filter, from the column's SQL type."""
    t = column.type
    if isinstance(t, Boolean):
        return BOOLEAN
    if isinstance(t, Integer):
        return INTEGER
    if isinstance(t, Date):
        return DATE
    if isinstance(t, DateTime):
        return DATETIME  # parsed here: text the database cannot read as a timestamp is a 422, not a 500
    return TEXT


@dataclass(frozen=True)
class Param:
    """One query parameter: its name, kind and what its absence means."""

    name: str
    kind: Kind = TEXT
    default: Any = None  # the value when absent; a callable is called (a default from config)
    required: bool = False
    blank_is_absent: bool = False  # "?from=" means no `from` (else the empty text is parsed)
    description: str | None = None
    rule: str | None = None  # what JSON Schema cannot state (app/core/schemas.py's rule())

    def value(self, args: Mapping[str, str]):
        raw = args.get(self.name)
        if raw is None or (self.blank_is_absent and raw == ""):
            if self.required:
                raise ValidationFailed({self.name: "is required"})
            return self.default() if callable(self.default) else self.default
        return self.kind.parse(raw, self.name)

    def openapi(self) -> dict:
        schema = self.kind.schema
        schema = schema() if callable(schema) else schema
        if self.blank_is_absent:  # "?from=" is accepted, as no value
            schema = {"anyOf": [schema, {"type": "string", "maxLength": 0}]}
        out = {"name": self.name, "in": "query", "required": self.required, "schema": schema}
        if self.description:
            out["description"] = self.description
        if self.rule:
            out["x-rule"] = self.rule
        return out


def reject_unknown(args: Mapping[str, str], known: frozenset) -> None:
    """Every endpoint's query parameters pass here before any is read: a name or value holding a NUL
    (see app/core/schemas.py) and a name the endpoint does not declare are 422s naming them."""
    pairs = args.items(multi=True) if isinstance(args, MultiDict) else args.items()
    nul = {name: HAS_NUL for name, value in pairs if NUL in name or NUL in value}
    if nul:
        raise ValidationFailed(nul)
    if not known.issuperset(args):
        unknown = sorted(set(args) - known)
        raise ValidationFailed(dict.fromkeys(unknown, UNKNOWN))


class QueryArgs:
    """The query parameters of one endpoint, in the order the document lists them."""

    __slots__ = ("names", "params")

    def __init__(self, *params: Param):
        self.params = params
        self.names = frozenset(p.name for p in params)

    def check(self, args: Mapping[str, str] | None = None) -> None:
        reject_unknown(request.args if args is None else args, self.names)

    def parse(self, args: Mapping[str, str] | None = None) -> dict[str, Any]:
        """{name: value} for every declared parameter, after the unknown-parameter check."""
        args = request.args if args is None else args
        reject_unknown(args, self.names)
        return {p.name: p.value(args) for p in self.params}

    def parameters(self) -> list[dict]:
        return [p.openapi() for p in self.params]
