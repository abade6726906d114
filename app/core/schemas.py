"""Request validation (pydantic, unknown fields rejected) and fast response serialisation.

Responses are plain dicts built from a field list (about 5x cheaper than pydantic dumping a page);
the same `Out` models describe them in the OpenAPI document, and a test checks they agree.
"""

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar

import orjson
from email_validator import EmailNotValidError, validate_email
from flask import request
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError, WithJsonSchema
from pydantic import Field as Field  # noqa: F401  (re-exported for schemas modules)
from pydantic_core import PydanticCustomError

from app.core.errors import ApiError, ValidationFailed

# Never accepted from a client body, on any resource.
READ_ONLY = frozenset({"id", "institution_id", "institution", "created_at", "updated_at", "deleted_at"})


def _email(value: str) -> str:
    # test_environment: accept the reserved .test domain that demo and staging schools use.
    try:
        return validate_email(value, check_deliverability=False, test_environment=True).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


Email = Annotated[str, AfterValidator(_email), WithJsonSchema({"type": "string", "format": "email"})]


def rule(text: str) -> dict:
    """A rule a value must meet that JSON Schema cannot state, because it depends on stored records or on
    other fields ("a student enrolled in the class"): the document shows it as `x-rule` (a Field's
    json_schema_extra, a query Param's `rule`), and breaking it is a 422 naming the field."""
    return {"x-rule": text}


def _decimal(value):
    # Read here, as strict validation would not read the string form itself.
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            number = Decimal(value)
        except InvalidOperation:
            number = None
        if number is not None and number.is_finite():
            return number
    raise PydanticCustomError("decimal_text", 'must be a decimal string such as "12.50", or an integer')


def decimal_text(digits: int, places: int, *, minimum: str | None = None, positive=False):
    """A decimal with at most `digits` digits, `places` of them after the point, sent as a string
    ("12.50") or an integer, never a float (0.1 + 0.2 is not 0.3); documented exactly so: the pattern
    of the strings and the range of the integers. minimum: "0" (or none: any sign); positive: > 0."""
    whole = digits - places
    top = 10**whole - 1
    fraction = f"(\\.[0-9]{{1,{places}}})?"
    if positive:
        text = f"^([1-9][0-9]{{0,{whole - 1}}}{fraction}|0\\.([1-9][0-9]{{0,{places - 1}}}|0[1-9]))$"
        low: dict = {"minimum": 1}
    else:
        sign = "" if minimum == "0" else "-?"
        text = f"^{sign}(0|[1-9][0-9]{{0,{whole - 1}}}){fraction}$"
        low = {"minimum": 0} if minimum == "0" else {"minimum": -top}
    schema = {"anyOf": [{"type": "string", "pattern": text}, {"type": "integer", **low, "maximum": top}]}
    bounds: dict = {"gt": 0} if positive else ({"ge": 0} if minimum == "0" else {})
    return Annotated[
        Decimal,
        BeforeValidator(_decimal),
        Field(max_digits=digits, decimal_places=places, **bounds),
        WithJsonSchema(schema),
    ]


