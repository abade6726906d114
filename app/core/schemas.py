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
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic import Field as Field  # noqa: F401  (re-exported for schemas modules)
from pydantic_core import PydanticCustomError

from app.core.errors import ApiError, ValidationFailed
from app.core.models import as_utc

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


# Dates a school record can have. Outside them a value is a typo or a probe, and some cannot be stored
# or read back (year 1 at +14:00 is a year before 1 in UTC, which the database driver cannot read).
FIRST_YEAR, LAST_YEAR = 1900, 2100
DATE_RANGE = f"must be between {FIRST_YEAR}-01-01 and {LAST_YEAR}-12-31"


def date_in_range(value: date) -> bool:
    """A date or datetime (as given, in its own zone) in the years FIRST_YEAR to LAST_YEAR."""
    return FIRST_YEAR <= value.year <= LAST_YEAR


def _dates_in_range(value) -> bool:
    if isinstance(value, date):  # datetimes too
        return date_in_range(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_dates_in_range(v) for v in value)
    if isinstance(value, dict):
        return all(_dates_in_range(v) for v in value.values())
    return True  # nested bodies checked their own fields


class Body(BaseModel):
    """Base for request bodies: unknown fields are an error, never silently dropped; every date and
    datetime field, in every body, is checked against the range above (here, so no field can forget).

    In a PATCH body, `name: str = None` is a field that may be left out (the stored value is kept) but
    not set to null; `email: str | None = None` may also be null, which clears it. The document says
    the same (app/core/openapi.py)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    # Fields that exist on the resource but this caller may not set (e.g. one's own role).
    read_only: ClassVar[frozenset] = frozenset()

    @field_validator("*", mode="after")
    @classmethod
    def _date_range(cls, value):
        if not _dates_in_range(value):
            raise PydanticCustomError("date_range", DATE_RANGE)
        return value


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


# PostgreSQL text cannot hold NUL (U+0000): such a value is refused where the request is read (bodies
# here, query parameters in app/core/queryargs.py, cursors in app/core/cursor.py), never by the database.
NUL = "\x00"
HAS_NUL = "must not contain NUL characters"


def nul_errors(value: Any, path: str = "") -> dict:
    """{path: HAS_NUL} for every string (or object key) in a parsed JSON value that holds a NUL."""
    out: dict = {}
    if isinstance(value, str):
        if NUL in value:
            out[path or "body"] = HAS_NUL
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if NUL in key:
                out[where] = HAS_NUL
            out.update(nul_errors(item, where))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.update(nul_errors(item, f"{path}.{i}" if path else str(i)))
    return out


def json_body() -> Any:
    if not request.is_json:
        raise ApiError(415, "Send the body as application/json.")
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError(400, "The body is not valid JSON.")
    # JSON writes a NUL only as the escape \u0000, so bodies without that text are not walked.
    if b"\\u0000" in request.get_data() and (errors := nul_errors(data)):
        raise ValidationFailed(errors)
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


def _suspect_numbers(value) -> bool:
    """Whether a parsed JSON body holds a float or an integer past BIGINT: only then does _numbers walk
    it, building paths and copies (a roll of 40 marks has neither; bench/cpu.py's roll_call case)."""
    kind = type(value)  # exact types: JSON gives no subclasses, and a bool is not a number here
    if kind is int:
        return not INT_MIN <= value <= INT_MAX
    if kind is float:
        return True
    if kind is dict:
        return any(_suspect_numbers(v) for v in value.values())
    if kind is list:
        return any(_suspect_numbers(v) for v in value)
    return False


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
    changed = False
    if _suspect_numbers(data):
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


# Every datetime in an answer is UTC with `Z`: a naive one is UTC (SQLite gives them back naive, see
# app/core/models.py as_utc), and PostgreSQL sessions run in UTC (config.py engine_options), so
# no value reaches orjson in another zone.
JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


def dumps(obj) -> bytes:
    """The JSON of an answer, as every answer writes it (app/core/jsonprovider.py)."""
    return orjson.dumps(obj, default=json_default, option=JSON_OPTIONS)


def iso_utc(value: datetime) -> str:
    """A datetime as answers write it, for text kept to be sent later (the audit trail's changes)."""
    return as_utc(value).isoformat()[:-6] + "Z"


def parse_date(value: str, name: str) -> date:
    try:
        if not _DATE_TEXT.match(value):  # fromisoformat also reads 20260101 and 2026-W01-1
            raise ValueError(value)
        day = date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValidationFailed({name: "must be a date, YYYY-MM-DD"}) from None
    if not date_in_range(day):
        raise ValidationFailed({name: DATE_RANGE})
    return day


def parse_datetime(value: str, name: str) -> datetime:
    """In UTC, without an offset meaning UTC: SQLite compares the text without the offset."""
    try:
        if not _DATETIME_TEXT.match(value):  # the ISO 8601 forms the document gives, no others
            raise ValueError(value)
        moment = as_utc(datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")))
    except (TypeError, ValueError, AttributeError):
        raise ValidationFailed({name: "must be an ISO 8601 date-time"}) from None
    if not date_in_range(moment):
        raise ValidationFailed({name: DATE_RANGE})
    return moment
