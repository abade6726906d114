"""Roll call, attendance history and summaries, QR check-in.

Marks are written by one set-based upsert (`upsert_marks`) shared by the roll call and the QR check-in:
INSERT ... ON CONFLICT on the natural key (student, date, period, subject) DO UPDATE only where the
status, note or class really differ, so a resent roll changes nothing (no updated_at, no marked_by, no
audit entry). Everything is validated before the first write; the caller commits.
"""

import io
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache

import segno
from flask import current_app
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import Integer, and_, bindparam, case, cast, func, literal_column, or_, select, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError

from app.academics.models import ClassSubject, Enrolment, SchoolClass, Term
from app.access.rules import scope_classes, scope_students
from app.attendance.models import (
    STATUSES,
    AttendanceCheckin,
    AttendanceCode,
    AttendanceRecord,
    AttendanceSession,
)
from app.audit import services as audit
from app.core import caching
from app.core.cursor import decode_cursor, encode_cursor
from app.core.errors import ApiError, Conflict, Forbidden, NotFound, ValidationFailed
from app.core.models import as_utc, utcnow
from app.core.tenancy import current_institution_id, execute_reusable, reusable
from app.core.upsert import dialect_of, insert_in, json_rows, rows_json
from app.extensions import db
from app.institutions.calendar import (
    any_closure_between,
    closed_clause,
    closure_on,
    describe_closure,
    open_days_only,
    school_today,
)
from app.institutions.models import Institution
from app.people.models import Student, User
from app.timetable.services import check_roll_period

Rec = AttendanceRecord
QR_SALT = "attendance-qr"
QR_MAX_MINUTES = 60
ATTENDED = ("present", "late")


# --- calendar and enrolment checks -----------------------------------------------------------------------


@cache
def _in_a_term_statement():
    day = bindparam("day", type_=Term.start_date.type)
    return reusable(select(Term.id).where(Term.start_date <= day, Term.end_date >= day).limit(1))


def in_a_term(day: date) -> bool:
    # Built once and scoped once per school (tenancy.reusable): every roll PUT asks it.
    return bool(execute_reusable(db.session, _in_a_term_statement(), {"day": day}))


def enrolled_on(class_id: int, day: date, student_ids=None):
    """SELECT of the live students enrolled in the class on `day` (history rows count, not just current)."""
    stmt = (
        select(Enrolment.student_id)
        .join(Student, Student.id == Enrolment.student_id)
        .where(
            Enrolment.class_id == class_id,
            Enrolment.start_date <= day,
            or_(Enrolment.end_date.is_(None), Enrolment.end_date >= day),
            Student.deleted_at.is_(None),
        )
    )
    if student_ids is not None:
        stmt = stmt.where(Enrolment.student_id.in_(student_ids))
    return stmt


@cache
def _enrolled_among_statement():
    """enrolled_on with the class, the day and the students as bind parameters, built once."""
    return reusable(
        enrolled_on(
            bindparam("class_id", type_=Integer),
            bindparam("day", type_=Enrolment.start_date.type),
            bindparam("ids", expanding=True),
        )
    )


def enrolled_among(class_id: int, day: date, student_ids) -> set:
    """Which of `student_ids` are live and enrolled in the class on `day` (enrolled_on's rule, from a
    statement built once: every roll PUT asks it for its whole roll)."""
    params = {"class_id": class_id, "day": day, "ids": list(student_ids)}
    return {row[0] for row in execute_reusable(db.session, _enrolled_among_statement(), params)}


def check_subject(class_id: int, subject_id: int | None, errors: dict):
    if subject_id is None:
        return
    taught = db.session.execute(
        select(ClassSubject.id).where(
            ClassSubject.class_id == class_id, ClassSubject.subject_id == subject_id
        )
    ).scalar()
    if taught is None:
        errors["subject_id"] = f"subject {subject_id} is not taught in this class"


