"""Enrolment moves that keep history (who reaches which classes and students: app/access/rules.py)."""

from datetime import date, timedelta

from sqlalchemy import or_, select

from app.academics.models import Enrolment, SchoolClass
from app.audit import services as audit
from app.core.crud import flush_or_conflict
from app.core.errors import Conflict, ValidationFailed
from app.extensions import db
from app.people.models import Student

OPEN = "open-ended"


def describe(e: Enrolment) -> str:
    """An enrolment as the school reads it: "enrolment 34 (Grade 7 B, 2025-01-06 to open-ended)"."""
    name = db.session.execute(select(SchoolClass.name).where(SchoolClass.id == e.class_id)).scalar()
    where = name or f"class {e.class_id}"
    until = e.end_date.isoformat() if e.end_date else OPEN
    return f"enrolment {e.id} ({where}, {e.start_date.isoformat()} to {until})"


def clashes(student_id, start: date, end: date | None, exclude=()) -> list[Enrolment]:
    """The student's enrolments that share a day with [start, end] (end None: open-ended), oldest first.
    The rule of the exclusion constraint ex_enrolments_student_dates (PostgreSQL), checked here so the
    embedded default (SQLite) keeps it too and every clash is named."""
    stmt = select(Enrolment).where(
        Enrolment.student_id == student_id,
        or_(Enrolment.end_date.is_(None), Enrolment.end_date >= start),
    )
    if end is not None:
        stmt = stmt.where(Enrolment.start_date <= end)
    if exclude:
        stmt = stmt.where(Enrolment.id.not_in(list(exclude)))
    return list(db.session.execute(stmt.order_by(Enrolment.start_date, Enrolment.id)).scalars())


def clash_out(e: Enrolment) -> dict:
    """The enrolment a 409 names, as the problem's `clashing_enrolment` member."""
    return {
        "id": e.id,
        "class_id": e.class_id,
        "start_date": e.start_date.isoformat(),
        "end_date": e.end_date.isoformat() if e.end_date else None,
    }


def clash_conflict(student_id, clash: Enrolment, field="start_date") -> Conflict:
    where = describe(clash)
    return Conflict(
        f"Student {student_id} is already enrolled on some of these dates: {where}. "
        "A student has at most one enrolment on any date; end or change that enrolment first, "
        "or move the student with a transfer.",
        errors={field: f"overlaps {where}"},
        extra={"clashing_enrolment": clash_out(clash)},
    )


def refuse_clash(student_id, start, end, exclude=(), field="start_date"):
    found = clashes(student_id, start, end, exclude)
    if found:
        raise clash_conflict(student_id, found[0], field)


def _live_student(student_id) -> Student:
    """The student, row-locked (PostgreSQL): enrolment changes for one student are made one at a time,
    so two concurrent moves cannot both pass the clash check."""
    student = db.session.execute(
        select(Student).where(Student.id == student_id, Student.deleted_at.is_(None)).with_for_update()
    ).scalar_one_or_none()
    if student is None:
        raise ValidationFailed({"student_id": f"no such student ({student_id})"})
    return student


def _live_class(class_id) -> SchoolClass:
    klass = db.session.execute(
        select(SchoolClass).where(SchoolClass.id == class_id, SchoolClass.deleted_at.is_(None))
    ).scalar_one_or_none()
    if klass is None:
        raise ValidationFailed({"class_id": f"no such class ({class_id})"})
    return klass


def _close(current: Enrolment, last_day: date):
    current.end_date = last_day
    audit.record("update", "enrolment", current.id, {"end_date": [None, last_day.isoformat()]})


def _create(student_id, class_id, start: date, end: date | None, reason) -> Enrolment:
    new = Enrolment(student_id=student_id, class_id=class_id, start_date=start, end_date=end, reason=reason)
    db.session.add(new)
    flush_or_conflict()  # the exclusion constraint settles a race the check above could not see
    changes = {
        "student_id": [None, student_id],
        "class_id": [None, class_id],
        "start_date": [None, start.isoformat()],
    }
    if end is not None:
        changes["end_date"] = [None, end.isoformat()]
    audit.record("create", "enrolment", new.id, changes)
    return new


