"""Gradebook rules: who writes which assessment, the bulk grade upsert, term results, class ranking and
report-card data.

Results are computed from ONE query of grade rows per call (one pass in Python with Decimals), so a term
result, a class ranking and a whole class's report cards each cost a constant number of queries.
"""

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from functools import cache

from sqlalchemy import and_, func, or_, select

from app.academics.models import ClassSubject, Enrolment, SchoolClass, Subject, Term
from app.access.rules import scope_classes
from app.attendance.models import STATUSES, AttendanceRecord
from app.audit import services as audit
from app.core.auth import ONEROSTER
from app.core.crud import check_refs, flush_or_conflict
from app.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.core.models import utcnow
from app.core.tenancy import current_institution_id
from app.core.upsert import dialect_of, insert_in
from app.extensions import db
from app.grading.models import Assessment, AssessmentType, Grade, ReportRemark
from app.institutions.calendar import closed_clause, school_today
from app.institutions.models import DEFAULT_GRADING_SCALE, Institution
from app.people.models import Student, Teacher, User

HUNDRED = Decimal(100)
ONE_DP = Decimal("0.1")
CENTS = Decimal("0.01")
ASSESSMENT_REFS = {"class_subject_id": ClassSubject, "term_id": Term, "assessment_type_id": AssessmentType}


# ---------------------------------------------------------------------------------------------------
# Percentages and letters
# ---------------------------------------------------------------------------------------------------


def round1(value: Decimal) -> Decimal:
    return value.quantize(ONE_DP, rounding=ROUND_HALF_UP)


def plain(value: Decimal) -> str:
    """20.00 -> "20", 17.50 -> "17.5" (for messages)."""
    return format(value.normalize(), "f")


def percentage(score: Decimal, max_score: Decimal) -> Decimal:
    return score * HUNDRED / max_score


class Scale:
    """The institution's letter bands (highest minimum first; the last starts at 0)."""

    def __init__(self, bands):
        bands = bands or DEFAULT_GRADING_SCALE
        self.bands = sorted(
            ((Decimal(str(b["min"])), b["letter"]) for b in bands), key=lambda b: b[0], reverse=True
        )

    def letter(self, pct: Decimal | None) -> str | None:
        # Letters follow the percentage as shown (1 decimal place), so a printed 80.0 is never a B.
        if pct is None:
            return None
        shown = round1(pct)
        for minimum, letter in self.bands:
            if shown >= minimum:
                return letter
        return self.bands[-1][1]


def institution() -> Institution:
    return db.session.get(Institution, current_institution_id())


def scale() -> Scale:
    return Scale(institution().grading_scale)


# ---------------------------------------------------------------------------------------------------
# Assessment types
# ---------------------------------------------------------------------------------------------------


def delete_assessment_type(obj: AssessmentType):
    # Checked first: a clear 409 naming the cause, rather than a foreign-key failure at flush.
    used = db.session.execute(
        select(func.count()).select_from(Assessment).where(Assessment.assessment_type_id == obj.id)
    ).scalar_one()
    if used:
        raise Conflict(
            f"This assessment type is used by {used} assessment(s); move them to another type first."
        )
    audit.record(
        "delete", "assessment type", obj.id, {"name": [obj.name, None], "weight": [str(obj.weight), None]}
    )
    db.session.delete(obj)
    flush_or_conflict()


# ---------------------------------------------------------------------------------------------------
# Assessments: scope and writes
# ---------------------------------------------------------------------------------------------------


def scope_assessments(stmt, p):
    """Admin: all. Teachers: the classes they teach or lead. Guardians/students: their children's classes."""
    if p.role == "admin":
        return stmt
    visible = scope_classes(select(ClassSubject.id), p, column=ClassSubject.class_id)
    return stmt.where(Assessment.class_subject_id.in_(visible))


def can_write(class_subject: ClassSubject, p) -> bool:
    # A OneRoster client writes its school's gradebook when its token holds gradebook.createput (the
    # OneRoster views check the scope before calling in: app/oneroster/gradebook.py).
    return p.role in ("admin", ONEROSTER) or (
        p.role == "teacher" and p.teacher_id is not None and class_subject.teacher_id == p.teacher_id
    )