def check_day(day: date, errors: dict, class_id: int | None = None):
    today = school_today()
    if day > today:
        errors["date"] = f"{day.isoformat()} is in the future (today is {today.isoformat()})"
    elif not in_a_term(day):
        errors["date"] = f"{day.isoformat()} is outside every term of the school year"
    elif (closed := closure_on(day, class_id)) is not None:
        errors["date"] = f"{day.isoformat()} is a closed day: {describe_closure(closed)}; no roll is taken"


def resolve_codes(records, errors: dict) -> list[dict]:
    """The roll's marks as upsert_marks takes them: a code (the school's own, app/attendance/models.py)
    gives the status it counts as; a status given beside a code must be that one."""
    wanted = {r.code for r in records if r.code is not None}
    codes = {}
    if wanted:
        codes = {
            c.code: c
            for c in db.session.execute(
                select(AttendanceCode).where(AttendanceCode.code.in_(wanted))
            ).scalars()
        }
    marks = []
    for i, r in enumerate(records):
        status, code_id = r.status, None
        if r.code is not None:
            code = codes.get(r.code)
            if code is None:
                errors[f"records[{i}].code"] = f"{r.code!r} is not one of this school's attendance codes"
            else:
                code_id = code.id
                if status is not None and status != code.status:
                    errors[f"records[{i}].status"] = (
                        f"code {code.code} counts as {code.status}; leave status out or send {code.status}"
                    )
                status = code.status
        marks.append({"student_id": r.student_id, "status": status, "note": r.note, "code_id": code_id})
    return marks


def subject_key(subject_id):
    """The subject part of the natural key, written as the unique index writes it (so the index is used)."""
    return func.coalesce(Rec.subject_id, literal_column("0")) == (subject_id or 0)


# --- the upsert ------------------------------------------------------------------------------------------

AUDITED = ("status", "note", "class_id", "source", "code_id")


# Roll call reads each student's mark through the unique index, whatever the statistics say. Every
# school morning they predate the day's marks (ANALYZE ran overnight; autovacuum does not re-analyze
# millions of marks for a few thousand new ones), so PostgreSQL estimates one mark for the day and
# reads the whole school's day by ix_attendance_institution_date_status instead: 70 ms instead of
# 0.3 ms per roll on the soak's school (bench/soak.py), most of the database's CPU. So on PostgreSQL a
# mark is a LATERAL probe per student (the loop cannot be turned into one read of the day), and its
# school test is written `institution_id + 0 = :iid`, which no index serves (the tenancy's plain
# `institution_id = :iid` would let the date index serve the probe). The statements are therefore
# scoped by hand (skip_tenant): every table tests :iid. tests/test_attendance_plans.py checks the plans.
NO_TENANT = {"skip_tenant": True}


def _school():
    """The school these hand-scoped statements test; roll call always runs inside one."""
    iid = current_institution_id()
    if iid is None:
        raise RuntimeError("roll call runs inside a school's scope (a request or a job sets it)")
    return iid


def _mark_probe(columns, student=None, *, lock=False):
    """Marks for :day, :period, :subject: with `student` (PostgreSQL), a LATERAL probe of that student's
    mark; without, a plain subquery of the day's marks to join on student_id (SQLite has no LATERAL)."""
    probe = select(*columns).where(
        Rec.date == bindparam("day", type_=Rec.date.type),
        Rec.period == bindparam("period", type_=Rec.period.type),
        # the subject part of the natural key, written as the unique index writes it
        func.coalesce(Rec.subject_id, literal_column("0")) == bindparam("subject", type_=Integer),
        (Rec.institution_id + 0) == bindparam("iid", type_=Integer),
    )
    if student is None:
        return probe.subquery("mark")
    probe = probe.where(Rec.student_id == student).limit(1)
    return (probe.with_for_update() if lock else probe).lateral("mark")


@cache
def _before_images(dialect_name):
    """The marks a roll may change, locked (FOR UPDATE) so a concurrent roll of the same rows waits."""
    columns = (Rec.id, Rec.student_id, Rec.status, Rec.note, Rec.class_id, Rec.source, Rec.code_id)
    if dialect_name != "postgresql":  # (SQLite locks the whole database for a write anyway)
        mark = _mark_probe(columns)
        return select(mark).where(mark.c.student_id.in_(bindparam("ids", expanding=True)))
    wanted = func.unnest(bindparam("ids", type_=ARRAY(Integer))).table_valued("id").render_derived("wanted")
    mark = _mark_probe(columns, wanted.c.id, lock=True)
    return select(mark).select_from(wanted).join(mark, true())


