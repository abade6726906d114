"""Roll call, attendance history and summaries, QR check-in: parse, call a service, serialise."""

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select

from app.access.rules import class_in_scope_or_404, student_in_scope_or_404
from app.attendance import services
from app.attendance.models import AttendanceRecord
from app.attendance.schemas import (
    MAX_PERIOD,
    AbsenteesOut,
    CheckinIn,
    CheckinOut,
    HistoryOut,
    RollIn,
    RollOut,
    RollSavedOut,
    SessionCreatedOut,
    SessionIn,
    SessionOut,
    SummaryOut,
    parse_roll,
)
from app.core.admission import cached
from app.core.auth import roles
from app.core.caching import MEDIUM
from app.core.errors import ValidationFailed
from app.core.idempotency import run_idempotent
from app.core.openapi import doc
from app.core.pagination import ListSpec, apply_list, page_response, page_size
from app.core.schemas import parse_body, parse_date
from app.extensions import db
from app.institutions.calendar import school_today

bp = Blueprint("attendance", __name__)

STAFF = ("admin", "teacher")
ALL = ("admin", "teacher", "guardian", "student", "accountant")


def _args(allowed):
    """Query parameters from an allow-list (an unknown one is a 422, never silently ignored)."""
    unknown = set(request.args) - set(allowed)
    if unknown:
        raise ValidationFailed({k: "is not a known query parameter" for k in sorted(unknown)})
    return request.args


def _int_arg(name, low, high, default=None):
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed({name: "must be an integer"}) from None
    if not low <= value <= high:
        raise ValidationFailed({name: f"must be between {low} and {high}"})
    return value


def _date_arg(name):
    raw = request.args.get(name)
    return None if raw is None or raw == "" else parse_date(raw, name)


def _range():
    frm, to = _date_arg("from"), _date_arg("to")
    if frm and to and frm > to:
        raise ValidationFailed({"from": "must not be after to"})
    return frm, to


def _roll_key():
    _args(("subject_id", "period"))
    return _int_arg("subject_id", 1, 2**31 - 1), _int_arg("period", 0, MAX_PERIOD, 0)


# --- roll call -------------------------------------------------------------------------------------------


@bp.get("/classes/<int:ident>/attendance/<day>")
@roles(*STAFF)
@doc(
    "The roll of a class on a date (unmarked students have status null)",
    out=RollOut,
    tags=["attendance"],
    query=["subject_id", "period"],
)
def get_roll(ident, day):
    klass = class_in_scope_or_404(ident, g.principal)
    day = parse_date(day, "date")
    subject_id, period = _roll_key()
    errors = {}
    services.check_subject(klass.id, subject_id, errors)
    if errors:
        raise ValidationFailed(errors)
    return jsonify(services.read_roll(klass.id, day, subject_id, period))


@bp.put("/classes/<int:ident>/attendance/<day>")
@roles(*STAFF)
@doc(
    "Take the roll: the whole class on a date, optionally for one subject or period",
    body=RollIn,
    out=RollSavedOut,
    tags=["attendance"],
    description="Idempotent: a resent roll changes nothing (counts show it). Honours Idempotency-Key. "
    "Every student must be enrolled in the class on that date; the date must be in a term "
    "and not in the future. Invalid rolls are rejected whole (422), nothing is written.",
)
def put_roll(ident, day):
    klass = class_in_scope_or_404(ident, g.principal)
    day = parse_date(day, "date")
    _args(())
    body = parse_roll()
    payload = {"class_id": klass.id, "date": day.isoformat(), **body.model_dump()}
    return run_idempotent(
        "attendance.put_roll", payload, lambda: (services.save_roll(klass, day, body, g.principal), 200)
    )


# --- history and summaries -------------------------------------------------------------------------------

HISTORY_SPEC = ListSpec(
    AttendanceRecord.id,
    filters={"status": AttendanceRecord.status},
    sorts={"date": AttendanceRecord.date},
    default_sort="-date",
    extra_params=("from", "to"),
)


