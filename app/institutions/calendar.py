"""The school's calendar: its time zone, its "today", and where its local days begin in UTC.

A school works in local days (a Nairobi school's Monday starts before UTC's); timestamps are stored in
UTC. A school without a zone, with an unknown one, or a host without a tz database counts in UTC.
"""

from datetime import UTC, date, datetime, time, tzinfo
from zoneinfo import ZoneInfo

from flask import g, has_request_context
from sqlalchemy import select

from app.core.tenancy import current_institution_id
from app.extensions import db
from app.institutions.models import Institution


def zone(name: str | None) -> tzinfo:
    """The named zone; UTC when there is no name or the name is not a zone this host knows."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except Exception:  # noqa: BLE001 - unknown or malformed name, or no tz database
        return UTC


def _current_zone_name() -> str | None:
    iid = current_institution_id()
    if not has_request_context():
        return _zone_name_of(iid)
    # Read once per request: a date-range filter asks for two day boundaries. Keyed by the request id
    # because one app context can outlive a request (tests, the CLI), see app/core/requestctx.py.
    key = (iid, g.get("request_id"))
    memo = g.get("_school_zone")
    if memo is None or memo[0] != key:
        memo = g._school_zone = (key, _zone_name_of(iid))
    return memo[1]


def _zone_name_of(institution_id) -> str | None:
    return db.session.execute(
        select(Institution.timezone).where(Institution.id == institution_id)
    ).scalar_one_or_none()


def school_zone(institution: Institution | None = None) -> tzinfo:
    """The zone of `institution` (anything with a `timezone`), by default of the caller's school."""
    if institution is None:
        return zone(_current_zone_name())
    return zone(institution.timezone)


def school_today(institution: Institution | None = None) -> date:
    """Today in the school's zone."""
    return datetime.now(school_zone(institution)).date()


def day_start(day: date, institution: Institution | None = None) -> datetime:
    """Midnight at the start of the school's local `day`, as UTC (date filters mean local days)."""
    return datetime.combine(day, time(), school_zone(institution)).astimezone(UTC)