MARK_FIELDS = ("student_id", "status", "note", "code_id")  # per mark; the roll gives the rest
ROLL_FIELDS = ("institution_id", "class_id", "subject_id", "period", "date", "source", "marked_by_id",
               "created_at", "updated_at")  # fmt: skip


@cache
def _upsert_statement(dialect_name):
    """INSERT … ON CONFLICT DO UPDATE … RETURNING for roll marks, built once per dialect. On PostgreSQL
    the marks come as one JSON array (:rows) and what the whole roll shares as single values; elsewhere
    the statement runs over a list of whole rows."""
    table = Rec.__table__
    stmt = insert_in(dialect_name, table)
    if dialect_name == "postgresql":
        marks = json_rows(table, MARK_FIELDS, "m")
        shared = [cast(bindparam(f), table.c[f].type) for f in ROLL_FIELDS]
        stmt = stmt.from_select(
            [*MARK_FIELDS, *ROLL_FIELDS], select(*(marks.c[f] for f in MARK_FIELDS), *shared)
        )
    new = stmt.excluded
    return (
        stmt.on_conflict_do_update(
            # the unique index uq_attendance_student_date_period_subject, spelled exactly as it is defined
            index_elements=[
                table.c.student_id,
                table.c.date,
                table.c.period,
                literal_column("coalesce(subject_id, 0)"),
            ],
            set_={
                "status": new.status,
                "note": new.note,
                "code_id": new.code_id,
                "class_id": new.class_id,
                "source": new.source,
                "marked_by_id": new.marked_by_id,
                "updated_at": new.updated_at,
            },
            # Only real changes are written. The institution test is belt and braces: the students were
            # checked to be enrolled here, so a conflicting row is always this school's.
            where=and_(
                table.c.institution_id == new.institution_id,
                or_(
                    table.c.status.is_distinct_from(new.status),
                    table.c.note.is_distinct_from(new.note),
                    table.c.code_id.is_distinct_from(new.code_id),
                    table.c.class_id != new.class_id,
                ),
            ),
        )
        .returning(table.c.id, table.c.student_id)
        .execution_options(cache_scopes=caching.AFTER)
    )


def upsert_marks(class_id, day, subject_id, period, marks, *, source, marker_id):
    """marks: [{"student_id", "status", "note"}] (already validated, one per student).
    Returns {"created", "updated", "unchanged"}; appends one audit entry per real change."""
    ids = [m["student_id"] for m in marks]
    # Before-images for the audit trail; FOR UPDATE so a concurrent roll of the same rows waits. (A row
    # another transaction inserts meanwhile is still upserted correctly; its entry just says "create".)
    dialect, iid = dialect_of(), _school()
    key = {"day": day, "period": period, "subject": subject_id or 0, "iid": iid}
    before = {
        r.student_id: r
        for r in db.session.execute(
            _before_images(dialect), {**key, "ids": ids}, execution_options=NO_TENANT
        ).all()
    }
    now = utcnow()
    shared = {
        "institution_id": iid,
        "class_id": class_id,
        "subject_id": subject_id,
        "period": period,
        "date": day,
        "source": source,
        "marked_by_id": marker_id,
        "created_at": now,
        "updated_at": now,
    }
    each = [{f: m.get(f) for f in MARK_FIELDS} for m in marks]
    table = Rec.__table__
    # Built once (app/core/upsert.py): `.values(rows)` compiled 520 bind parameters on every save
    # (docs/BENCHMARKS.md, "Roll call").
    stmt = _upsert_statement(dialect)
    params = (
        {"rows": rows_json(each), **shared} if dialect == "postgresql" else [{**shared, **m} for m in each]
    )
    # What the response cache invalidates (app/core/caching.py): the attendance of the students whose
    # mark really changed, and their class's, plus any class a mark moved away from. A roll saved again
    # unchanged (apps save the whole roll as each mark is taken) invalidates nothing.
    written = db.session.execute(stmt, params).all()
    changed = [sid for _, sid in written]
    moved = {before[sid].class_id for sid in changed if sid in before}
    caching.note_written(
        db.session, table.name, {"student_id": changed, "class_id": {class_id, *moved} if changed else ()}
    )

    after = {
        m["student_id"]: {
            "status": m["status"],
            "note": m["note"],
            "class_id": class_id,
            "source": source,
            "code_id": m.get("code_id"),
        }
        for m in marks
    }
    entries, created, ctx = [], 0, audit.context()
    for rid, sid in written:
        old = before.get(sid)
        if old is None:
            created += 1
            changes = {
                "student_id": [None, sid],
                "date": [None, day.isoformat()],
                "period": [None, period],
                "subject_id": [None, subject_id],
                **{k: [None, after[sid][k]] for k in AUDITED},
            }
            entries.append(audit.entry("create", "attendance", rid, changes, ctx=ctx))
        else:
            changes = {
                k: [getattr(old, k), after[sid][k]] for k in AUDITED if getattr(old, k) != after[sid][k]
            }
            entries.append(audit.entry("update", "attendance", rid, changes, ctx=ctx))
    audit.record_many(entries)
    updated = len(written) - created
    return {"created": created, "updated": updated, "unchanged": len(marks) - len(written)}


