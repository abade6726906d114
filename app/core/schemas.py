"""Request validation (pydantic, unknown fields rejected) and fast response serialisation.

Responses are plain dicts built from a field list (about 5x cheaper than pydantic dumping a page);
the same `Out` models describe them in the OpenAPI document, and a test checks they agree.
"""

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar

import orjson
from email_validator import EmailNotValidError, validate_email
from flask import request
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, field_validator
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


Email = Annotated[str, AfterValidator(_email)]


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
    datetime field, in every body, is checked against the range above (here, so no field can forget)."""

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


def parse_body(schema: type[BaseModel]):
    data = json_body()
    if not isinstance(data, dict):
        raise ValidationFailed({"body": "must be a JSON object"})
    return parse(schema, data)


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
        day = date.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValidationFailed({name: "must be a date, YYYY-MM-DD"}) from None
    if not date_in_range(day):
        raise ValidationFailed({name: DATE_RANGE})
    return day


def parse_datetime(value: str, name: str) -> datetime:
    """In UTC, without an offset meaning UTC: SQLite compares the text without the offset."""
    try:
        moment = as_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except (TypeError, ValueError, AttributeError):
        raise ValidationFailed({name: "must be an ISO 8601 date-time"}) from None
    if not date_in_range(moment):
        raise ValidationFailed({name: DATE_RANGE})
    return moment
