"""Which classes, students, guardians, teachers and enrolments a caller reaches, one function per rule,
and the named reaches that views declare with `@roles(..., reach=...)` (app/core/auth.py).

Admins and accountants reach the whole school; a teacher the live classes they teach a subject in or
lead as homeroom teacher, the students enrolled in them today and those classes' enrolments; a guardian
their own live children; a student themself. Deleted people and deleted classes reach and are reached
by nothing. A role these rules do not know reaches nothing. A `scope_*` function narrows a SELECT to
what the principal reaches; an `*_or_404` function answers 404 for a record out of reach, exactly as
for a missing one.

A rule reads the ids the principal reaches once per request (a few classes, their students) and
narrows a statement with `IN (ids)`: no subquery of a rule can be correlated into the statement it
narrows (an auto-correlated EXISTS over `enrolments` inside a SELECT of `enrolments` was always true),
and plans stay simple. The subqueries that remain are `correlate(None)`.
"""

from flask import g, has_request_context
from sqlalchemy import and_, false, or_, select, union

from app.academics.models import ClassSubject, Enrolment, SchoolClass
from app.core.auth import ROLES, WHOLE_SCHOOL, Reach
from app.core.errors import NotFound
from app.extensions import db
from app.institutions.calendar import school_today
from app.people.models import Guardian, Student, StudentGuardian, Teacher

WHOLE_SCHOOL_ROLES = ("admin", "accountant")
FAMILY = ("guardian", "student")


def sees_whole_school(p) -> bool:
    return p.role in WHOLE_SCHOOL_ROLES


def sees_own_family_only(p) -> bool:
    """Guardians and students: only their own children / themself, never a whole class."""
    return p.role in FAMILY


def _nothing(stmt):
    return stmt.where(false())


def _once_per_request(key, compute) -> list[int]:
    """The ids a rule reaches, read once per request: a view may apply a rule several times, and a
    short list of ids keeps every scoped query's plan simple (a subquery per rule inside a GROUP BY
    was re-run for every row)."""
    rid = g.get("request_id") if has_request_context() else None
    if rid is None:  # outside a request (or one without an id, e.g. cache warming): read every time
        return compute()
    memo = g.get("_reach_ids")
    if memo is None or memo[0] != rid:  # one app context can outlive a request (tests, the CLI)
        memo = g._reach_ids = (rid, {})
    if key not in memo[1]:
        memo[1][key] = compute()
    return memo[1][key]


def _ids(stmt) -> list[int]:
    return list(db.session.execute(stmt).scalars())


def enrolled_on(day):
    """An enrolment that holds on `day`: started by then and not ended before it. An enrolment that
    starts next term is not current yet, and one that ends next week still is."""
    return and_(Enrolment.start_date <= day, or_(Enrolment.end_date.is_(None), Enrolment.end_date >= day))


def teacher_class_ids(teacher_id) -> list[int]:
    """Live classes a live teacher teaches a subject in, or leads as homeroom teacher."""

    def read():
        live = select(Teacher.id).where(Teacher.id == teacher_id, Teacher.deleted_at.is_(None))
        return sorted(
            _ids(
                union(
                    select(ClassSubject.class_id)
                    .join(SchoolClass, SchoolClass.id == ClassSubject.class_id)
                    .where(ClassSubject.teacher_id.in_(live), SchoolClass.deleted_at.is_(None)),
                    select(SchoolClass.id).where(
                        SchoolClass.homeroom_teacher_id.in_(live), SchoolClass.deleted_at.is_(None)
                    ),
                )
            )
        )

    return _once_per_request(("teacher classes", teacher_id), read)


def _current_class_ids(student_ids: list[int]) -> list[int]:
    """The live classes these students are enrolled in today (the school's today)."""
    return _ids(
        select(Enrolment.class_id)
        .join(SchoolClass, SchoolClass.id == Enrolment.class_id)
        .where(
            Enrolment.student_id.in_(student_ids),
            enrolled_on(school_today()),
            SchoolClass.deleted_at.is_(None),
        )
        .distinct()
    )


def own_student_ids(p) -> list[int]:
    """For guardians and students: the live students they may see (none for a deleted guardian)."""
    if p.role == "student":
        stmt = select(Student.id).where(Student.id == (p.student_id or -1), Student.deleted_at.is_(None))
    elif p.role == "guardian":
        stmt = (
            select(StudentGuardian.student_id)
            .join(Student, Student.id == StudentGuardian.student_id)
            .join(Guardian, Guardian.id == StudentGuardian.guardian_id)
            .where(
                StudentGuardian.guardian_id == (p.guardian_id or -1),
                Student.deleted_at.is_(None),
                Guardian.deleted_at.is_(None),
            )
        )
    else:
        return []
    return _once_per_request(("own students", p.role, p.student_id, p.guardian_id), lambda: _ids(stmt))


def own_class_ids(p) -> list[int]:
    """For guardians and students: the classes their children / they are in today."""
    return _once_per_request(
        ("own classes", p.role, p.student_id, p.guardian_id), lambda: _current_class_ids(own_student_ids(p))
    )


def taught_student_ids(teacher_id) -> list[int]:
    """Live students enrolled today in a class the teacher teaches or leads."""

    def read():
        classes = teacher_class_ids(teacher_id)
        return _ids(
            select(Enrolment.student_id)
            .join(Student, Student.id == Enrolment.student_id)
            .where(Enrolment.class_id.in_(classes), enrolled_on(school_today()), Student.deleted_at.is_(None))
        )

    return _once_per_request(("taught students", teacher_id), read)


def scope_classes(stmt, p, model=SchoolClass, column=None):
    column = column if column is not None else model.id
    if sees_whole_school(p):
        return stmt
    if p.role == "teacher":
        return stmt.where(column.in_(teacher_class_ids(p.teacher_id or -1)))
    if sees_own_family_only(p):
        return stmt.where(column.in_(own_class_ids(p)))
    return _nothing(stmt)


