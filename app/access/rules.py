"""Which classes, students, guardians and enrolments a caller reaches, one function per rule.

Admins and accountants reach the whole school; a teacher the classes they teach a subject in or lead
as homeroom teacher, and the students currently enrolled in them; a guardian their own children; a
student themself. A `scope_*` function narrows a SELECT to what the principal reaches; an `*_or_404`
function answers 404 for a record out of reach, exactly as for a missing one.
"""

from sqlalchemy import exists, select, union

from app.academics.models import ClassSubject, Enrolment, SchoolClass
from app.core.errors import NotFound
from app.extensions import db
from app.people.models import Guardian, Student, StudentGuardian

WHOLE_SCHOOL = ("admin", "accountant")
FAMILY = ("guardian", "student")


def sees_whole_school(p) -> bool:
    return p.role in WHOLE_SCHOOL


def sees_own_family_only(p) -> bool:
    """Guardians and students: only their own children / themself, never a whole class."""
    return p.role in FAMILY


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


def taught_student_ids(teacher_id):
    """Students currently enrolled in a class the teacher teaches or leads."""
    return select(Enrolment.student_id).where(
        Enrolment.end_date.is_(None), Enrolment.class_id.in_(teacher_class_ids(teacher_id))
    )


def scope_classes(stmt, p, model=SchoolClass, column=None):
    column = column if column is not None else model.id
    if sees_whole_school(p):
        return stmt
    if p.role == "teacher":
        return stmt.where(column.in_(teacher_class_ids(p.teacher_id or -1)))
    return stmt.where(column.in_(current_class_of(own_student_ids(p))))


def scope_students(stmt, p, column=None):
    column = column if column is not None else Student.id
    if sees_whole_school(p):
        return stmt
    if p.role == "teacher":
        taught = teacher_class_ids(p.teacher_id or -1)
        return stmt.where(
            exists().where(
                Enrolment.student_id == column, Enrolment.end_date.is_(None), Enrolment.class_id.in_(taught)
            )
        )
    return stmt.where(column.in_(own_student_ids(p)))


def scope_enrolments(stmt, p):
    """The enrolments of the students the caller reaches (their whole history, every class)."""
    return scope_students(stmt, p, column=Enrolment.student_id)


def scope_guardians(stmt, p):
    if sees_whole_school(p):
        return stmt
    if p.role == "guardian":
        return stmt.where(Guardian.id == (p.guardian_id or -1))
    if p.role == "teacher":  # the guardians of the teacher's students
        students = taught_student_ids(p.teacher_id or -1)
    else:
        students = own_student_ids(p)
    return stmt.where(
        Guardian.id.in_(select(StudentGuardian.guardian_id).where(StudentGuardian.student_id.in_(students)))
    )


def class_in_scope_or_404(class_id, p):
    stmt = scope_classes(
        select(SchoolClass).where(SchoolClass.id == class_id, SchoolClass.deleted_at.is_(None)), p
    )
    klass = db.session.execute(stmt).scalar_one_or_none()
    if klass is None:
        raise NotFound("class")
    return klass


def student_in_scope_or_404(student_id, p):
    stmt = select(Student).where(Student.id == student_id, Student.deleted_at.is_(None))
    student = db.session.execute(scope_students(stmt, p)).scalar_one_or_none()
    if student is None:
        raise NotFound("student")
    return student