@bp.get("/students/<int:ident>/attendance")
@roles(*ALL)
@cached(
    "attendance_records",
    "students",
    "enrolments",
    "classes",
    "class_subjects",
    "student_guardians",
    ttl=MEDIUM,
)
@doc(
    "A student's attendance history, newest first, with totals and rate for the range",
    out=HistoryOut,
    tags=["attendance"],
    query=["from", "to", "status", "limit", "cursor", "sort"],
)
def student_history(ident):
    student_in_scope_or_404(ident, g.principal)
    frm, to = _range()
    stmt = services.history_filter(select(AttendanceRecord), ident, frm, to)
    stmt, limit, sort, col = apply_list(stmt, HISTORY_SPEC)
    rows = db.session.execute(stmt).scalars().all()
    totals = services.history_totals(ident, frm, to)
    return page_response(
        rows,
        limit,
        sort,
        col,
        services.record_out,
        student_id=ident,
        **{"from": frm, "to": to},
        totals=totals,
        rate=services.rate(totals["present"] + totals["late"], totals["marked"]),
    )


@bp.get("/attendance/summary")
@roles(*STAFF)
@doc(
    "Daily attendance: per class and for the school (teachers: their classes)",
    out=SummaryOut,
    tags=["attendance"],
    query=["date", "class_id", "period", "subject_id"],
)
def summary():
    _args(("date", "class_id", "period", "subject_id"))
    day = _date_arg("date") or school_today()
    class_id = _int_arg("class_id", 1, 2**31 - 1)
    if class_id is not None:
        class_in_scope_or_404(class_id, g.principal)
    subject_id, period = _int_arg("subject_id", 1, 2**31 - 1), _int_arg("period", 0, MAX_PERIOD, 0)
    return jsonify(services.daily_summary(day, period, subject_id, g.principal, class_id))


@bp.get("/attendance/chronic-absentees")
@roles(*STAFF)
@doc(
    "Students whose attendance rate over a range is below a threshold, lowest first",
    out=AbsenteesOut,
    tags=["attendance"],
    query=["from", "to", "threshold", "limit", "cursor"],
    description="Defaults: to = today, from = the start of that term, threshold = the institution's "
    "absence_threshold. Rate = (present + late) / marked.",
)
def chronic_absentees():
    _args(("from", "to", "threshold", "limit", "cursor"))
    frm, to = services.default_range(*_range())
    if frm > to:
        raise ValidationFailed({"from": "must not be after to"})
    threshold = services.parse_threshold(request.args.get("threshold"), services.absence_threshold())
    return jsonify(
        services.chronic_absentees(frm, to, threshold, g.principal, page_size(), request.args.get("cursor"))
    )


# --- QR check-in -----------------------------------------------------------------------------------------


@bp.post("/classes/<int:ident>/attendance-sessions")
@roles(*STAFF)
@doc(
    "Open a QR check-in window for today's lesson (token + SVG QR code)",
    body=SessionIn,
    out=SessionCreatedOut,
    status=201,
    tags=["attendance"],
)
def open_session(ident):
    klass = class_in_scope_or_404(ident, g.principal)
    body = parse_body(SessionIn)
    out = services.open_session(klass, body, g.principal)
    db.session.commit()
    return jsonify(out), 201


@bp.get("/attendance-sessions/<int:ident>")
@roles(*STAFF)
@doc("A QR check-in session (without its token)", out=SessionOut, tags=["attendance"])
def get_session(ident):
    return jsonify(services.session_out(services.session_in_scope_or_404(ident, g.principal)))


@bp.post("/attendance/check-in")
@roles("student")
@doc(
    "Check in with a QR code: marks the student present (once per session)",
    body=CheckinIn,
    out=CheckinOut,
    status=201,
    tags=["attendance"],
)
def check_in():
    body = parse_body(CheckinIn)
    out = services.check_in(body.token, g.principal)
    db.session.commit()
    return jsonify(out), 201