# --- roll call -------------------------------------------------------------------------------------------


@cache
def _roll_statement(lateral: bool):
    """Everyone enrolled in a class on a day, with their mark or null; built once, scoped by hand."""
    day, iid = bindparam("day", type_=Rec.date.type), bindparam("iid", type_=Integer)
    mark = _mark_probe(
        (Rec.student_id, Rec.status, Rec.note, Rec.source, Rec.updated_at, Rec.marked_by_id, Rec.code_id),
        Student.id if lateral else None,
    )
    return (
        select(
            Student.id,
            Student.admission_number,
            Student.first_name,
            Student.last_name,
            mark.c.status,
            mark.c.note,
            mark.c.source,
            mark.c.updated_at,
            User.id,
            User.first_name,
            User.last_name,
            AttendanceCode.code,
        )
        .select_from(Enrolment)
        .join(Student, and_(Student.id == Enrolment.student_id, Student.institution_id == iid))
        .outerjoin(mark, true() if lateral else mark.c.student_id == Student.id)
        .outerjoin(User, and_(User.id == mark.c.marked_by_id, User.institution_id == iid))
        .outerjoin(
            AttendanceCode, and_(AttendanceCode.id == mark.c.code_id, AttendanceCode.institution_id == iid)
        )
        .where(
            Enrolment.institution_id == iid,
            Enrolment.class_id == bindparam("class_id", type_=Integer),
            Enrolment.start_date <= day,
            or_(Enrolment.end_date.is_(None), Enrolment.end_date >= day),
            Student.deleted_at.is_(None),
        )
        .order_by(Student.last_name, Student.first_name, Student.id)
    )


def read_roll(class_id: int, day: date, subject_id, period: int, *, checked_open=False) -> dict:
    """Everyone enrolled in the class on `day`, with their mark for this period/subject or null (unmarked).
    checked_open: the caller has just found the day open (check_day), so there is no closure to look up."""
    params = {"class_id": class_id, "day": day, "period": period, "subject": subject_id or 0}
    rows = db.session.execute(
        _roll_statement(dialect_of() == "postgresql"),
        {**params, "iid": _school()},
        execution_options=NO_TENANT,
    ).all()
    students, totals = [], dict.fromkeys((*STATUSES, "unmarked"), 0)
    for (
        sid,
        adm,
        first,
        last,
        status,
        note,
        source,
        marked_at,
        uid,
        ufirst,
        ulast,
        code,
    ) in rows:
        totals[status or "unmarked"] += 1
        students.append(
            {
                "student_id": sid,
                "admission_number": adm,
                "first_name": first,
                "last_name": last,
                "status": status,
                "code": code,
                "note": note,
                "source": source,
                "marked_by": {"id": uid, "name": f"{ufirst} {ulast}"} if uid else None,
                "marked_at": marked_at,
            }
        )
    totals["enrolled"] = len(students)
    closed = None if checked_open else closure_on(day, class_id)
    return {
        "closure": describe_closure(closed) if closed is not None else None,
        "class_id": class_id,
        "date": day,
        "subject_id": subject_id,
        "period": period,
        "students": students,
        "totals": totals,
    }


