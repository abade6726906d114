"""Roll call, attendance history and summaries, QR check-in: parse, call a service, serialise."""

from flask import Blueprint, g, jsonify

from app.access.rules import (
    CLASSES,
    STUDENTS,
    class_in_scope_or_404,
    student_in_reach,
)
from app.attendance import services
from app.attendance.models import STATUSES, AttendanceCode, AttendanceRecord
from app.attendance.schemas import (
    MAX_PERIOD,
    AbsenteesOut,
    CheckinIn,
    CheckinOut,
    CodeCreate,
    CodeOut,
    CodeUpdate,
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
from app.core.auth import SELF, roles
from app.core.caching import LONG, MEDIUM, scoped
from app.core.crud import CONFLICTS, Resource
from app.core.errors import NotFound, ValidationFailed
from app.core.idempotency import run_idempotent
from app.core.openapi import doc
from app.core.pagination import CURSOR, LIMIT, Choice, ListSpec, page_response, prepared_list
from app.core.queryargs import DATE, Param, QueryArgs, integer, matching
from app.core.schemas import parse_body, parse_date
from app.core.tenancy import execute_reusable
from app.extensions import db
from app.institutions.calendar import school_today

bp = Blueprint("attendance", __name__)

STAFF = ("admin", "teacher")
ALL = ("admin", "teacher", "guardian", "student", "accountant")


CONFLICTS.update(
    {"uq_attendance_codes_institution_code": "This school already has an attendance code like this."}
)

# The school's own attendance codes; a roll may carry one (the status it counts as comes with it).
# Deleting a code that marks carry is a 409 (ON DELETE RESTRICT); its status cannot be changed.
codes = Resource(
    "attendance code",
    "/attendance-codes",
    AttendanceCode,
    CodeOut,
    ListSpec(
        AttendanceCode.id,
        filters={"status": Choice(AttendanceCode.status, STATUSES), "code": AttendanceCode.code},
        sorts={"code": AttendanceCode.code},
        default_sort="code",
    ),
    create=CodeCreate,
    update=CodeUpdate,
).register(bp)

# Query parameters here read an empty value ("?period=") as absent.
_ID = integer(1, 2**31 - 1)
SUBJECT = Param("subject_id", _ID, blank_is_absent=True)
PERIOD = Param("period", integer(0, MAX_PERIOD), default=0, blank_is_absent=True)
FROM = Param("from", DATE, blank_is_absent=True, description="First date (inclusive).", rule="not after to")
TO = Param("to", DATE, blank_is_absent=True, description="Last date (inclusive).")
NO_ARGS = QueryArgs()


def _ordered(frm, to):
    if frm and to and frm > to:
        raise ValidationFailed({"from": "must not be after to"})
    return frm, to


# --- roll call -------------------------------------------------------------------------------------------

ROLL_ARGS = QueryArgs(SUBJECT, PERIOD)


@bp.get("/classes/<int:ident>/attendance/<day>")
@roles(*STAFF, reach=CLASSES)
@doc(
    "The roll of a class on a date (unmarked students have status null)",
    out=RollOut,
    tags=["attendance"],
    query=ROLL_ARGS,
    path={"day": DATE.schema},
    rules={"subject_id": "a subject taught in the class"},
)
def get_roll(ident, day):
    klass = class_in_scope_or_404(ident, g.principal)
    day = parse_date(day, "date")
    args = ROLL_ARGS.parse()
    subject_id, period = args["subject_id"], args["period"]
    errors = {}
    services.check_subject(klass.id, subject_id, errors)
    if errors:
        raise ValidationFailed(errors)
    return jsonify(services.read_roll(klass.id, day, subject_id, period))


@bp.put("/classes/<int:ident>/attendance/<day>")
@roles(*STAFF, reach=CLASSES)
@doc(
    "Take the roll: the whole class on a date, optionally for one subject or period",
    body=RollIn,
    out=RollSavedOut,
    tags=["attendance"],
    query=NO_ARGS,
    path={"day": DATE.schema},
    rules={
        "date": "in a term, not in the future",
        "subject_id": "a subject taught in the class (with a period: that lesson's subject)",
        "period": "where the bell schedule has periods that weekday: one the class has a lesson in",
    },
    idempotent=True,
    description="Idempotent: a resent roll changes nothing (counts show it). Honours Idempotency-Key. "
    "Every student must be enrolled in the class on that date; the date must be in a term "
    "and not in the future. Invalid rolls are rejected whole (422), nothing is written.",
)
def put_roll(ident, day):
    klass = class_in_scope_or_404(ident, g.principal)
    day = parse_date(day, "date")
    NO_ARGS.check()
    body = parse_roll()
    payload = {"class_id": klass.id, "date": day.isoformat(), **body.model_dump()}
    return run_idempotent(
        "attendance.put_roll", payload, lambda: (services.save_roll(klass, day, body, g.principal), 200)
    )


# --- history and summaries -------------------------------------------------------------------------------

HISTORY_SPEC = ListSpec(
    AttendanceRecord.id,
    filters={"status": Choice(AttendanceRecord.status, STATUSES)},
    sorts={"date": AttendanceRecord.date},
    default_sort="-date",
    extra_params=(FROM, TO),
)


@bp.get("/students/<int:ident>/attendance")
@roles(*ALL, reach=STUDENTS)
# The student's own marks only (a roll for another class does not touch it), and the tables the reach
# check reads.
@cached(
    scoped("attendance_records", "student_id"),
    "students",
    "enrolments",
    "classes",
    "class_subjects",
    "student_guardians",
    "closures",
    # Every table it reads is versioned here, so the TTL bounds memory, not staleness: an entry lives
    # until a write changes it or the hour ends (a shorter TTL only re-reads unchanged answers).
    ttl=LONG,
)
@doc(
    "A student's attendance history, newest first, with totals and rate for the range",
    out=HistoryOut,
    tags=["attendance"],
    query=HISTORY_SPEC,
)
def student_history(ident):
    # The reach rule asks no query of a whole-school caller; whether the student is live comes back with
    # the totals (services.history_totals), as GET /students/{id} does it (app/people/services.py).
    if not student_in_reach(ident, g.principal):
        raise NotFound("student")
    la = HISTORY_SPEC.parse()
    frm, to = _ordered(la.extra["from"], la.extra["to"])
    totals = services.history_totals(ident, frm, to)
    if totals is None:
        raise NotFound("student")
    # Plain rows of the answer's columns, from a statement built once per shape (with or without from, to).
    shape = (frm is not None, to is not None)
    stmt, params, limit, sort, col = prepared_list(
        ("student history", *shape), lambda: services.history_rows_base(*shape), HISTORY_SPEC, la
    )
    rows = execute_reusable(db.session, stmt, {**params, **services.history_params(ident, frm, to)})
    return page_response(
        rows,
        limit,
        sort,
        col,
        None,
        student_id=ident,
        **{"from": frm, "to": to},
        totals=totals,
        rate=services.rate(totals["present"] + totals["late"], totals["marked"]),
    )


SUMMARY_ARGS = QueryArgs(
    Param("date", DATE, blank_is_absent=True, description="Default: the school's today."),
    Param("class_id", _ID, blank_is_absent=True),
    SUBJECT,
    PERIOD,
)
CHRONIC_ARGS = QueryArgs(
    FROM,
    TO,
    # A percentage with at most one decimal: parsed by services.parse_threshold, which knows the default.
    Param(
        "threshold",
        matching(
            r"^(100(\.0)?|[0-9]{1,2}(\.[0-9])?)$",
            "must be a percentage from 0 to 100 with at most one decimal",
        ),
    ),
    LIMIT,
    CURSOR,
)


@bp.get("/attendance/summary")
@roles(*STAFF, reach=CLASSES)
@doc(
    "Daily attendance: per class and for the school (teachers: their classes)",
    out=SummaryOut,
    tags=["attendance"],
    query=SUMMARY_ARGS,
    errors=(404,),
)
def summary():
    args = SUMMARY_ARGS.parse()
    day = args["date"] or school_today()
    class_id = args["class_id"]
    if class_id is not None:
        class_in_scope_or_404(class_id, g.principal)
    return jsonify(services.daily_summary(day, args["period"], args["subject_id"], g.principal, class_id))


@bp.get("/attendance/chronic-absentees")
@roles(*STAFF, reach=STUDENTS)
# What it reads: the marks and the students (grouped), the scope (enrolments, classes, class_subjects),
# the default range (terms) and the default threshold and today (institutions, bumped by PATCH
# /institution). A teacher's answer is their own (admission keys it per user).
@cached(
    "attendance_records",
    "students",
    "enrolments",
    "classes",
    "class_subjects",
    "terms",
    "institutions",
    "closures",
    ttl=MEDIUM,
)
@doc(
    "Students whose attendance rate over a range is below a threshold, lowest first",
    out=AbsenteesOut,
    tags=["attendance"],
    query=CHRONIC_ARGS,
    description="Defaults: to = today, from = the start of that term, threshold = the institution's "
    "absence_threshold. Rate = (present + late) / marked.",
)
def chronic_absentees():
    args = CHRONIC_ARGS.parse()
    frm, to = services.default_range(*_ordered(args["from"], args["to"]))
    if frm > to:
        raise ValidationFailed({"from": "must not be after to"})
    threshold = services.parse_threshold(args["threshold"], services.absence_threshold())
    return jsonify(services.chronic_absentees(frm, to, threshold, g.principal, args["limit"], args["cursor"]))


# --- QR check-in -----------------------------------------------------------------------------------------


@bp.post("/classes/<int:ident>/attendance-sessions")
@roles(*STAFF, reach=CLASSES)
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
@roles(*STAFF, reach=CLASSES)
@doc("A QR check-in session (without its token)", out=SessionOut, tags=["attendance"])
def get_session(ident):
    return jsonify(services.session_out(services.session_in_scope_or_404(ident, g.principal)))


@bp.post("/attendance/check-in")
@roles("student", reach=SELF)
@doc(
    "Check in with a QR code: marks the student present (once per session)",
    body=CheckinIn,
    out=CheckinOut,
    status=201,
    tags=["attendance"],
    errors=(410,),
)
def check_in():
    body = parse_body(CheckinIn)
    out = services.check_in(body.token, g.principal)
    db.session.commit()
    return jsonify(out), 201
