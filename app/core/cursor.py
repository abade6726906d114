"""The one cursor codec: a short list of JSON values, base64url without padding.

Lists (app/core/pagination.py) put [sort, last sort value, last id] in it; other keyset pages (the
chronic absentees in app/attendance/services.py) their own keys. A cursor the client changed, cut or
invented is the same 422 everywhere.
"""

import base64
from typing import Any

import orjson

from app.core.errors import ValidationFailed

BAD_CURSOR = "is not a cursor this API issued"


def encode_cursor(values: list) -> str:
    """Dates and datetimes become ISO strings (orjson); decode gives them back as strings."""
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(raw: str, *kinds: type | tuple[type, ...]) -> list[Any]:
    """The values of a cursor encode_cursor made, one per kind (the type, or types, each must have;
    bool is never an int here); garbage, another length, a wrong type or a NUL in a string is a 422."""
    try:
        values = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:  # bad base64 (binascii.Error) and bad JSON are both ValueErrors
        values = None
    if (
        isinstance(values, list)
        and len(values) == len(kinds)
        and all(_is(v, k) for v, k in zip(values, kinds, strict=True))
        and not any(isinstance(v, str) and "\x00" in v for v in values)  # PostgreSQL text holds no NUL
    ):
        return values
    raise ValidationFailed({"cursor": BAD_CURSOR})


def _is(value, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
