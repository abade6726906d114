"""Year-end rollover: a school moves from one academic year into the next (issue 12, item 4).

What an apply does, in one transaction (a job: tasks/rollover.py runs `run_rollover`):
1. the next year and its terms: the source year's dates and each term's shifted by one calendar year
   (29 February becomes the 28th), the name's years counted up ("2025/26" -> "2026/27"), unless the
   request gives them (`new_year`);
2. classes: every class of the source year is copied into the new year with the SAME name, grade level,
   section, homeroom teacher and capacity (a school's structure stays; the students move up through it),
   with its class subjects and their teachers;
3. fee structures: each term's fee categories are copied to the new term in the same position (first to
   first, ...), due dates moved with the term; a class's category follows the class's copy;
4. students: everyone with a current enrolment in a class of the source year. By default a student is
   promoted into grade + 1, same section (or the first section of that grade when there is no such
   section); a student in the top grade (no class of grade + 1) graduates. Overrides per student:
   `promote`, `repeat` (same grade and section), `graduate`, `withdraw`. The old enrolment ends on the
   source year's last day, the new one starts on the new year's first day; students.grade_level follows;
   a graduate's or withdrawn student's status says so and their login ends (sessions revoked);
5. balances: for each continuing student, every unpaid amount on invoices of terms before the new year is
   carried forward: the old invoice gets a negative line "Balance carried forward to <new year>" (it is
   then settled, total = paid), and the student's invoice for the new year's first term gets the
   opening line "Balance brought forward from <old year>". The student's balance is unchanged and no
   amount is chased twice. Invoice generation (app/finance/services.py) never bills these categories.

Set-based: rows are written with INSERT ... SELECT and UPDATE ... WHERE over the whole school; only the
school's structure (classes, categories: tens to hundreds of rows) goes through Python.

One rollover per source year that is not undone (uq_rollovers_source_live): a second apply finds it and
changes nothing. An undo removes what the rollover made and restores what it changed, while the new year
has no attendance, grades or payments (a 409 names what exists).
"""

import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import and_, case, cast, delete, func, insert, literal, select, true, update
from sqlalchemy.exc import IntegrityError

from app.academics.models import AcademicYear, ClassSubject, Enrolment, SchoolClass, Term
from app.attendance.models import AttendanceRecord
from app.audit import services as audit
from app.auth.models import AuthSession
from app.auth.services import revoke_sessions
from app.core.background import enqueue_after_commit
from app.core.errors import ApiError, Conflict, NotFound, ValidationFailed
from app.core.models import utcnow
from app.core.tenancy import current_institution_id
from app.core.upsert import in_chunks, insert_for
from app.extensions import db
from app.finance.models import FeeCategory, Invoice, InvoiceLine, Payment
from app.grading.models import Assessment, Grade
from app.jobs.models import Job
from app.jobs.runner import finish, mark_failed, running_job
from app.people.models import Student, User
from app.rollover.models import Rollover

log = logging.getLogger("schoolhouse.rollover")

ROLLOVER_TASK = "tasks.rollover.run_rollover"
JOB_TYPE = "rollover"
STEPS = 6  # progress: year, classes, fees, enrolments, leavers, balances
LEAVING = {"graduate": "graduated", "withdraw": "withdrawn"}


# --- the plan (shared by the preview and the apply) ------------------------------------------------------


def year_or_404(year_id, lock=False) -> AcademicYear:
    stmt = select(AcademicYear).where(AcademicYear.id == year_id)
    if lock:
        stmt = stmt.with_for_update()
    year = db.session.execute(stmt).scalar_one_or_none()
    if year is None:
        raise NotFound("academic year")
    return year


def shift_year(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28)


def next_name(name: str) -> str:
    """ "2025/26" -> "2026/27", "2025-2026" -> "2026-2027", "2026" -> "2027"; no digits: unchanged."""
    bumped = re.sub(r"\d{4}", lambda m: str(int(m.group()) + 1), name)
    return re.sub(r"(?<=[/-])(\d{2})$", lambda m: f"{(int(m.group(1)) + 1) % 100:02d}", bumped)


# Enrolments changed per statement. Each change recomputes the enrolment's OneRoster rows in the same
# statement (about nine per enrolment, migration 0016_oneroster_rows): a school's every enrolment in one
# UPDATE ran past the 30 s statement timeout at 100,000 students; 50,000 took 13 s on the scale data
# (docs/BENCHMARKS.md, "Issue 15"), so 2,000 take about half a second.
ENROLMENTS_PER_STATEMENT = 2000


@dataclass
class Move:
    enrolment_id: int
    student_id: int
    user_id: int | None
    admission_number: str
    name: str
    class_id: int
    grade_level: int
    section: str
    student_grade: int | None
    action: str = "promote"
    target: tuple[int, str] | None = None  # (grade_level, section) of the new year's class