def scope_students(stmt, p, column=None):
    column = column if column is not None else Student.id
    if sees_whole_school(p):
        return stmt
    if p.role == "teacher":
        return stmt.where(column.in_(taught_student_ids(p.teacher_id or -1)))
    if sees_own_family_only(p):
        return stmt.where(column.in_(own_student_ids(p)))
    return _nothing(stmt)


def student_in_reach(student_id, p) -> bool:
    """scope_students asked of one id: whether the rule lets this student through (the record may still
    be missing or deleted). A single-student read checks it here and then runs one statement built
    once for every caller, instead of a statement narrowed per caller (app/people/services.py)."""
    if sees_whole_school(p):
        return True
    if p.role == "teacher":
        return student_id in taught_student_ids(p.teacher_id or -1)
    if sees_own_family_only(p):
        return student_id in own_student_ids(p)
    return False


def scope_enrolments(stmt, p):
    """Teachers: the enrolments (current and past) in the classes they teach or lead. Guardians and
    students: their children's / their own enrolment history, in every class."""
    if sees_whole_school(p):
        return stmt
    if p.role == "teacher":
        return stmt.where(Enrolment.class_id.in_(teacher_class_ids(p.teacher_id or -1)))
    if sees_own_family_only(p):
        return stmt.where(Enrolment.student_id.in_(own_student_ids(p)))
    return _nothing(stmt)


def scope_timetable(stmt, p, column):
    """Lessons: staff see the school's whole timetable (a teacher finds colleagues and free rooms);
    guardians and students the lessons of their (children's) classes today. `column`: the class id."""
    if sees_whole_school(p) or p.role == "teacher":
        return stmt
    if sees_own_family_only(p):
        return stmt.where(column.in_(own_class_ids(p)))
    return _nothing(stmt)


def scope_guardians(stmt, p):
    if sees_whole_school(p):
        return stmt
    if p.role == "guardian":
        return stmt.where(Guardian.id == (p.guardian_id or -1))
    if p.role == "teacher":  # the guardians of the teacher's students
        students = taught_student_ids(p.teacher_id or -1)
    elif p.role == "student":
        students = own_student_ids(p)
    else:
        return _nothing(stmt)
    return stmt.where(
        Guardian.id.in_(
            select(StudentGuardian.guardian_id)
            .where(StudentGuardian.student_id.in_(students))
            .correlate(None)
        )
    )


def scope_teachers(stmt, p):
    """Staff see every teacher; guardians and students the teachers of their (children's) classes today:
    the subject teachers and the homeroom teacher."""
    if sees_whole_school(p) or p.role == "teacher":
        return stmt
    if not sees_own_family_only(p):
        return _nothing(stmt)
    classes = own_class_ids(p)
    return stmt.where(
        Teacher.id.in_(
            union(
                select(ClassSubject.teacher_id).where(ClassSubject.class_id.in_(classes)).correlate(None),
                select(SchoolClass.homeroom_teacher_id).where(SchoolClass.id.in_(classes)).correlate(None),
            )
        )
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


# --- the named reaches views declare (docs/ACCESS.md is generated from them) ---------------------------


def _reach(name, teacher, guardian, student):
    return Reach(
        name,
        {
            "admin": WHOLE_SCHOOL,
            "accountant": WHOLE_SCHOOL,
            "teacher": teacher,
            "guardian": guardian,
            "student": student,
        },
    )


CLASSES = _reach("classes", "classes taught or led", "own children's classes", "own class")
STUDENTS = _reach("students", "students enrolled in classes taught or led", "own children", "self")
ENROLMENTS = _reach(
    "enrolments", "enrolments in classes taught or led", "own children's enrolments", "own enrolments"
)
GUARDIANS = _reach("guardians", "guardians of students taught", "self", "own guardians")
TEACHERS = _reach(
    "teachers",
    WHOLE_SCHOOL,
    "own children's teachers, without contact details",
    "own teachers, without contact details",
)
TIMETABLE = _reach("timetable", WHOLE_SCHOOL, "own children's classes' lessons", "own class's lessons")
# GET /me/timetable: the caller's own day, whoever they are.
MY_TIMETABLE = Reach(
    "own timetable",
    {"teacher": "own lessons", "guardian": "own children's lessons", "student": "own class's lessons"},
)
# Writing marks: the teacher of the class subject only (a homeroom teacher reads them: 403 on a write).
SUBJECTS_TAUGHT = _reach("subjects taught", "class subjects taught", "none", "none")
# A student's documents (app/uploads): seen by whoever reaches the student; students do not list their own.
DOCUMENTS = _reach(
    "student documents",
    "documents of students enrolled in classes taught or led",
    "own children's documents",
    "none",
)
# Exports and imports: each caller sees the jobs they asked for, admins every job of the school.
OWN_REQUESTS = Reach("own requests", {**dict.fromkeys(ROLES, "own requests"), "admin": WHOLE_SCHOOL})
# Announcements (app/announcements): admins post to any audience, teachers to their classes and those
# classes' guardians; admins list the school's announcements, teachers their own.
ANNOUNCEMENT_AUDIENCES = Reach(
    "announcement audiences",
    {
        "admin": WHOLE_SCHOOL,
        "teacher": "classes taught or led, and their guardians",
        "accountant": "none",
        "guardian": "none",
        "student": "none",
    },
)
POSTED_ANNOUNCEMENTS = Reach(
    "posted announcements",
    {
        "admin": WHOLE_SCHOOL,
        "teacher": "own announcements",
        "accountant": "none",
        "guardian": "none",
        "student": "none",
    },
)
