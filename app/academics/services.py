"""Enrolment moves that keep history (who reaches which classes and students: app/access/rules.py)."""

from datetime import date, timedelta

from sqlalchemy import select

from app.academics.models import Enrolment, SchoolClass
from app.audit import services as audit
from app.core.errors import ValidationFailed
from app.extensions import db
from app.people.models import Student


def enrol(student_id, class_id, start: date, reason=None):
    """Put a student in a class from `start`; a current enrolment elsewhere is closed the day before."""
    student = db.session.execute(
        select(Student).where(Student.id == student_id, Student.deleted_at.is_(None))
    ).scalar_one_or_none()
    if student is None:
        raise ValidationFailed({"student_id": f"no such student ({student_id})"})
    klass = db.session.execute(
        select(SchoolClass).where(SchoolClass.id == class_id, SchoolClass.deleted_at.is_(None))
    ).scalar_one_or_none()
    if klass is None:
        raise ValidationFailed({"class_id": f"no such class ({class_id})"})
    current = db.session.execute(
        select(Enrolment)
        .where(Enrolment.student_id == student_id, Enrolment.end_date.is_(None))
        .with_for_update()
    ).scalar_one_or_none()
    if current is not None:
        if current.class_id == class_id:
            raise ValidationFailed({"class_id": "the student is already enrolled in this class"})
        if start <= current.start_date:
            raise ValidationFailed(
                {
                    "start_date": f"must be after the current enrolment's start "
                    f"({current.start_date.isoformat()})"
                }
            )
        current.end_date = start - timedelta(days=1)
        audit.record("update", "enrolment", current.id, {"end_date": [None, current.end_date.isoformat()]})
    new = Enrolment(student_id=student_id, class_id=class_id, start_date=start, reason=reason)
    db.session.add(new)
    db.session.flush()
    audit.record(
        "create",
        "enrolment",
        new.id,
        {
            "student_id": [None, student_id],
            "class_id": [None, class_id],
            "start_date": [None, start.isoformat()],
        },
    )
    return new


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