def require_write(class_subject: ClassSubject, p):
    # The record is visible (e.g. to the homeroom teacher), but only its subject teacher changes it.
    if not can_write(class_subject, p):
        raise Forbidden(
            "Only an admin or the teacher of this class subject may change its assessments and grades."
        )


def assessment_or_404(ident, p) -> tuple[Assessment, ClassSubject]:
    row = db.session.execute(
        scope_assessments(
            select(Assessment, ClassSubject)
            .join(ClassSubject, ClassSubject.id == Assessment.class_subject_id)
            .where(Assessment.id == ident),
            p,
        )
    ).one_or_none()
    if row is None:
        raise NotFound("assessment")
    return row[0], row[1]


def _class_year(class_subject_id):
    return db.session.execute(
        select(SchoolClass.academic_year_id)
        .join(ClassSubject, ClassSubject.class_id == SchoolClass.id)
        .where(ClassSubject.id == class_subject_id)
    ).scalar_one()


def _check_term_and_date(term: Term, day: dt.date | None, class_year_id: int):
    errors = {}
    if term.academic_year_id != class_year_id:
        errors["term_id"] = "is not a term of the class's academic year"
    elif day is not None and not term.start_date <= day <= term.end_date:
        errors["date"] = (
            f"must fall within the term ({term.start_date.isoformat()} to {term.end_date.isoformat()})"
        )
    if errors:
        raise ValidationFailed(errors)


def create_assessment(values: dict, p) -> Assessment:
    check_refs(values, ASSESSMENT_REFS)
    class_subject = db.session.get(ClassSubject, values["class_subject_id"])
    if not can_write(class_subject, p):
        raise ValidationFailed({"class_subject_id": "you do not teach this class subject"})
    term = db.session.get(Term, values["term_id"])
    _check_term_and_date(term, values["date"], _class_year(class_subject.id))
    obj = Assessment(**values)
    db.session.add(obj)
    flush_or_conflict()
    audit.record("create", "assessment", obj.id, audit.snapshot(obj, values))
    return obj


def update_assessment(obj: Assessment, class_subject: ClassSubject, values: dict, p) -> Assessment:
    require_write(class_subject, p)
    nulls = {k: "must not be null" for k, v in values.items() if v is None}
    if nulls:
        raise ValidationFailed(nulls)
    check_refs(values, {k: v for k, v in ASSESSMENT_REFS.items() if k != "class_subject_id"})
    if "term_id" in values or "date" in values:
        term = db.session.get(Term, values.get("term_id", obj.term_id))
        _check_term_and_date(term, values.get("date", obj.date), _class_year(class_subject.id))
    if "max_score" in values and values["max_score"] < obj.max_score:
        top = db.session.execute(select(func.max(Grade.score)).where(Grade.assessment_id == obj.id)).scalar()
        if top is not None and top > values["max_score"]:
            raise ValidationFailed(
                {"max_score": f"must not be below the highest recorded score ({plain(top)})"}
            )
    audit.apply_update(obj, values, "assessment")
    flush_or_conflict()
    return obj


def delete_assessment(obj: Assessment, class_subject: ClassSubject, p):
    require_write(class_subject, p)
    graded = db.session.execute(
        select(func.count()).select_from(Grade).where(Grade.assessment_id == obj.id)
    ).scalar_one()
    # Its grades go with it (ON DELETE CASCADE); the log keeps what was removed.
    audit.record("delete", "assessment", obj.id, {"title": [obj.title, None], "grades": [graded, 0]})
    db.session.delete(obj)
    flush_or_conflict()


# ---------------------------------------------------------------------------------------------------
# Grades
# ---------------------------------------------------------------------------------------------------


def _grade_row(grade, first_name, last_name, admission_number, max_score, letters: Scale) -> dict:
    pct = percentage(grade.score, max_score)
    return {
        "id": grade.id,
        "assessment_id": grade.assessment_id,
        "student_id": grade.student_id,
        "admission_number": admission_number,
        "first_name": first_name,
        "last_name": last_name,
        "score": grade.score,
        "max_score": max_score,
        "percentage": round1(pct),
        "letter": letters.letter(pct),
        "comment": grade.comment,
        "graded_by_id": grade.graded_by_id,
        "updated_at": grade.updated_at,
    }


