"""The password policy, applied wherever a password is set (new logins, invitations, resets, changes,
operators): at least 10 characters, and not a common password.

Common means on the list in app/auth/data (see its README: 20,000 passwords, the list Django ships),
compared without case, and also once trailing digits and symbols are taken off, so "Sunshine2024!" is
refused with "sunshine". The list is shipped rather than a service asked, so setting a password needs
no network and sends nothing anywhere.
"""

import gzip
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from app.core.schemas import rule

MIN_LENGTH = 10
MAX_LENGTH = 1024
COMMON_LIST = Path(__file__).resolve().parent / "data" / "common-passwords.txt.gz"
_TAIL = re.compile(r"[\W\d_]+$")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset:
    with gzip.open(COMMON_LIST, "rt", encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip())


def password_problem(password: str) -> str | None:
    """Why `password` may not be used, or None."""
    if len(password) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters long"
    if len(password) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters long"
    lowered = password.lower()
    common = common_passwords()
    if lowered in common or _TAIL.sub("", lowered) in common:
        return "is too common: choose a password that is not on lists of common passwords"
    return None


def _check(password: str) -> str:
    problem = password_problem(password)
    if problem:
        raise ValueError(problem)
    return password


# A password being set, in a request body: the policy gives the 422 naming the field. The document
# states the length and, as a rule, the list (app/core/schemas.py rule()).
NewPassword = Annotated[
    str,
    Field(
        max_length=MAX_LENGTH,
        json_schema_extra={"minLength": MIN_LENGTH, **rule("not a common password (app/auth/data)")},
    ),
    AfterValidator(_check),
]
