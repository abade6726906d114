"""What a clash with the stored records means to the client: a 409 that names it.

Domains register a message per constraint name in CONFLICTS when their blueprint is imported; a
unique or foreign-key clash without one still gets a 409 naming the constraint (app/core/errors.py
answers every IntegrityError that escapes a service this way), never a 500.
"""

import re

from sqlalchemy.exc import IntegrityError

# Unique-constraint (or unique-index) names -> what the client is told on a clash.
CONFLICTS: dict[str, str] = {}

_UNIQUE, _FOREIGN_KEY = "23505", "23503"  # PostgreSQL SQLSTATEs
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (.+)")


def clash_message(exc: IntegrityError) -> str | None:
    """The message for a unique or foreign-key clash; None for other integrity errors (a NOT NULL or
    CHECK the input validation should have caught is a bug, and stays a 500 so that it is seen)."""
    orig = exc.orig
    text = str(orig)
    for known, message in CONFLICTS.items():
        if known in text:
            return message
    code = getattr(orig, "pgcode", None)
    diag = getattr(orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if code == _UNIQUE:
        return f"A record with the same values already exists ({name})."
    if code == _FOREIGN_KEY:
        return f"The change conflicts with related records ({name})."
    sqlite = _SQLITE_UNIQUE.search(text)
    if sqlite:
        return f"A record with the same values already exists ({sqlite.group(1)})."
    if "FOREIGN KEY constraint failed" in text:
        return "The change conflicts with related records."
    return None