class Body(BaseModel):
    """Base for request bodies: unknown fields are an error, never silently dropped.

    In a PATCH body, `name: str = None` is a field that may be left out (the stored value is kept) but
    not set to null; `email: str | None = None` may also be null, which clears it. The document says
    the same (app/core/openapi.py)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    # Fields that exist on the resource but this caller may not set (e.g. one's own role).
    read_only: ClassVar[frozenset] = frozenset()


class Out(BaseModel):
    """Base for response descriptions (OpenAPI); serialisation uses `dump`."""

    model_config = ConfigDict(from_attributes=True)


# The dates a record can hold, as the document writes them (app/core/openapi.py): ISO 8601 calendar
# dates and date-times in the years 1900-2100.
_YEAR = "(19[0-9]{2}|20[0-9]{2}|2100)"
_DAY = _YEAR + "-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
DATE_PATTERN = f"^{_DAY}$"
DATETIME_PATTERN = f"^{_DAY}[Tt ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{{1,6}})?)?([Zz]|[+-](0[0-9]|1[0-4]):[0-5][0-9])?$"
_DATE_TEXT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_DATETIME_TEXT = re.compile(DATETIME_PATTERN.replace(_YEAR, "[0-9]{4}"))


def _loc(err):
    return ".".join(str(p) for p in err["loc"]) or "body"


def errors_from(exc: ValidationError, schema) -> dict:
    out = {}
    for err in exc.errors(include_url=False):
        field = _loc(err)
        if err["type"] == "extra_forbidden":
            top = str(err["loc"][0]) if err["loc"] else field
            out[field] = (
                "is read-only" if (top in READ_ONLY or top in schema.read_only) else "is not a known field"
            )
        elif err["type"] == "missing":
            out[field] = "is required"
        elif err.get("input", ...) is None:  # a field that may be left out, but not set to null
            out[field] = "must not be null"
        else:
            out[field] = err["msg"]
    return out


def json_body() -> Any:
    if not request.is_json:
        raise ApiError(415, "Send the body as application/json.")
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError(400, "The body is not valid JSON.")
    return data


def parse(schema: type[BaseModel], data: Any):
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(errors_from(exc, schema)) from None


# Integers the database and the JSON encoder can hold (BIGINT); the document gives every integer of a
# request body these bounds unless it has narrower ones (app/core/openapi.py).
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
OUT_OF_RANGE = f"must be between {INT_MIN} and {INT_MAX}"


def _numbers(value, path: str, errors: dict):
    """(value with integral floats as ints, whether any changed); numbers past BIGINT go into errors."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not INT_MIN <= value <= INT_MAX:  # JSON's big integers arrive as floats
            errors[path or "body"] = OUT_OF_RANGE
            return value, False
        if isinstance(value, float) and value.is_integer():
            return int(value), True
        return value, False
    if isinstance(value, dict):
        pairs = [(k, _numbers(v, f"{path}.{k}" if path else str(k), errors)) for k, v in value.items()]
        return {k: v for k, (v, _) in pairs}, any(c for _, (_, c) in pairs)
    if isinstance(value, list):
        items = [_numbers(v, f"{path}.{i}" if path else str(i), errors) for i, v in enumerate(value)]
        return [v for v, _ in items], any(c for _, c in items)
    return value, False


def parse_body(schema: type[BaseModel]):
    data = json_body()
    if not isinstance(data, dict):
        raise ValidationFailed({"body": "must be a JSON object"})
    # Validated as JSON, strictly: a value is taken only in the type the document gives it ("5" is not
    # an integer, 1 is not a date, "yes" is not a boolean), while dates and decimals still come as text.
    # 5.0 is an integer in JSON Schema, so it is one here too.
    errors: dict = {}
    data, changed = _numbers(data, "", errors)
    if errors:
        raise ValidationFailed(errors)
    raw = orjson.dumps(data) if changed else request.get_data()
    try:
        return schema.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise ValidationFailed(errors_from(exc, schema)) from None


def fields_of(out: type[Out]) -> tuple:
    return tuple(out.model_fields)


def dump(obj, fields: tuple) -> dict:
    return {f: getattr(obj, f) for f in fields}


def json_default(value):
    """orjson hook for the types it does not know: money and scores travel as decimal strings."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def parse_date(value: str, name: str) -> date:
    try:
        if not _DATE_TEXT.match(value):  # fromisoformat also reads 20260101 and 2026-W01-1
            raise ValueError(value)
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValidationFailed({name: "must be a date, YYYY-MM-DD"}) from None


def parse_datetime(value: str, name: str) -> datetime:
    try:
        if not _DATETIME_TEXT.match(value):  # the ISO 8601 forms the document gives, no others
            raise ValueError(value)
        return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except (TypeError, ValueError, AttributeError):
        raise ValidationFailed({name: "must be an ISO 8601 date-time"}) from None