def save_roll(klass: SchoolClass, day: date, body, principal) -> dict:
    """The whole roll for a class on a date: validated as a whole, written by one upsert."""
    errors = {}
    check_day(day, errors, klass.id)
    check_subject(klass.id, body.subject_id, errors)
    marks = resolve_codes(body.records, errors)
    check_roll_period(klass.id, day, body.period, body.subject_id, errors)  # the lesson it is for
    ids = [r.student_id for r in body.records]
    enrolled = enrolled_among(klass.id, day, ids)
    first_at = {}
    for i, r in enumerate(body.records):
        field = f"records[{i}].student_id"
        if r.student_id in first_at:
            errors[field] = f"student {r.student_id} is already in records[{first_at[r.student_id]}]"
            continue
        first_at[r.student_id] = i
        if r.student_id not in enrolled:
            errors[field] = f"student {r.student_id} is not enrolled in this class on {day.isoformat()}"
    if errors:
        raise ValidationFailed(errors)
    counts = upsert_marks(
        klass.id,
        day,
        body.subject_id,
        body.period,
        marks,
        source="manual",
        marker_id=principal.user_id,
    )
    roll = read_roll(klass.id, day, body.subject_id, body.period, checked_open=True)
    roll["counts"] = counts
    return roll


# --- history and summaries -------------------------------------------------------------------------------