def grades_stmt(assessment: Assessment):
    return (
        select(Grade, Student.first_name, Student.last_name, Student.admission_number)
        .join(Student, Student.id == Grade.student_id)
        .where(Grade.assessment_id == assessment.id)
    )


def grade_serializer(assessment: Assessment):
    letters = scale()
    return lambda row: _grade_row(*row, assessment.max_score, letters)


def grades_of(assessment: Assessment) -> list[dict]:
    rows = db.session.execute(
        grades_stmt(assessment).order_by(Student.last_name, Student.first_name, Grade.id)
    ).all()
    serialize = grade_serializer(assessment)
    return [serialize(r) for r in rows]


def _enrolled(class_id, student_ids, day: dt.date | None) -> set[int]:
    """Of these students, those in the class on the assessment date, or now."""
    covering = Enrolment.end_date.is_(None)
    if day is not None:
        covering = or_(covering, and_(Enrolment.start_date <= day, Enrolment.end_date >= day))
    return set(
        db.session.execute(
            select(Enrolment.student_id)
            .join(Student, Student.id == Enrolment.student_id)
            .where(
                Enrolment.class_id == class_id,
                Enrolment.student_id.in_(student_ids),
                covering,
                Student.deleted_at.is_(None),
            )
        ).scalars()
    )


@cache
def _grades_upsert(dialect_name):
    """INSERT ... ON CONFLICT DO UPDATE ... RETURNING for grades, built once per dialect and run over the
    rows (app/core/upsert.py)."""
    table = Grade.__table__
    stmt = insert_in(dialect_name, table)
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[table.c.assessment_id, table.c.student_id],
        set_={
            "score": new.score,
            "comment": new.comment,
            "graded_by_id": new.graded_by_id,
            "updated_at": new.updated_at,
        },
        # only real changes are written (an unchanged resend touches nothing); the conflicting row is ours:
        # the assessment was found in the caller's institution
        where=and_(
            table.c.institution_id == new.institution_id,
            or_(table.c.score.is_distinct_from(new.score), table.c.comment.is_distinct_from(new.comment)),
        ),
    ).returning(table.c.id, table.c.student_id)


def put_grades(assessment: Assessment, class_subject: ClassSubject, rows, p, *, answer=True) -> dict:
    """Validate every row, then write them all with one INSERT ... ON CONFLICT DO UPDATE (or nothing).

    `rows`: GradeIn items. A row without `comment` keeps the stored comment; `"comment": null` clears it.
    `answer=False` leaves out the assessment's grades in the answer (`data`: None): an import writing
    thousands of assessments has no use for reading each back.
    """
    require_write(class_subject, p)
    errors, first_at = {}, {}
    top = assessment.max_score
    for i, row in enumerate(rows):
        if row.student_id in first_at:
            errors[f"grades[{i}].student_id"] = (
                f"appears more than once (also grades[{first_at[row.student_id]}])"
            )
        else:
            first_at[row.student_id] = i
        if not Decimal(0) <= row.score <= top:
            errors[f"grades[{i}].score"] = f"must be between 0 and {plain(top)}"
    enrolled = _enrolled(class_subject.class_id, list(first_at), assessment.date)
    for student_id, i in first_at.items():
        if student_id not in enrolled:
            errors[f"grades[{i}].student_id"] = f"student {student_id} is not enrolled in this class"
    if errors:
        raise ValidationFailed(errors)

    # Lock what is there: the before-values for the audit log and for "unchanged".
    existing = {
        r.student_id: r
        for r in db.session.execute(
            select(Grade.id, Grade.student_id, Grade.score, Grade.comment)
            .where(Grade.assessment_id == assessment.id, Grade.student_id.in_(list(first_at)))
            .with_for_update()
        )
    }
    now = utcnow()
    iid = current_institution_id()
    values = []
    for row in rows:
        old = existing.get(row.student_id)
        comment = (
            (row.comment or None) if "comment" in row.model_fields_set else (old.comment if old else None)
        )
        values.append(
            {
                "institution_id": iid,
                "assessment_id": assessment.id,
                "student_id": row.student_id,
                "score": row.score.quantize(CENTS),
                "comment": comment,
                "graded_by_id": p.user_id or None,  # a OneRoster client is no user (NO_USER)
                "created_at": now,
                "updated_at": now,
            }
        )

    upserted = db.session.execute(_grades_upsert(dialect_of()), values).all() if values else []
    written = {sid: gid for gid, sid in upserted}

    by_student = {v["student_id"]: v for v in values}
    entries, created, updated = [], 0, 0
    for student_id, grade_id in written.items():
        v, old = by_student[student_id], existing.get(student_id)
        if old is None:
            created += 1
            changes = {
                "assessment_id": [None, assessment.id],
                "student_id": [None, student_id],
                "score": [None, str(v["score"])],
                "comment": [None, v["comment"]],
            }
            entries.append(audit.entry("create", "grade", grade_id, changes))
        else:
            updated += 1
            changes = {}
            if old.score != v["score"]:
                changes["score"] = [str(old.score), str(v["score"])]
            if old.comment != v["comment"]:
                changes["comment"] = [old.comment, v["comment"]]
            entries.append(audit.entry("update", "grade", grade_id, changes))
    audit.record_many(entries)
    return {
        "assessment_id": assessment.id,
        "data": grades_of(assessment) if answer else None,
        "counts": {"created": created, "updated": updated, "unchanged": len(values) - len(written)},
    }