def enrol(student_id, class_id, start: date, reason=None, end: date | None = None):
    """Put a student in a class from `start` (to `end`, or open-ended).

    Open-ended, with a current enrolment elsewhere that began before `start`: that one is closed the day
    before (a move). Anything else the new dates share with another enrolment is a 409 naming it:
    backdating is allowed only where it overlaps nothing."""
    _live_student(student_id)
    _live_class(class_id)
    if end is not None and end < start:
        raise ValidationFailed({"end_date": "must not be before start_date"})
    current = db.session.execute(
        select(Enrolment).where(Enrolment.student_id == student_id, Enrolment.end_date.is_(None))
    ).scalar_one_or_none()
    moving = end is None and current is not None and current.start_date < start
    if moving and current.class_id == class_id:
        raise ValidationFailed({"class_id": "the student is already enrolled in this class"})
    refuse_clash(student_id, start, end, exclude=(current.id,) if moving else ())
    if moving:
        _close(current, start - timedelta(days=1))
    return _create(student_id, class_id, start, end, reason)


def transfer(enrolment: Enrolment, class_id, day: date, reason=None) -> tuple[Enrolment, Enrolment]:
    """One operation: `enrolment` ends the day before `day`, a new one in `class_id` starts on `day`.
    A second transfer of the same day finds the first one's enrolment starting that day: a 409."""
    _live_student(enrolment.student_id)
    _live_class(class_id)
    if class_id == enrolment.class_id:
        raise ValidationFailed({"class_id": "the student is already in this class"})
    if enrolment.end_date is not None and enrolment.end_date < day:
        raise Conflict(
            f"The {describe(enrolment)} has ended; transfer the student from the enrolment that covers "
            f"{day.isoformat()}.",
            errors={"date": f"after the end of enrolment {enrolment.id}"},
            extra={"clashing_enrolment": clash_out(enrolment)},
        )
    if day <= enrolment.start_date:
        raise Conflict(
            f"The {describe(enrolment)} starts on {enrolment.start_date.isoformat()}: a transfer on "
            f"{day.isoformat()} would leave it no day. A student moves once per day; change that "
            "enrolment instead.",
            errors={"date": f"not after the start of enrolment {enrolment.id}"},
            extra={"clashing_enrolment": clash_out(enrolment)},
        )
    end = enrolment.end_date  # a transfer inside a closed enrolment keeps its end for the new class
    refuse_clash(enrolment.student_id, day, end, exclude=(enrolment.id,), field="date")
    _close(enrolment, day - timedelta(days=1))
    new = _create(enrolment.student_id, class_id, day, end, reason or "Transfer")
    return enrolment, new


def change_enrolment(enrolment: Enrolment, values: dict) -> Enrolment:
    """Move an enrolment's dates (backdate its start, correct its end) or its reason; the new dates
    must overlap no other enrolment of the student."""
    _live_student(enrolment.student_id)
    start = values.get("start_date", enrolment.start_date)
    end = values.get("end_date", enrolment.end_date)
    if start is None:
        raise ValidationFailed({"start_date": "must not be null"})
    if end is not None and end < start:
        raise ValidationFailed({"end_date": "must not be before start_date"})
    field = "start_date" if "start_date" in values else "end_date"
    refuse_clash(enrolment.student_id, start, end, exclude=(enrolment.id,), field=field)
    audit.apply_update(enrolment, values, "enrolment")
    flush_or_conflict()
    return enrolment


def end_enrolment(enrolment: Enrolment, end: date):
    if enrolment.end_date is not None:
        raise ValidationFailed({"end_date": "this enrolment has already ended"})
    if end < enrolment.start_date:
        raise ValidationFailed({"end_date": "must not be before the start date"})
    enrolment.end_date = end
    audit.record("update", "enrolment", enrolment.id, {"end_date": [None, end.isoformat()]})


def active_class_ids(institution_id) -> list[int]:
    """Every class of an institution that is not deleted (cache warming runs outside any request)."""
    return list(
        db.session.execute(
            select(SchoolClass.id).where(
                SchoolClass.institution_id == institution_id, SchoolClass.deleted_at.is_(None)
            ),
            execution_options={"skip_tenant": True},
        ).scalars()
    )