def rate(attended: int, marked: int):
    """(present + late) / marked as a percentage, 1 decimal (half up); None when nothing is marked."""
    if not marked:
        return None
    return float((Decimal(100 * attended) / marked).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def _status_sums():
    return [func.coalesce(func.sum(case((Rec.status == s, 1), else_=0)), 0).label(s) for s in STATUSES]


@cache
def _history_totals_statement(has_from: bool, has_to: bool, closures: bool):
    """history_totals' statement of each shape (range ends given, closures in range or not), built once
    and scoped once per school (tenancy.reusable); the student and the range are bind parameters. Its
    last column says whether the student is live (in this school, not deleted): the history's 404 test
    rides on the totals' round trip instead of a statement of its own."""
    live = (
        select(Student.id)
        .where(Student.id == bindparam("student_id", type_=Student.id.type), Student.deleted_at.is_(None))
        .exists()
    )
    stmt = _history_where(select(*_status_sums(), func.count(Rec.id), live), has_from, has_to)
    if closures:
        stmt = stmt.where(~closed_clause(Rec.date, Rec.class_id, Rec.institution_id))
    return reusable(stmt)


def history_totals(student_id, frm, to) -> dict | None:
    """Totals over open days only: a mark on a closed day (a strike declared afterwards) is kept in the
    history but not counted. The closed-day test is left out when no closure touches the range. None
    when the student is missing or deleted."""
    stmt = _history_totals_statement(frm is not None, to is not None, any_closure_between(frm, to))
    row = execute_reusable(db.session, stmt, history_params(student_id, frm, to))[0]
    if not row[-1]:
        return None
    totals = {s: int(row[i]) for i, s in enumerate(STATUSES)}
    totals["marked"] = int(row[-2])
    return totals


# A student's history page: RecordOut's fields (app/attendance/schemas.py) as columns, in its order.
RECORD_COLUMNS = (
    Rec.id,
    Rec.date,
    Rec.class_id,
    Rec.subject_id,
    Rec.period,
    Rec.status,
    Rec.note,
    Rec.code_id,
    Rec.source,
    Rec.marked_by_id,
    Rec.updated_at.label("marked_at"),
)


def _history_where(stmt, has_from: bool, has_to: bool):
    """A student's marks in a range, the student and the range ends as bind parameters (student_id,
    date_from, date_to: history_params), so one statement serves every request of its shape."""
    stmt = stmt.where(Rec.student_id == bindparam("student_id", type_=Rec.student_id.type))
    if has_from:
        stmt = stmt.where(Rec.date >= bindparam("date_from", type_=Rec.date.type))
    if has_to:
        stmt = stmt.where(Rec.date <= bindparam("date_to", type_=Rec.date.type))
    return stmt


def history_rows_base(has_from: bool, has_to: bool):
    """A student's records as plain rows of RECORD_COLUMNS: one statement per shape, built once
    (pagination.prepared_list)."""
    return _history_where(select(*RECORD_COLUMNS), has_from, has_to)


def history_params(student_id, frm, to) -> dict:
    params = {"student_id": student_id}
    if frm is not None:
        params["date_from"] = frm
    if to is not None:
        params["date_to"] = to
    return params


def _summary_row(counts: dict, enrolled: int) -> dict:
    marked = sum(counts[s] for s in STATUSES)
    return {
        **{s: counts[s] for s in STATUSES},
        "marked": marked,
        "enrolled": enrolled,
        "unmarked": max(enrolled - marked, 0),
        "rate": rate(counts["present"] + counts["late"], marked),
    }


def daily_summary(day: date, period: int, subject_id, principal, class_id=None) -> dict:
    """Per class and for the school: marks by status against the students enrolled that day.
    One statement: classes in the caller's scope joined to two grouped subqueries."""
    enrolled = (
        select(Enrolment.class_id, func.count().label("n"))
        .join(Student, Student.id == Enrolment.student_id)
        .where(
            Enrolment.start_date <= day,
            or_(Enrolment.end_date.is_(None), Enrolment.end_date >= day),
            Student.deleted_at.is_(None),
        )
        .group_by(Enrolment.class_id)
        .subquery()
    )
    marks = open_days_only(
        select(Rec.class_id, *_status_sums()).where(
            Rec.date == day, Rec.period == period, subject_key(subject_id)
        ),
        Rec.date,
        Rec.class_id,
        Rec.institution_id,
        day,
        day,
    )
    marks = marks.group_by(Rec.class_id).subquery()
    stmt = (
        select(
            SchoolClass.id,
            SchoolClass.name,
            func.coalesce(enrolled.c.n, 0),
            *[func.coalesce(marks.c[s], 0) for s in STATUSES],
        )
        .outerjoin(enrolled, enrolled.c.class_id == SchoolClass.id)
        .outerjoin(marks, marks.c.class_id == SchoolClass.id)
        .where(SchoolClass.deleted_at.is_(None))
        .order_by(SchoolClass.grade_level, SchoolClass.section, SchoolClass.id)
    )
    stmt = scope_classes(stmt, principal)
    if class_id is not None:
        stmt = stmt.where(SchoolClass.id == class_id)
    else:  # classes of other years have nobody enrolled and nothing marked: leave them out
        stmt = stmt.where(or_(enrolled.c.n.is_not(None), marks.c.present.is_not(None)))
    classes, school, school_enrolled = [], dict.fromkeys(STATUSES, 0), 0
    for cid, name, n, *counts in db.session.execute(stmt):
        counts = dict(zip(STATUSES, (int(c) for c in counts)))
        classes.append({"class_id": cid, "name": name, **_summary_row(counts, int(n))})
        for s in STATUSES:
            school[s] += counts[s]
        school_enrolled += int(n)
    return {
        "date": day,
        "period": period,
        "subject_id": subject_id,
        "school": _summary_row(school, school_enrolled),
        "classes": classes,
    }


def default_range(frm, to):
    """No `to`: today. No `from`: the start of the term holding `to` (else 30 days before it)."""
    to = to or school_today()
    if frm is None:
        frm = db.session.execute(
            select(Term.start_date)
            .where(Term.start_date <= to, Term.end_date >= to)
            .order_by(Term.start_date.desc())
            .limit(1)
        ).scalar() or to - timedelta(days=30)
    return frm, to


def parse_threshold(raw, default) -> int:
    """Percent, 0-100, at most one decimal; returned in tenths of a percent so SQL compares integers."""
    if raw is None:
        return int(default) * 10
    try:
        value = Decimal(raw)
        tenths = value * 10
        if not value.is_finite() or tenths != tenths.to_integral_value() or not 0 <= value <= 100:
            raise InvalidOperation
    except InvalidOperation:
        raise ValidationFailed(
            {"threshold": "must be a percentage from 0 to 100 with at most one decimal"}
        ) from None
    return int(tenths)


RATE_SCALE = 100_000  # the sort key: floor(attended / marked * 100000), an integer in every database


def chronic_absentees(frm, to, threshold_tenths: int, principal, limit: int, cursor=None):
    """Students whose rate over [frm, to] is below the threshold, lowest rate first.
    One GROUP BY over the marks; keyset-paged on an integer rate key (exact, no float ties).

    The marks are counted per student first, then joined to the students and scoped to the caller, so
    the scope (a teacher's EXISTS over enrolments) runs per absentee, not per mark: scoped on the marks,
    a misestimate (fresh tables without statistics) nested loops over marks x enrolments, 17 s for a
    teacher on the demo data."""
    attended = func.sum(case((Rec.status.in_(ATTENDED), 1), else_=0))
    marked = func.count(Rec.id)
    key = (attended * RATE_SCALE) // marked  # integer division in PostgreSQL and SQLite alike
    in_range = open_days_only(
        select(Rec.student_id, *_status_sums(), marked.label("marked"), key.label("rate_key")).where(
            Rec.date >= frm, Rec.date <= to
        ),
        Rec.date,
        Rec.class_id,
        Rec.institution_id,
        frm,
        to,
    )
    per_student = (
        in_range.group_by(Rec.student_id)
        .having(attended * 1000 < threshold_tenths * marked)
        .subquery("per_student")
    )
    agg = per_student.c
    stmt = (
        select(
            agg.student_id,
            Student.admission_number,
            Student.first_name,
            Student.last_name,
            *[agg[s] for s in STATUSES],
            agg.marked,
            agg.rate_key,
        )
        .join(Student, Student.id == agg.student_id)
        .where(Student.deleted_at.is_(None))
    )
    stmt = scope_students(stmt, principal)
    if cursor is not None:
        last_key, last_id = decode_cursor(cursor, int, int)  # [rate key, student id]
        stmt = stmt.where(
            or_(agg.rate_key > last_key, and_(agg.rate_key == last_key, agg.student_id > last_id))
        )
    stmt = stmt.order_by(agg.rate_key, agg.student_id).limit(limit + 1)
    rows = db.session.execute(stmt).all()
    more, rows = len(rows) > limit, rows[:limit]
    data = []
    for sid, adm, first, last, *rest in rows:
        counts = dict(zip(STATUSES, (int(c) for c in rest[:4])))
        n = int(rest[4])
        data.append(
            {
                "student_id": sid,
                "admission_number": adm,
                "first_name": first,
                "last_name": last,
                **counts,
                "marked": n,
                "rate": rate(counts["present"] + counts["late"], n),
            }
        )
    next_cursor = encode_cursor([int(rows[-1].rate_key), rows[-1].student_id]) if more and rows else None
    return {
        "data": data,
        "next_cursor": next_cursor,
        "from": frm,
        "to": to,
        "threshold": threshold_tenths / 10,
    }


def absence_threshold() -> int:
    return db.session.get(Institution, current_institution_id()).absence_threshold


# --- QR check-in -----------------------------------------------------------------------------------------


def _serializer():
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=QR_SALT)