# ---------------------------------------------------------------------------------------------------
# Term results
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Acc:
    subject_id: int
    code: str
    name: str
    weight: Decimal = Decimal(0)
    weighted: Decimal = Decimal(0)
    plain_sum: Decimal = Decimal(0)
    count: int = 0
    teachers: dict = field(default_factory=dict)  # class_id -> teacher name

    def average(self) -> Decimal:
        # Every assessment type weighted 0: fall back to the plain mean rather than dividing by zero.
        return self.weighted / self.weight if self.weight > 0 else self.plain_sum / self.count


@dataclass
class StudentResult:
    subjects: list = field(default_factory=list)  # [_Acc] ordered by subject name
    overall: Decimal | None = None  # exact mean of the subject averages


def term_results_for(student_ids, term_id) -> dict[int, StudentResult]:
    """One query: every grade of these students in the term's assessments, folded per student and subject.

    `student_ids` may be a list or a SELECT of ids. A subject's average weights each graded assessment's
    percentage by its type's weight; ungraded assessments do not count; the overall is the plain mean of
    the subject averages.
    """
    rows = db.session.execute(
        select(
            Grade.student_id,
            Grade.score,
            Assessment.max_score,
            AssessmentType.weight,
            ClassSubject.class_id,
            Subject.id,
            Subject.code,
            Subject.name,
            Teacher.first_name,
            Teacher.last_name,
        )
        .join(Assessment, Assessment.id == Grade.assessment_id)
        .join(AssessmentType, AssessmentType.id == Assessment.assessment_type_id)
        .join(ClassSubject, ClassSubject.id == Assessment.class_subject_id)
        .join(Subject, Subject.id == ClassSubject.subject_id)
        .outerjoin(Teacher, Teacher.id == ClassSubject.teacher_id)
        .where(Assessment.term_id == term_id, Grade.student_id.in_(student_ids))
    ).all()
    accs: dict[int, dict[int, _Acc]] = defaultdict(dict)
    for student_id, score, max_score, weight, class_id, subject_id, code, name, t_first, t_last in rows:
        acc = accs[student_id].get(subject_id)
        if acc is None:
            acc = accs[student_id][subject_id] = _Acc(subject_id, code, name)
        pct = percentage(score, max_score)
        acc.weight += weight
        acc.weighted += weight * pct
        acc.plain_sum += pct
        acc.count += 1
        if t_first is not None:
            acc.teachers[class_id] = f"{t_first} {t_last}"
    out = {}
    for student_id, subjects in accs.items():
        ordered = sorted(subjects.values(), key=lambda a: (a.name, a.subject_id))
        averages = [a.average() for a in ordered]
        out[student_id] = StudentResult(ordered, sum(averages) / len(averages))
    return out