@dataclass
class Plan:
    source: AcademicYear
    year: dict
    terms: list[dict]  # name, start_date, end_date, source_term_id (None: no source term)
    classes: list  # the source year's class rows
    moves: list[Move]
    class_subjects: int = 0
    fee_categories: int = 0
    balances: dict = field(default_factory=dict)  # student_id -> amount carried (minor units)

    def continuing(self):
        return [m for m in self.moves if m.target is not None]


def _new_year(source: AcademicYear, source_terms, given: dict | None) -> tuple[dict, list[dict]]:
    given = given or {}
    errors = {}
    name = given.get("name") or next_name(source.name)
    if name == source.name:
        errors["new_year.name"] = f"is required: '{source.name}' has no year number to count up"
    elif len(name) > 40:
        errors["new_year.name"] = f"is required: '{name}' would be longer than 40 characters"
    start = given.get("start_date") or shift_year(source.start_date)
    end = given.get("end_date") or shift_year(source.end_date)
    if given.get("terms"):
        terms = [
            {
                "name": t["name"],
                "start_date": t["start_date"],
                "end_date": t["end_date"],
                "source_term_id": None,
            }
            for t in given["terms"]
        ]
        for i, t in enumerate(terms):
            if i < len(source_terms):
                t["source_term_id"] = source_terms[i].id
    else:
        terms = [
            {
                "name": t.name,
                "start_date": shift_year(t.start_date),
                "end_date": shift_year(t.end_date),
                "source_term_id": t.id,
            }
            for t in source_terms
        ]
        if "start_date" in given and terms:  # the year was moved: the terms move with it
            delta = start - shift_year(source.start_date)
            for t in terms:
                t["start_date"] += delta
                t["end_date"] += delta
    if end < start:
        errors["new_year.end_date"] = "must not be before start_date"
    if start <= source.end_date:
        errors["new_year.start_date"] = (
            f"must be after the end of {source.name} ({source.end_date.isoformat()})"
        )
    names = [t["name"] for t in terms]
    if len(set(names)) != len(names):
        errors["new_year.terms"] = "term names must differ"
    ordered = sorted(terms, key=lambda t: t["start_date"])
    for i, t in enumerate(ordered):
        if t["end_date"] < t["start_date"]:
            errors[f"new_year.terms[{terms.index(t)}]"] = "end_date must not be before start_date"
        elif t["start_date"] < start or t["end_date"] > end:
            errors[f"new_year.terms[{terms.index(t)}]"] = (
                f"must lie within the new year ({start.isoformat()} to {end.isoformat()})"
            )
        elif i and t["start_date"] <= ordered[i - 1]["end_date"]:
            errors[f"new_year.terms[{terms.index(t)}]"] = f"overlaps the term '{ordered[i - 1]['name']}'"
    taken = db.session.execute(select(AcademicYear.id).where(AcademicYear.name == name)).first()
    if taken is not None and "new_year.name" not in errors:
        errors["new_year.name"] = f"an academic year named '{name}' already exists"
    if errors:
        raise ValidationFailed(errors)
    return {"name": name, "start_date": start, "end_date": end}, terms


def _moves(source: AcademicYear) -> list[Move]:
    rows = db.session.execute(
        select(
            Enrolment.id,
            Enrolment.student_id,
            Student.user_id,
            Student.admission_number,
            Student.first_name,
            Student.last_name,
            SchoolClass.id.label("class_id"),
            SchoolClass.grade_level,
            SchoolClass.section,
            Student.grade_level.label("student_grade"),
        )
        .join(SchoolClass, SchoolClass.id == Enrolment.class_id)
        .join(Student, Student.id == Enrolment.student_id)
        .where(
            SchoolClass.academic_year_id == source.id,
            SchoolClass.deleted_at.is_(None),
            Student.deleted_at.is_(None),
            Enrolment.end_date.is_(None),
            Enrolment.start_date <= source.end_date,
        )
        .order_by(SchoolClass.grade_level, SchoolClass.section, Student.last_name, Student.id)
    ).all()
    return [
        Move(
            r.id,
            r.student_id,
            r.user_id,
            r.admission_number,
            f"{r.first_name} {r.last_name}",
            r.class_id,
            r.grade_level,
            r.section,
            r.student_grade,
        )
        for r in rows
    ]


