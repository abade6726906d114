"""What the rostering and gradebook services share: the client's declaration (role, reach, scope),
sourcedIds, references, dates and grade codes."""

from datetime import UTC, date, datetime
from functools import wraps

from flask import g, request
from sqlalchemy import String, case, cast, literal

from app.core.auth import ONEROSTER, Reach, roles, security_event
from app.core.tenancy import current_institution_id
from app.oneroster.query import Field, OneRosterError

CLIENT_SCHOOL = Reach(
    "client's school",
    {ONEROSTER: "its own school's roster and gradebook, within its token's scopes"},
)


def oneroster_view(*scopes):
    """A OneRoster operation: only a client token (role, reach) holding one of `scopes` (else 403)."""

    def deco(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if not g.principal.scopes & set(scopes):
                security_event("access_denied", detail={"path": request.path, "role": ONEROSTER})
                raise OneRosterError(
                    403, f"This token lacks the scope: one of {', '.join(scopes)}.", "forbidden"
                )
            return view(*args, **kwargs)

        wrapper.oneroster_scopes = scopes  # type: ignore[attr-defined]  # read by tests/test_oneroster.py
        return roles(ONEROSTER, reach=CLIENT_SCHOOL)(wrapper)

    return deco


def sid(prefix, column):
    """SQL for a sourcedId: "<prefix>-<id>" (stable, and never the bare integer)."""
    return literal(f"{prefix}-", String) + cast(column, String)


def status_of(deleted):
    return case((deleted, "tobedeleted"), else_="active")


def later(a, b):
    """The later of two timestamps (GREATEST is not on SQLite)."""
    return case((a > b, a), else_=b)


def org_sid() -> str:
    return f"org-{current_institution_id()}"


def ref(service, collection, sourced_id, kind):
    if sourced_id is None:
        return None
    return {
        "href": f"{request.url_root}ims/oneroster/{service}/v1p2/{collection}/{sourced_id}",
        "sourcedId": sourced_id,
        "type": kind,
    }


def org_ref():
    return ref("rostering", "orgs", org_sid(), "org")


def stamp(value) -> str | None:
    """ISO 8601 UTC with milliseconds, as the binding writes DateTime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def grade_codes(level) -> list[str]:
    """A Schoolhouse grade level as the CEDS code OneRoster uses: 0 KG, 1..12 "01".."12", below PK."""
    if level is None:
        return []
    if level < 0:
        return ["PK"]
    if level == 0:
        return ["KG"]
    return [f"{level:02d}"]


def int_of(sourced_id: str, prefix: str) -> int | None:
    head, _, tail = sourced_id.rpartition("-")
    return int(tail) if head == prefix and tail.isdigit() and len(tail) < 19 else None


# Every record's common fields, as filters and sorts (app/oneroster/query.py) and as output.
BASE = {
    "sourcedId": Field("sourcedId"),
    "status": Field("status"),
    "dateLastModified": Field("dlm", "datetime"),
}


def school_id():
    return current_institution_id()


def base_of(row):
    return {"sourcedId": row["sourcedId"], "status": row["status"], "dateLastModified": stamp(row["dlm"])}


def rostering_ref(collection, sourced_id, kind):
    return ref("rostering", collection, sourced_id, kind)