def _subject_out(acc: _Acc, letters: Scale, class_id=None, with_teacher=False) -> dict:
    avg = acc.average()
    row = {
        "subject_id": acc.subject_id,
        "subject_code": acc.code,
        "subject_name": acc.name,
        "assessments": acc.count,
        "average": round1(avg),
        "letter": letters.letter(avg),
    }
    if with_teacher:
        # the teacher in the report's class; for a student who moved mid-term, the one who graded them
        row["teacher_name"] = acc.teachers.get(class_id) or next(iter(acc.teachers.values()), None)
    return row


def _overall_out(result: StudentResult | None, letters: Scale) -> dict:
    if result is None:
        return {"average": None, "letter": None}
    return {"average": round1(result.overall), "letter": letters.letter(result.overall)}


def term_or_422(term_id) -> Term:
    term = db.session.execute(select(Term).where(Term.id == term_id)).scalar_one_or_none()
    if term is None:
        raise ValidationFailed({"term_id": f"no such term ({term_id})"})
    return term


def student_results(student_id, term_id) -> dict:
    term_or_422(term_id)
    letters = scale()
    result = term_results_for([student_id], term_id).get(student_id)
    return {
        "student_id": student_id,
        "term_id": term_id,
        "subjects": [_subject_out(a, letters) for a in result.subjects] if result else [],
        "overall": _overall_out(result, letters),
    }


# ---------------------------------------------------------------------------------------------------
# Class ranking and report cards
# ---------------------------------------------------------------------------------------------------


def class_day(term: Term, today: dt.date) -> dt.date:
    """The day whose roster a term's ranking uses: today while the term runs, else its first or last day."""
    return min(max(today, term.start_date), term.end_date)


def roster_on(class_id, day: dt.date):
    """SELECT of the students enrolled in the class on `day`."""
    return (
        select(Student)
        .join(Enrolment, Enrolment.student_id == Student.id)
        .where(
            Enrolment.class_id == class_id,
            Enrolment.start_date <= day,
            or_(Enrolment.end_date.is_(None), Enrolment.end_date >= day),
            Student.deleted_at.is_(None),
        )
    )


def rank(students, results: dict[int, StudentResult]) -> list[tuple[int | None, Student, Decimal | None]]:
    """Competition ranking ("1, 2, 2, 4") on the average as shown (1 decimal place); no grades: no position."""

    def shown(s):
        r = results.get(s.id)
        return round1(r.overall) if r else None

    ordered = sorted(
        students, key=lambda s: (shown(s) is None, -(shown(s) or 0), s.last_name, s.first_name, s.id)
    )
    out, position, previous = [], 0, None
    for n, s in enumerate(ordered, start=1):
        avg = shown(s)
        if avg is None:
            out.append((None, s, None))
            continue
        if avg != previous:
            position, previous = n, avg
        out.append((position, s, avg))
    return out


def class_ranking(class_id, term_id) -> dict:
    term = term_or_422(term_id)
    inst = institution()
    letters = Scale(inst.grading_scale)
    roster = roster_on(class_id, class_day(term, school_today(inst)))
    students = db.session.execute(roster).scalars().all()
    results = term_results_for([s.id for s in students], term_id)
    data = [
        {
            "position": pos,
            "student_id": s.id,
            "admission_number": s.admission_number,
            "first_name": s.first_name,
            "last_name": s.last_name,
            "average": avg,
            "letter": letters.letter(avg),
        }
        for pos, s, avg in rank(students, results)
    ]
    return {"class_id": class_id, "term_id": term_id, "class_size": len(students), "data": data}