def _resolve(moves: list[Move], classes, overrides: list[dict]):
    """Each student's action and the (grade, section) of their new class."""
    sections = defaultdict(list)
    for c in classes:
        sections[c.grade_level].append(c.section)
    for g in sections:
        sections[g].sort()
    by_student = {m.student_id: m for m in moves}
    errors = {}
    seen = set()
    for i, o in enumerate(overrides):
        sid = o["student_id"]
        if sid in seen:
            errors[f"overrides[{i}].student_id"] = f"student {sid} is named twice"
        elif sid not in by_student:
            errors[f"overrides[{i}].student_id"] = (
                f"no student {sid} with a current enrolment in a class of this year"
            )
        seen.add(sid)

    def place(grade, section):
        if grade not in sections:
            return None
        return grade, section if section in sections[grade] else sections[grade][0]

    wanted = {o["student_id"]: (i, o["action"]) for i, o in enumerate(overrides)}
    for m in moves:
        i, action = wanted.get(m.student_id, (None, "promote"))
        m.action = action
        if action == "repeat":
            m.target = (m.grade_level, m.section)
        elif action == "promote":
            m.target = place(m.grade_level + 1, m.section)
            if m.target is None:
                if i is not None:
                    errors[f"overrides[{i}].action"] = (
                        f"no class of grade {m.grade_level + 1} to promote student {m.student_id} into; "
                        "graduate, repeat or withdraw"
                    )
                m.action = "graduate"  # the top grade leaves
        else:
            m.target = None
    if errors:
        raise ValidationFailed(errors)


def _outstanding(before: date):
    """Per student: what is unpaid on their non-void invoices of terms that start before `before`."""
    return (
        select(Invoice.id, Invoice.student_id, (Invoice.total_minor - Invoice.paid_minor).label("due"))
        .join(Term, Term.id == Invoice.term_id)
        .where(Invoice.status != "void", Invoice.total_minor > Invoice.paid_minor, Term.start_date < before)
    )


def make_plan(source: AcademicYear, body: dict) -> Plan:
    source_terms = list(
        db.session.execute(
            select(Term).where(Term.academic_year_id == source.id).order_by(Term.start_date, Term.id)
        ).scalars()
    )
    year, terms = _new_year(source, source_terms, body.get("new_year"))
    classes = (
        db.session.execute(
            select(SchoolClass)
            .where(SchoolClass.academic_year_id == source.id, SchoolClass.deleted_at.is_(None))
            .order_by(SchoolClass.grade_level, SchoolClass.section)
        )
        .scalars()
        .all()
    )
    moves = _moves(source)
    _resolve(moves, classes, body.get("overrides") or [])
    plan = Plan(source, year, terms, list(classes), moves)
    class_ids = [c.id for c in classes]
    if class_ids:
        plan.class_subjects = db.session.execute(
            select(func.count()).select_from(ClassSubject).where(ClassSubject.class_id.in_(class_ids))
        ).scalar_one()
    mapped = [t["source_term_id"] for t in terms if t["source_term_id"] is not None]
    if mapped:
        plan.fee_categories = db.session.execute(
            select(func.count())
            .select_from(FeeCategory)
            .where(FeeCategory.term_id.in_(mapped), FeeCategory.carried_balance.is_(False))
        ).scalar_one()
    continuing = {m.student_id for m in plan.continuing()}
    due = _outstanding(year["start_date"]).subquery()
    for sid, amount in db.session.execute(
        select(due.c.student_id, func.sum(due.c.due)).group_by(due.c.student_id)
    ).all():
        if sid in continuing and amount:
            plan.balances[sid] = int(amount)
    return plan


def _class_label(grade, section):
    return f"grade {grade} {section}"


def preview(plan: Plan) -> dict:
    """What an apply would do: counts per class and grade, leavers by name, carried balances."""
    names = {c.id: c.name for c in plan.classes}
    new_names = {(c.grade_level, c.section): c.name for c in plan.classes}
    by_class: dict[int, dict] = {}
    by_grade: dict[int, Counter] = defaultdict(Counter)
    counts: Counter = Counter()
    leavers = {"graduate": [], "withdraw": []}
    for m in plan.moves:
        row = by_class.setdefault(
            m.class_id,
            {
                "class_id": m.class_id,
                "class_name": names.get(m.class_id),
                "grade_level": m.grade_level,
                "students": 0,
                **dict.fromkeys(("promote", "repeat", "graduate", "withdraw"), 0),
                "to": Counter(),
            },
        )
        row["students"] += 1
        row[m.action] += 1
        counts[m.action] += 1
        by_grade[m.grade_level][m.action] += 1
        by_grade[m.grade_level]["students"] += 1
        if m.target is not None:
            row["to"][new_names[m.target]] += 1
        else:
            leavers[m.action].append(
                {"student_id": m.student_id, "admission_number": m.admission_number, "name": m.name}
            )
    classes = []
    for row in by_class.values():
        row["to"] = [{"class_name": k, "students": v} for k, v in sorted(row["to"].items())]
        classes.append(row)
    return {
        "source_year": {"id": plan.source.id, "name": plan.source.name},
        "new_year": {
            **{k: (v.isoformat() if isinstance(v, date) else v) for k, v in plan.year.items()},
            "terms": [
                {
                    "name": t["name"],
                    "start_date": t["start_date"].isoformat(),
                    "end_date": t["end_date"].isoformat(),
                }
                for t in plan.terms
            ],
        },
        "classes_copied": len(plan.classes),
        "class_subjects_copied": plan.class_subjects,
        "fee_categories_copied": plan.fee_categories,
        "students": len(plan.moves),
        "promoted": counts["promote"],
        "repeating": counts["repeat"],
        "graduating": counts["graduate"],
        "withdrawn": counts["withdraw"],
        "by_grade": [
            {
                "grade_level": g,
                "students": c["students"],
                "promote": c["promote"],
                "repeat": c["repeat"],
                "graduate": c["graduate"],
                "withdraw": c["withdraw"],
            }
            for g, c in sorted(by_grade.items())
        ],
        "by_class": classes,
        "graduates": leavers["graduate"],
        "withdrawals": leavers["withdraw"],
        "carried_balances": {
            "students": len(plan.balances),
            "total_minor": sum(plan.balances.values()),
        },
    }