def session_out(s: AttendanceSession) -> dict:
    n = db.session.execute(select(func.count()).where(AttendanceCheckin.session_id == s.id)).scalar_one()
    return {
        "id": s.id,
        "class_id": s.class_id,
        "subject_id": s.subject_id,
        "period": s.period,
        "date": s.date,
        "opened_by_id": s.opened_by_id,
        "opened_at": as_utc(s.opened_at),
        "expires_at": as_utc(s.expires_at),
        "checked_in": n,
    }


def session_in_scope_or_404(session_id, principal) -> AttendanceSession:
    stmt = scope_classes(
        select(AttendanceSession).where(AttendanceSession.id == session_id),
        principal,
        column=AttendanceSession.class_id,
    )
    found = db.session.execute(stmt).scalar_one_or_none()
    if found is None:
        raise NotFound("attendance session")
    return found


def qr_svg(token: str) -> str:
    buf = io.BytesIO()
    segno.make_qr(token, error="m").save(buf, kind="svg", scale=4, xmldecl=False, svgns=True)
    return buf.getvalue().decode()


def open_session(klass: SchoolClass, body, principal) -> dict:
    """A short check-in window for today's lesson; the token names the session and the school, signed."""
    day = school_today()
    errors = {}
    if not in_a_term(day):
        errors["date"] = f"today ({day.isoformat()}) is outside every term of the school year"
    elif (closed := closure_on(day, klass.id)) is not None:
        errors["date"] = f"today ({day.isoformat()}) is a closed day: {describe_closure(closed)}"
    check_subject(klass.id, body.subject_id, errors)
    if errors:
        raise ValidationFailed(errors)
    now = utcnow()
    session = AttendanceSession(
        class_id=klass.id,
        subject_id=body.subject_id,
        period=body.period,
        date=day,
        opened_by_id=principal.user_id,
        opened_at=now,
        expires_at=now + timedelta(minutes=body.minutes),
    )
    db.session.add(session)
    db.session.flush()
    audit.record(
        "create",
        "attendance_session",
        session.id,
        audit.snapshot(session, ("class_id", "subject_id", "period", "date", "expires_at")),
    )
    token = _serializer().dumps({"s": session.id, "i": session.institution_id})
    return {**session_out(session), "token": token, "qr_svg": qr_svg(token)}


