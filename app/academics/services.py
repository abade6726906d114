"""Who sees which classes and students, and enrolment moves that keep history."""

from datetime import date, timedelta

from sqlalchemy import exists, select, union

from app.academics.models import ClassSubject, Enrolment, SchoolClass
from app.audit import services as audit
from app.core.errors import NotFound, ValidationFailed
from app.extensions import db
from app.people.models import Student, StudentGuardian


def teacher_class_ids(teacher_id):
    """Classes a teacher teaches a subject in, or leads as homeroom teacher."""
    return union(
        select(ClassSubject.class_id).where(ClassSubject.teacher_id == teacher_id),
        select(SchoolClass.id).where(SchoolClass.homeroom_teacher_id == teacher_id),
    )


def current_class_of(student_ids):
    return select(Enrolment.class_id).where(
        Enrolment.student_id.in_(student_ids), Enrolment.end_date.is_(None)
    )


def own_student_ids(p):
    """For guardians and students: the students they may see."""
    if p.role == "student":
        return select(Student.id).where(Student.id == (p.student_id or -1))
    return select(StudentGuardian.student_id).where(StudentGuardian.guardian_id == (p.guardian_id or -1))


def scope_classes(stmt, p, model=SchoolClass, column=None):
    column = column if column is not None else model.id
    if p.role in ("admin", "accountant"):
        return stmt
    if p.role == "teacher":
        return stmt.where(column.in_(teacher_class_ids(p.teacher_id or -1)))
    return stmt.where(column.in_(current_class_of(own_student_ids(p))))


def scope_students(stmt, p, column=None):
    column = column if column is not None else Student.id
    if p.role in ("admin", "accountant"):
        return stmt
    if p.role == "teacher":
        taught = teacher_class_ids(p.teacher_id or -1)
        return stmt.where(
            exists().where(
                Enrolment.student_id == column, Enrolment.end_date.is_(None), Enrolment.class_id.in_(taught)
            )
        )
    return stmt.where(column.in_(own_student_ids(p)))


def class_in_scope_or_404(class_id, principal):
    stmt = scope_classes(
        select(SchoolClass).where(SchoolClass.id == class_id, SchoolClass.deleted_at.is_(None)), principal
    )
    klass = db.session.execute(stmt).scalar_one_or_none()
    if klass is None:
        raise NotFound("class")
    return klass


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