# --- the API's operations --------------------------------------------------------------------------------


def rollover_of(year_id) -> Rollover | None:
    """The year's rollover that is not undone, else its latest one."""
    return db.session.execute(
        select(Rollover)
        .where(Rollover.source_year_id == year_id)
        .order_by((Rollover.status == "undone").asc(), Rollover.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def rollover_out(ro: Rollover) -> dict:
    job = db.session.get(Job, ro.job_id) if ro.job_id else None
    return {
        "id": ro.id,
        "source_year_id": ro.source_year_id,
        "target_year_id": ro.target_year_id,
        "status": ro.status,
        "summary": ro.summary,
        "created_at": ro.created_at,
        "applied_at": ro.applied_at,
        "undone_at": ro.undone_at,
        "job": None
        if job is None
        else {
            "id": job.id,
            "status": job.status,
            "progress": {
                "percent": 100 if job.status == "done" else job.progress_percent or 0,
                "steps_done": job.rows_done or 0,
                "steps": job.row_count or STEPS,
            },
            "error": job.error,
            "attempts": job.attempts,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        },
    }


def _plain(body) -> dict:
    """The request as JSON (dates as text): stored on the rollover, re-read by the job."""
    new_year = dict(body.get("new_year") or {})
    for k in ("start_date", "end_date"):
        if new_year.get(k):
            new_year[k] = new_year[k].isoformat()
    if new_year.get("terms"):
        new_year["terms"] = [
            {**t, "start_date": t["start_date"].isoformat(), "end_date": t["end_date"].isoformat()}
            for t in new_year["terms"]
        ]
    return {"new_year": new_year, "overrides": list(body.get("overrides") or [])}


def _parsed(stored: dict) -> dict:
    new_year = dict(stored.get("new_year") or {})
    for k in ("start_date", "end_date"):
        if new_year.get(k):
            new_year[k] = date.fromisoformat(new_year[k])
    if new_year.get("terms"):
        new_year["terms"] = [
            {
                **t,
                "start_date": date.fromisoformat(t["start_date"]),
                "end_date": date.fromisoformat(t["end_date"]),
            }
            for t in new_year["terms"]
        ]
    return {"new_year": new_year, "overrides": stored.get("overrides") or []}


def request_rollover(year_id, body: dict, principal) -> tuple[Rollover | None, dict | None, bool]:
    """dry_run: (None, preview, False). Otherwise (rollover, None, created): a new rollover queued as a
    job, or the year's existing one (nothing changes; created False)."""
    source = year_or_404(year_id, lock=not body.get("dry_run"))
    if body.get("dry_run"):
        plan = make_plan(source, body)
        result = preview(plan)
        db.session.rollback()
        return None, result, False
    existing = rollover_of(source.id)
    if existing is not None and existing.status in ("queued", "running", "applied"):
        db.session.rollback()
        return existing, None, False
    make_plan(source, body)  # a request that cannot be applied is a 422 now, not a failed job later
    now = utcnow()
    if existing is not None and existing.status == "failed":
        ro = existing
        ro.status, ro.request, ro.summary, ro.created_ids = "queued", _plain(body), None, None
    else:
        ro = Rollover(
            source_year_id=source.id,
            status="queued",
            request=_plain(body),
            requested_by_id=principal.user_id,
            created_at=now,
            updated_at=now,
        )
        db.session.add(ro)
    job = Job(
        job_type=JOB_TYPE,
        kind="rollover",
        params={"source_year_id": source.id},
        dry_run=False,
        status="queued",
        row_count=STEPS,
        requested_by_id=principal.user_id,
        attempts=0,
        progress_percent=0,
        rows_done=0,
        created_at=now,
        updated_at=now,
    )
    db.session.add(job)
    db.session.flush()
    ro.job_id = job.id
    db.session.flush()
    audit.record("create", "rollover", ro.id, {"source_year_id": [None, source.id], "job_id": [None, job.id]})
    enqueue_after_commit(ROLLOVER_TASK, job.id)
    db.session.commit()
    return ro, None, True


# --- the apply (tasks.rollover.run_rollover) --------------------------------------------------------------


def run_rollover(job_id):
    with running_job(job_id, JOB_TYPE) as run:
        if run is None:
            return None
        ro = db.session.execute(
            select(Rollover).where(Rollover.job_id == job_id).with_for_update()
        ).scalar_one_or_none()
        if ro is None:
            mark_failed(job_id, "The rollover this job was for no longer exists.")
            return None
        if ro.status == "applied":  # a second delivery: done already, nothing changes
            finish(run, result=ro.summary, rows_done=STEPS)
            db.session.commit()
            return ro.summary
        try:
            summary = apply(ro, lambda step: run.progress(step, STEPS))
        except ApiError as exc:  # the school changed since the request (a year of that name was added)
            db.session.rollback()
            message = f"The rollover cannot be applied: {exc.detail}"
            if getattr(exc, "errors", None):
                message += " " + "; ".join(f"{k}: {v}" for k, v in exc.errors.items())
            db.session.execute(
                update(Rollover).where(Rollover.job_id == job_id).values(status="failed", updated_at=utcnow())
            )
            db.session.commit()
            mark_failed(job_id, message)
            return None
        if not finish(run, result=summary, rows_done=STEPS):
            db.session.rollback()
            return None
        db.session.commit()
        log.info("job %s: rollover %s applied: %s", job_id, ro.id, summary)
        return summary


def apply(ro: Rollover, progress=lambda step: None) -> dict:
    """Apply the rollover `ro` (queued) in the current transaction; returns its summary."""
    source = year_or_404(ro.source_year_id, lock=True)
    plan = make_plan(source, _parsed(ro.request or {}))
    iid, now = current_institution_id(), utcnow()
    made: dict = {}

    # 1. the year and its terms
    year = AcademicYear(
        name=plan.year["name"],
        start_date=plan.year["start_date"],
        end_date=plan.year["end_date"],
        is_current=False,
        created_at=now,
        updated_at=now,
    )
    db.session.add(year)
    db.session.flush()
    term_of = {}  # source term id -> new term id
    new_terms = []
    for t in plan.terms:
        term = Term(
            academic_year_id=year.id,
            name=t["name"],
            start_date=t["start_date"],
            end_date=t["end_date"],
            created_at=now,
            updated_at=now,
        )
        db.session.add(term)
        new_terms.append((t, term))
    db.session.flush()
    for t, term in new_terms:
        if t["source_term_id"] is not None:
            term_of[t["source_term_id"]] = term.id
    made["year_id"], made["term_ids"] = year.id, [term.id for _, term in new_terms]
    progress(1)

    # 2. classes (same names, grades, sections) and their class subjects
    class_of = {}
    for c in plan.classes:
        copy = SchoolClass(
            academic_year_id=year.id,
            name=c.name,
            grade_level=c.grade_level,
            section=c.section,
            homeroom_teacher_id=c.homeroom_teacher_id,
            capacity=c.capacity,
            created_at=now,
            updated_at=now,
        )
        db.session.add(copy)
        class_of[c.id] = copy
    db.session.flush()
    new_class = {(c.grade_level, c.section): class_of[c.id].id for c in plan.classes}
    class_of = {old: copy.id for old, copy in class_of.items()}
    made["class_ids"] = sorted(class_of.values())
    old_cls, new_cls = SchoolClass.__table__.alias("old_cls"), SchoolClass.__table__.alias("new_cls")
    cs = ClassSubject.__table__
    stamp = literal(now, ClassSubject.created_at.type)
    db.session.execute(
        insert(ClassSubject).from_select(
            ["institution_id", "class_id", "subject_id", "teacher_id", "created_at", "updated_at"],
            select(literal(iid), new_cls.c.id, cs.c.subject_id, cs.c.teacher_id, stamp, stamp)
            .select_from(cs)
            .join(old_cls, old_cls.c.id == cs.c.class_id)
            .join(
                new_cls,
                and_(
                    new_cls.c.academic_year_id == year.id,
                    new_cls.c.institution_id == iid,
                    new_cls.c.grade_level == old_cls.c.grade_level,
                    new_cls.c.section == old_cls.c.section,
                ),
            )
            .where(
                old_cls.c.academic_year_id == source.id,
                old_cls.c.deleted_at.is_(None),
                cs.c.institution_id == iid,
            ),
        )
    )
    progress(2)

    # 3. fee structures, term by term
    categories = (
        db.session.execute(
            select(FeeCategory).where(
                FeeCategory.term_id.in_(list(term_of)), FeeCategory.carried_balance.is_(False)
            )
        )
        .scalars()
        .all()
        if term_of
        else []
    )
    term_start = {t["source_term_id"]: (t["start_date"]) for t in plan.terms if t["source_term_id"]}
    old_start = {
        t.id: t.start_date
        for t in db.session.execute(select(Term).where(Term.academic_year_id == source.id)).scalars()
    }
    copies = []
    for fc in categories:
        if fc.class_id is not None and fc.class_id not in class_of:
            continue  # a category of a deleted class
        moved = term_start[fc.term_id] - old_start[fc.term_id]
        copies.append(
            FeeCategory(
                term_id=term_of[fc.term_id],
                name=fc.name,
                amount_minor=fc.amount_minor,
                grade_level=fc.grade_level,
                class_id=class_of[fc.class_id] if fc.class_id is not None else None,
                due_date=fc.due_date + moved if fc.due_date else None,
                carried_balance=False,
                created_at=now,
                updated_at=now,
            )
        )
    db.session.add_all(copies)
    db.session.flush()
    made["fee_category_ids"] = [fc.id for fc in copies]
    progress(3)

    # 4. enrolments: the old ones end on the old year's last day, the new ones start on the new year's first
    moves = plan.moves
    new_start = plan.year["start_date"]
    reason = f"Rollover from {source.name}"
    if moves:
        for ids in in_chunks([m.enrolment_id for m in moves], ENROLMENTS_PER_STATEMENT):
            db.session.execute(
                update(Enrolment)
                .where(Enrolment.id.in_(ids), Enrolment.end_date.is_(None))
                .values(end_date=source.end_date, updated_at=now)
                .execution_options(synchronize_session=False)
            )
        staying = plan.continuing()
        if staying:
            db.session.execute(
                insert(Enrolment),
                [
                    {
                        "institution_id": iid,
                        "student_id": m.student_id,
                        "class_id": new_class[m.target],
                        "start_date": new_start,
                        "end_date": None,
                        "reason": reason,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for m in staying
                ],
            )
            by_grade = defaultdict(list)
            for m in staying:
                by_grade[m.target[0]].append(m.student_id)
            for grade, ids in by_grade.items():
                db.session.execute(
                    update(Student)
                    .where(Student.id.in_(ids))
                    .values(grade_level=grade, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
    made["ended_enrolment_ids"] = [m.enrolment_id for m in moves]
    grades = defaultdict(list)
    for m in moves:  # students.grade_level before: the undo puts it back
        grades["none" if m.student_grade is None else str(m.student_grade)].append(m.student_id)
    made["grade_levels"] = dict(grades)
    progress(4)

    # 5. graduates and withdrawals: status, and their logins end
    leavers = defaultdict(list)
    for m in moves:
        if m.action in LEAVING:
            leavers[m.action].append(m)
    ended_users = []
    for action, ms in leavers.items():
        ids = [m.student_id for m in ms]
        db.session.execute(
            update(Student)
            .where(Student.id.in_(ids))
            .values(status=LEAVING[action], updated_at=now)
            .execution_options(synchronize_session=False)
        )
        users = [m.user_id for m in ms if m.user_id is not None]
        if users:
            ended_users += (
                db.session.execute(
                    update(User)
                    .where(User.id.in_(users), User.is_active.is_(True))
                    .values(is_active=False, updated_at=now)
                    .returning(User.id)
                    .execution_options(synchronize_session=False)
                )
                .scalars()
                .all()
            )
    if ended_users:
        # as people.services.end_access does for one person, for every leaver at once
        audit.record_many(
            [
                audit.entry("update", "user", u, {"is_active": [True, False]}, actor_id=ro.requested_by_id)
                for u in ended_users
            ]
        )
        sessions = (
            db.session.execute(
                select(AuthSession.id).where(
                    AuthSession.user_id.in_(ended_users), AuthSession.revoked_at.is_(None)
                ),
                execution_options={"skip_tenant": True},
            )
            .scalars()
            .all()
        )
        revoke_sessions(list(sessions), "person_left")
    made["left"] = {LEAVING[a]: [m.student_id for m in ms] for a, ms in leavers.items()}
    made["deactivated_user_ids"] = ended_users
    progress(5)

    # 6. balances: carried forward from the old invoices, brought forward on the new first invoice
    carried = {"students": 0, "total_minor": 0}
    first = min(new_terms, key=lambda tt: tt[0]["start_date"])[1] if new_terms else None
    last_old = max(old_start.items(), key=lambda kv: kv[1])[0] if old_start else None
    if plan.balances and first is not None and last_old is not None:
        out_cat = FeeCategory(
            term_id=last_old,
            name=f"Balance carried forward to {year.name}"[:100],
            amount_minor=0,
            carried_balance=True,
            created_at=now,
            updated_at=now,
        )
        in_cat = FeeCategory(
            term_id=first.id,
            name=f"Balance brought forward from {source.name}"[:100],
            amount_minor=0,
            carried_balance=True,
            created_at=now,
            updated_at=now,
        )
        db.session.add_all([out_cat, in_cat])
        db.session.flush()
        made["carry_category_ids"] = [out_cat.id, in_cat.id]
        staying_students = (
            select(Enrolment.student_id).where(Enrolment.class_id.in_(made["class_ids"])).scalar_subquery()
        )
        due = _outstanding(new_start).where(Invoice.student_id.in_(staying_students)).subquery("due")
        db.session.execute(
            insert_for(InvoiceLine).from_select(
                ["institution_id", "invoice_id", "fee_category_id", "description", "amount_minor"],
                select(literal(iid), due.c.id, literal(out_cat.id), literal(out_cat.name), -due.c.due).where(
                    true()
                ),
            )
        )
        out_lines = (
            select(InvoiceLine.invoice_id, InvoiceLine.amount_minor)
            .where(InvoiceLine.fee_category_id == out_cat.id)
            .subquery("out_lines")
        )
        db.session.execute(
            update(Invoice)
            .where(Invoice.id == out_lines.c.invoice_id)
            .values(total_minor=Invoice.total_minor + out_lines.c.amount_minor, status="paid", updated_at=now)
            .execution_options(synchronize_session=False)
        )
        sums = (
            select(Invoice.student_id, (-func.sum(InvoiceLine.amount_minor)).label("amount"))
            .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
            .where(InvoiceLine.fee_category_id == out_cat.id)
            .group_by(Invoice.student_id)
        ).subquery("sums")
        stamp = literal(now, Invoice.created_at.type)
        # the number generate_invoices gives (app/finance/services.py), so its later run finds this invoice
        number = literal(f"INV-{first.id}-") + cast(sums.c.student_id, Invoice.number.type)
        db.session.execute(
            insert_for(Invoice)
            .from_select(
                [
                    "institution_id",
                    "student_id",
                    "term_id",
                    "number",
                    "status",
                    "total_minor",
                    "paid_minor",
                    "due_date",
                    "created_at",
                    "updated_at",
                ],
                select(
                    literal(iid),
                    sums.c.student_id,
                    literal(first.id),
                    number,
                    literal("open"),
                    sums.c.amount,
                    literal(0),
                    literal(first.start_date),
                    stamp,
                    stamp,
                ).where(true()),
            )
            .on_conflict_do_nothing()
        )
        db.session.execute(
            insert_for(InvoiceLine).from_select(
                ["institution_id", "invoice_id", "fee_category_id", "description", "amount_minor"],
                select(
                    literal(iid), Invoice.id, literal(in_cat.id), literal(in_cat.name), Invoice.total_minor
                ).where(Invoice.term_id == first.id, Invoice.institution_id == iid),
            )
        )
        carried["students"], carried["total_minor"] = db.session.execute(
            select(func.count(), func.coalesce(func.sum(InvoiceLine.amount_minor), 0)).where(
                InvoiceLine.fee_category_id == in_cat.id
            )
        ).one()
        carried["total_minor"] = int(carried["total_minor"])
    progress(6)

    counts = Counter(m.action for m in moves)
    summary = {
        "source_year": {"id": source.id, "name": source.name},
        "new_year": {
            "id": year.id,
            "name": year.name,
            "start_date": year.start_date.isoformat(),
            "end_date": year.end_date.isoformat(),
            "term_ids": made["term_ids"],
        },
        "classes_copied": len(plan.classes),
        "class_subjects_copied": plan.class_subjects,
        "fee_categories_copied": len(copies),
        "students": len(moves),
        "promoted": counts["promote"],
        "repeating": counts["repeat"],
        "graduated": counts["graduate"],
        "withdrawn": counts["withdraw"],
        "accounts_ended": len(ended_users),
        "carried_balances": carried,
    }
    ro.status, ro.target_year_id, ro.summary, ro.created_ids = "applied", year.id, summary, dict(made)
    ro.applied_at = ro.updated_at = now
    audit.record(
        "update", "rollover", ro.id, {"status": ["queued", "applied"], "target_year_id": [None, year.id]}
    )
    return summary


# --- undo -------------------------------------------------------------------------------------------------


def _in_new_year(ro: Rollover) -> dict:
    """What the new year already holds that an undo would destroy: attendance, grades, payments."""
    made = ro.created_ids or {}
    class_ids, term_ids = made.get("class_ids") or [], made.get("term_ids") or []
    found = {}
    if class_ids:
        n = db.session.execute(
            select(func.count()).select_from(AttendanceRecord).where(AttendanceRecord.class_id.in_(class_ids))
        ).scalar_one()
        if n:
            found["attendance_records"] = n
    if term_ids:
        n = db.session.execute(
            select(func.count())
            .select_from(Grade)
            .join(Assessment, Assessment.id == Grade.assessment_id)
            .where(Assessment.term_id.in_(term_ids))
        ).scalar_one()
        if n:
            found["grades"] = n
        n = db.session.execute(
            select(func.count())
            .select_from(Payment)
            .join(Invoice, Invoice.id == Payment.invoice_id)
            .where(Invoice.term_id.in_(term_ids))
        ).scalar_one()
        if n:
            found["payments"] = n
    return found


def undo(year_id) -> Rollover:
    source = year_or_404(year_id, lock=True)
    ro = rollover_of(source.id)
    if ro is None or ro.status == "undone":
        raise NotFound("rollover")
    if ro.status != "applied":
        raise Conflict(
            f"The rollover of {source.name} is {ro.status}; only an applied rollover can be undone."
        )
    found = _in_new_year(ro)
    if found:
        what = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in found.items())
        raise Conflict(
            f"The new year already has {what}; the rollover of {source.name} can no longer be undone.",
            extra={"existing": found},
        )
    made = ro.created_ids or {}
    now = utcnow()
    term_ids, class_ids = made.get("term_ids") or [], made.get("class_ids") or []
    carry = made.get("carry_category_ids") or []
    if carry:
        out_cat = carry[0]
        out_lines = (
            select(InvoiceLine.invoice_id, InvoiceLine.amount_minor)
            .where(InvoiceLine.fee_category_id == out_cat)
            .subquery("out_lines")
        )
        total = Invoice.total_minor - out_lines.c.amount_minor
        db.session.execute(
            update(Invoice)
            .where(Invoice.id == out_lines.c.invoice_id)
            .values(
                total_minor=total,
                status=case(
                    (Invoice.paid_minor >= total, "paid"),
                    (Invoice.paid_minor > 0, "partially_paid"),
                    else_="open",
                ),
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        db.session.execute(delete(InvoiceLine).where(InvoiceLine.fee_category_id == out_cat))
    try:
        if term_ids:
            new_invoices = select(Invoice.id).where(Invoice.term_id.in_(term_ids)).scalar_subquery()
            db.session.execute(delete(InvoiceLine).where(InvoiceLine.invoice_id.in_(new_invoices)))
            db.session.execute(delete(Invoice).where(Invoice.term_id.in_(term_ids)))
            db.session.execute(delete(FeeCategory).where(FeeCategory.term_id.in_(term_ids)))
        if carry:
            db.session.execute(delete(FeeCategory).where(FeeCategory.id.in_(carry)))
        if class_ids:
            db.session.execute(delete(Enrolment).where(Enrolment.class_id.in_(class_ids)))
            db.session.execute(delete(ClassSubject).where(ClassSubject.class_id.in_(class_ids)))
            db.session.execute(delete(SchoolClass).where(SchoolClass.id.in_(class_ids)))
        if made.get("year_id"):
            db.session.execute(delete(Term).where(Term.academic_year_id == made["year_id"]))
            db.session.execute(delete(AcademicYear).where(AcademicYear.id == made["year_id"]))
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(
            f"The new year has records that refer to it (assessments, closures, lessons or remarks); "
            f"remove them first to undo the rollover of {source.name}."
        ) from None
    ended = made.get("ended_enrolment_ids") or []
    for ids in in_chunks(ended, ENROLMENTS_PER_STATEMENT):
        db.session.execute(
            update(Enrolment)
            .where(Enrolment.id.in_(ids), Enrolment.end_date == source.end_date)
            .values(end_date=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    for grade, ids in (made.get("grade_levels") or {}).items():
        db.session.execute(
            update(Student)
            .where(Student.id.in_(ids))
            .values(grade_level=None if grade == "none" else int(grade), updated_at=now)
            .execution_options(synchronize_session=False)
        )
    left = [sid for ids in (made.get("left") or {}).values() for sid in ids]
    if left:
        db.session.execute(
            update(Student)
            .where(Student.id.in_(left))
            .values(status="active", updated_at=now)
            .execution_options(synchronize_session=False)
        )
    users = made.get("deactivated_user_ids") or []
    if users:
        db.session.execute(
            update(User)
            .where(User.id.in_(users))
            .values(is_active=True, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    ro.status, ro.target_year_id, ro.undone_at, ro.updated_at = "undone", None, now, now
    audit.record("update", "rollover", ro.id, {"status": ["applied", "undone"]})
    db.session.commit()
    return ro