def _attendance_totals(student_ids, term: Term) -> dict[int, dict]:
    """Marks by status over the term's open days (a closed day's marks are not counted)."""
    Rec = AttendanceRecord
    stmt = select(Rec.student_id, Rec.status, func.count()).where(
        Rec.student_id.in_(student_ids), Rec.date.between(term.start_date, term.end_date)
    )
    # the closed-day test in the same statement (no "any closure?" lookup first): a class's cards
    # stay a constant number of queries
    stmt = stmt.where(~closed_clause(Rec.date, Rec.class_id, Rec.institution_id))
    rows = db.session.execute(stmt.group_by(Rec.student_id, Rec.status)).all()
    out = defaultdict(lambda: dict.fromkeys(STATUSES, 0))
    for student_id, status, n in rows:
        out[student_id][status] = n
    return out


def _card(
    student: Student, klass, term: Term, result, letters, position, size, attendance, inst, remarks
) -> dict:
    totals = dict(attendance)
    totals["total"] = sum(attendance.values())
    class_id = klass.id if klass is not None else None
    return {
        "school": inst.name,
        "logo": None,  # kept for clients: the logo is served at GET /institution/logo, drawn on the PDF (app/jobs/pdf.py)
        "remarks": remarks,
        "student": {
            "id": student.id,
            "first_name": student.first_name,
            "last_name": student.last_name,
            "admission_number": student.admission_number,
        },
        "class": {"id": klass.id, "name": klass.name} if klass is not None else None,
        "term": {"id": term.id, "name": term.name, "start_date": term.start_date, "end_date": term.end_date},
        "subjects": [_subject_out(a, letters, class_id, with_teacher=True) for a in result.subjects]
        if result
        else [],
        "overall": _overall_out(result, letters),
        "position": position,
        "class_size": size,
        "attendance": totals,
    }


def report_cards_for_class(class_id, term_id, only: set[int] | None = None) -> list[dict]:
    """Report-card data for every student in the class on the term's roster day (or just `only` of them),
    in a constant number of queries: term, class, institution, roster, grades, attendance."""
    term = term_or_422(term_id)
    klass = db.session.execute(select(SchoolClass).where(SchoolClass.id == class_id)).scalar_one_or_none()
    if klass is None:
        raise NotFound("class")
    inst = institution()
    letters = Scale(inst.grading_scale)
    students = db.session.execute(roster_on(class_id, class_day(term, school_today(inst)))).scalars().all()
    ids = [s.id for s in students]
    results = term_results_for(ids, term_id)  # the whole class: positions need everyone
    wanted = [s.id for s in students if only is None or s.id in only]
    attendance = _attendance_totals(wanted, term)
    remarks = remarks_for(wanted, term.id)
    return [
        _card(
            s,
            klass,
            term,
            results.get(s.id),
            letters,
            pos,
            len(students),
            attendance[s.id],
            inst,
            remarks[s.id],
        )
        for pos, s, _avg in rank(students, results)
        if only is None or s.id in only
    ]


def report_card(student_id, term_id) -> dict:
    """One student's card: reuses the class computation so the position matches the class's cards."""
    term = term_or_422(term_id)
    inst = institution()
    day = class_day(term, school_today(inst))
    class_id = db.session.execute(
        select(Enrolment.class_id)
        .where(
            Enrolment.student_id == student_id,
            Enrolment.start_date <= day,
            or_(Enrolment.end_date.is_(None), Enrolment.end_date >= day),
        )
        .order_by(Enrolment.start_date.desc())
        .limit(1)
    ).scalar()
    if class_id is not None:
        cards = report_cards_for_class(class_id, term_id, only={student_id})
        if cards:
            return cards[0]
    # Not in a class on the roster day (left the school, or a soft-deleted class): no position.
    student = db.session.execute(select(Student).where(Student.id == student_id)).scalar_one()
    letters = Scale(inst.grading_scale)
    result = term_results_for([student_id], term_id).get(student_id)
    return _card(
        student,
        None,
        term,
        result,
        letters,
        None,
        None,
        _attendance_totals([student_id], term)[student_id],
        inst,
        remarks_for([student_id], term_id)[student_id],
    )


# ---------------------------------------------------------------------------------------------------
# Report-card remarks: the subject teacher's comment per subject, the class teacher's and the head's
# ---------------------------------------------------------------------------------------------------


def _no_remarks() -> dict:
    return {"subjects": [], "class_teacher": None, "head": None}