def expired():
    return ApiError(
        410,
        "This check-in code has expired; ask your teacher for a new one.",
        title="Expired",
        type_="expired",
    )


def check_in(token: str, principal) -> dict:
    """A student scans the code: marked present (source qr) once per session."""
    try:
        payload = _serializer().loads(token, max_age=QR_MAX_MINUTES * 60)
    except SignatureExpired:
        raise expired() from None
    except BadData:
        raise ValidationFailed({"token": "is not a valid check-in code"}) from None
    if (
        not isinstance(payload, dict)
        or payload.get("i") != principal.institution_id
        or not isinstance(payload.get("s"), int)
    ):
        raise NotFound("attendance session")  # another school's code: the same answer as a missing session
    session = db.session.execute(
        select(AttendanceSession).where(AttendanceSession.id == payload["s"])
    ).scalar_one_or_none()
    if session is None:
        raise NotFound("attendance session")
    now = utcnow()
    if now >= as_utc(session.expires_at):
        raise expired()
    if principal.student_id is None:
        raise Forbidden("This login is not linked to a student record.")
    if (
        db.session.execute(enrolled_on(session.class_id, session.date, [principal.student_id])).scalar()
        is None
    ):
        raise Forbidden("You are not enrolled in the class this check-in code is for.")
    already = Conflict("You have already checked in to this session.")
    if (
        db.session.execute(
            select(AttendanceCheckin.id).where(
                AttendanceCheckin.session_id == session.id,
                AttendanceCheckin.student_id == principal.student_id,
            )
        ).scalar()
        is not None
    ):
        raise already
    try:  # the unique key settles a double scan racing this one
        with db.session.begin_nested():
            db.session.add(
                AttendanceCheckin(session_id=session.id, student_id=principal.student_id, checked_in_at=now)
            )
    except IntegrityError:
        raise already from None
    upsert_marks(
        session.class_id,
        session.date,
        session.subject_id,
        session.period,
        [{"student_id": principal.student_id, "status": "present", "note": None}],
        source="qr",
        marker_id=principal.user_id,
    )
    return {
        "session_id": session.id,
        "student_id": principal.student_id,
        "class_id": session.class_id,
        "subject_id": session.subject_id,
        "period": session.period,
        "date": session.date,
        "status": "present",
        "source": "qr",
        "checked_in_at": now,
    }
