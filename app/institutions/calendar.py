"""The school's calendar: its time zone, its "today", where its local days begin in UTC, and the days
it is closed.

A school works in local days (a Nairobi school's Monday starts before UTC's); timestamps are stored in
UTC. A school without a zone, with an unknown one, or a host without a tz database counts in UTC.

Closures (holidays, strike days, exam weeks) close the whole school (class_id NULL) or one class: no
roll is taken on them (app/attendance/services.py) and attendance statistics count only open days, by
leaving out the marks of closed days (`closed_clause`).
"""

from datetime import UTC, date, datetime, time, tzinfo
from functools import cache
from zoneinfo import ZoneInfo

from flask import g, has_request_context
from sqlalchemy import bindparam, exists, or_, select

from app.core.tenancy import current_institution_id, execute_reusable, reusable
from app.extensions import db
from app.institutions.models import Closure, Institution


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


@cache
def _zone_statement():
    return select(Institution.timezone).where(Institution.id == bindparam("iid"))


def _zone_name_of(institution_id) -> str | None:
    # Built once: every write that checks a date against the school's today asks it (a roll PUT does).
    return db.session.execute(_zone_statement(), {"iid": institution_id}).scalar_one_or_none()


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


def _covering(day_col, class_col, institution_col=None):
    cond = [
        Closure.start_date <= day_col,
        Closure.end_date >= day_col,
        or_(Closure.class_id.is_(None), Closure.class_id == class_col),
    ]
    if institution_col is not None:
        cond.append(Closure.institution_id == institution_col)
    return cond


@cache
def _closure_on_statement():
    """closure_on's statement, built once and scoped once per school: every roll PUT asks it (the check;
    the answer after a save knows the day is open). A NULL :class_id matches no class, so only
    school-wide closures then."""
    day = bindparam("day", type_=Closure.start_date.type)
    return reusable(
        select(Closure.id, Closure.name, Closure.kind, Closure.start_date, Closure.end_date, Closure.class_id)
        .where(*_covering(day, bindparam("class_id", type_=Closure.class_id.type)))
        .order_by(Closure.class_id.is_not(None), Closure.start_date, Closure.id)
        .limit(1)
    )


def closure_on(day: date, class_id: int | None):
    """The closure covering `day` for the class (or the whole school), the school-wide one first: a row
    with the closure's id, name, kind, start_date, end_date and class_id (describe_closure takes it)."""
    rows = execute_reusable(db.session, _closure_on_statement(), {"day": day, "class_id": class_id})
    return rows[0] if rows else None


def describe_closure(c) -> str:
    """A closure (a row of closure_on, or the model) in words, for the 422 that refuses a roll."""
    span = c.start_date.isoformat() if c.start_date == c.end_date else f"{c.start_date} to {c.end_date}"
    where = "the whole school" if c.class_id is None else "this class"
    return f"{c.name} ({c.kind}, {span}, closure {c.id} for {where})"


@cache
def _closure_between_statement(has_from: bool, has_to: bool):
    """any_closure_between's statement of each shape, built once and scoped once per school (it runs on
    every attendance statistic, as the student's history does)."""
    stmt = select(Closure.id)
    if has_from:
        stmt = stmt.where(Closure.end_date >= bindparam("closure_from", type_=Closure.end_date.type))
    if has_to:
        stmt = stmt.where(Closure.start_date <= bindparam("closure_to", type_=Closure.start_date.type))
    return reusable(stmt.limit(1))


def any_closure_between(frm: date | None, to: date | None) -> bool:
    """Whether any closure of the caller's school touches [frm, to] (open ends allowed): statistics skip
    the closed-day test, one cheap lookup, when none does."""
    params = {}
    if frm is not None:
        params["closure_from"] = frm
    if to is not None:
        params["closure_to"] = to
    stmt = _closure_between_statement(frm is not None, to is not None)
    return bool(execute_reusable(db.session, stmt, params))


def closed_clause(day_col, class_col, institution_col):
    """SQL: true where a closure of the row's school covers the row's day, for its class or the whole
    school. `~closed_clause(...)` keeps the marks of open days only."""
    return exists().where(*_covering(day_col, class_col, institution_col))


def open_days_only(stmt, day_col, class_col, institution_col, frm: date | None, to: date | None):
    """`stmt` restricted to rows on open days; unchanged when no closure touches the range."""
    if not any_closure_between(frm, to):
        return stmt
    return stmt.where(~closed_clause(day_col, class_col, institution_col))