def remarks_for(student_ids, term_id) -> dict[int, dict]:
    """{student id: {"subjects": [...], "class_teacher": text, "head": text}} in one query."""
    out: dict[int, dict] = defaultdict(_no_remarks)
    if not student_ids:
        return out
    rows = db.session.execute(
        select(ReportRemark, Subject.name, User.first_name, User.last_name)
        .outerjoin(Subject, Subject.id == ReportRemark.subject_id)
        .outerjoin(User, User.id == ReportRemark.author_id)
        .where(ReportRemark.student_id.in_(student_ids), ReportRemark.term_id == term_id)
        .order_by(Subject.name, ReportRemark.id)
    ).all()
    for remark, subject_name, first, last in rows:
        card = out[remark.student_id]
        if remark.kind == "subject":
            card["subjects"].append(
                {
                    "subject_id": remark.subject_id,
                    "subject_name": subject_name,
                    "text": remark.text,
                    "author": f"{first} {last}" if first else None,
                }
            )
        else:
            card[remark.kind] = remark.text
    return out


def _class_on_roster_day(student_id, term: Term):
    day = class_day(term, school_today(institution()))
    return db.session.execute(
        select(SchoolClass)
        .join(Enrolment, Enrolment.class_id == SchoolClass.id)
        .where(
            Enrolment.student_id == student_id,
            Enrolment.start_date <= day,
            or_(Enrolment.end_date.is_(None), Enrolment.end_date >= day),
        )
    ).scalar_one_or_none()


def _may_write_remark(p, kind, klass, subject_id) -> bool:
    if p.role == "admin":
        return True
    if p.role != "teacher" or p.teacher_id is None or klass is None or kind == "head":
        return False
    if kind == "class_teacher":
        return klass.homeroom_teacher_id == p.teacher_id
    taught = db.session.execute(
        select(ClassSubject.id).where(
            ClassSubject.class_id == klass.id,
            ClassSubject.subject_id == subject_id,
            ClassSubject.teacher_id == p.teacher_id,
        )
    ).scalar()
    return taught is not None


WHO_WRITES = {
    "subject": "the subject's teacher in the student's class or an admin",
    "class_teacher": "the class teacher (homeroom teacher) of the student's class or an admin",
    "head": "an admin (the head)",
}


def set_remark(student_id, body, principal) -> dict:
    """Write (or with text null, remove) one remark of a student's card for a term; audited."""
    term = term_or_422(body.term_id)
    if body.subject_id is not None:
        check_refs({"subject_id": body.subject_id}, {"subject_id": Subject})
    klass = _class_on_roster_day(student_id, term)
    if not _may_write_remark(principal, body.kind, klass, body.subject_id):
        raise Forbidden(f"A {body.kind.replace('_', ' ')} remark is written by {WHO_WRITES[body.kind]}.")
    found = db.session.execute(
        select(ReportRemark).where(
            ReportRemark.student_id == student_id,
            ReportRemark.term_id == term.id,
            ReportRemark.kind == body.kind,
            func.coalesce(ReportRemark.subject_id, 0) == (body.subject_id or 0),
        )
    ).scalar_one_or_none()
    if body.text is None:
        if found is not None:
            audit.record("delete", "report_remark", found.id, {"text": [found.text, None]})
            db.session.delete(found)
    elif found is None:
        found = ReportRemark(
            student_id=student_id,
            term_id=term.id,
            kind=body.kind,
            subject_id=body.subject_id,
            text=body.text,
            author_id=principal.user_id,
        )
        db.session.add(found)
        flush_or_conflict()
        audit.record(
            "create",
            "report_remark",
            found.id,
            {
                "student_id": [None, student_id],
                "term_id": [None, term.id],
                "kind": [None, body.kind],
                "subject_id": [None, body.subject_id],
                "text": [None, body.text],
            },
        )
    elif found.text != body.text:
        audit.record("update", "report_remark", found.id, {"text": [found.text, body.text]})
        found.text, found.author_id = body.text, principal.user_id
    flush_or_conflict()
    return {
        "student_id": student_id,
        "term_id": term.id,
        "remarks": remarks_for([student_id], term.id)[student_id],
    }
