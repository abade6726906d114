from typing import get_args

from flask import Blueprint, g, jsonify
from sqlalchemy import select

from app.academics.models import Enrolment
from app.access.rules import (
    GUARDIANS,
    STUDENTS,
    TEACHERS,
    scope_guardians,
    scope_students,
    scope_teachers,
    sees_own_family_only,
)
from app.audit import services as audit
from app.core.auth import SCHOOL, roles
from app.core.caching import LONG
from app.core.crud import CONFLICTS, Resource, commit_or_conflict
from app.core.openapi import doc
from app.core.pagination import Choice, Filter, ListSpec
from app.core.queryargs import INTEGER
from app.core.ratelimit import sensitive
from app.core.schemas import dump, fields_of, parse_body
from app.core.warming import register_warm_paths
from app.people import services
from app.people.models import Guardian, Student, Teacher, User
from app.people.schemas import (
    STAFF_ONLY_TEACHER_FIELDS,
    ChannelIn,
    GuardianCreate,
    GuardianLinkIn,
    GuardianOut,
    GuardianUpdate,
    Role,
    StudentCreate,
    StudentDetailOut,
    StudentOut,
    StudentStatus,
    StudentUpdate,
    TeacherCreate,
    TeacherOut,
    TeacherUpdate,
    UserCreate,
    UserOut,
    UserUpdate,
)
from app.uploads import services as uploads

bp = Blueprint("people", __name__)


@bp.record_once
def _hot_reads(state):
    """What cache warming fills (app/core/warming.py)."""
    prefix = state.url_prefix or ""
    register_warm_paths(state.app, lambda institution_id: [f"{prefix}/students", f"{prefix}/teachers"])


CONFLICTS.update(
    {
        "uq_students_institution_admission": "A student with this admission number already exists.",
        "uq_teachers_institution_employee_number": "A teacher with this employee number already exists.",
        "uq_users_email_lower": "A user with this e-mail address already exists.",
    }
)


def _deleted(owner_type):
    """A deleted student or teacher: their login ends, and their photo's and documents' thumbnails are
    erased after the commit; the originals are kept, no longer served (docs/UPLOADS.md)."""

    def on_delete(person):
        services.end_access(person)
        uploads.on_person_deleted(owner_type, person)

    return on_delete


def _in_class(stmt, class_id):
    return stmt.where(
        Student.id.in_(
            select(Enrolment.student_id).where(Enrolment.class_id == class_id, Enrolment.end_date.is_(None))
        )
    )


students = Resource(
    "student",
    "/students",
    Student,
    StudentOut,
    ListSpec(
        Student.id,
        filters={
            "status": Choice(Student.status, get_args(StudentStatus)),
            "grade_level": Student.grade_level,
            "admission_number": Student.admission_number,
            "class_id": Filter(INTEGER, _in_class),
        },
        sorts={
            "last_name": Student.last_name,
            "admission_number": Student.admission_number,
            "created_at": Student.created_at,
        },
        search=(Student.first_name, Student.last_name),
    ),
    create=StudentCreate,
    update=StudentUpdate,
    read_roles=("admin", "teacher", "guardian", "student", "accountant"),
    scope=scope_students,
    reach=STUDENTS,
    read=lambda ident: services.student_detail(ident, g.principal),
    detail_out=StudentDetailOut,
    on_delete=_deleted("student"),
    cache_tables=("student_guardians", "guardians", "enrolments", "class_subjects", "classes"),
    list_columns=services.STUDENT_COLUMNS,
    # Every table the answers read is versioned: the TTL bounds memory, not staleness (app/core/caching.py).
    cache_ttl=LONG,
)


guardians = Resource(
    "guardian",
    "/guardians",
    Guardian,
    GuardianOut,
    ListSpec(
        Guardian.id, sorts={"last_name": Guardian.last_name}, search=(Guardian.first_name, Guardian.last_name)
    ),
    create=GuardianCreate,
    update=GuardianUpdate,
    scope=scope_guardians,
    reach=GUARDIANS,
    on_delete=services.end_access,
    cache_tables=("student_guardians", "enrolments", "class_subjects", "classes", "students"),
)

TEACHER_FIELDS = fields_of(TeacherOut)


def teacher_out(teacher):
    """Guardians and students see a teacher's name and specialization; the school's staff data (contact
    details, employee number, hiring date, login) stays with staff: the school has no setting to publish
    it, so the safe default is to hide it."""
    data = dump(teacher, TEACHER_FIELDS)
    if sees_own_family_only(g.principal):
        data.update(dict.fromkeys(STAFF_ONLY_TEACHER_FIELDS, None))
    return data


teachers = Resource(
    "teacher",
    "/teachers",
    Teacher,
    TeacherOut,
    ListSpec(
        Teacher.id,
        filters={"employee_number": Teacher.employee_number},
        sorts={"last_name": Teacher.last_name},
        search=(Teacher.first_name, Teacher.last_name),
    ),
    create=TeacherCreate,
    update=TeacherUpdate,
    scope=scope_teachers,
    reach=TEACHERS,
    serialize=teacher_out,
    on_delete=_deleted("teacher"),
    cache_tables=("class_subjects", "classes", "enrolments", "student_guardians", "students", "guardians"),
)

users = Resource(
    "user",
    "/users",
    User,
    UserOut,
    ListSpec(
        User.id,
        filters={"role": Choice(User.role, get_args(Role)), "is_active": User.is_active},
        sorts={"last_name": User.last_name, "email": User.email},
        search=(User.first_name, User.last_name, User.email),
    ),
    read_roles=("admin",),
    deletable=False,
)

for resource in (students, guardians, teachers, users):
    resource.register(bp)


@bp.post("/students/<int:ident>/guardians")
@roles("admin", reach=STUDENTS)
@doc("Link a guardian to a student", body=GuardianLinkIn, status=204, tags=["students"])
def link_guardian(ident):
    student = students.get_or_404(ident)
    body = parse_body(GuardianLinkIn)
    services.link_guardian(student, body.guardian_id, body.relationship, body.is_primary)
    return "", 204


@bp.delete("/students/<int:ident>/guardians/<int:guardian_id>")
@roles("admin", reach=STUDENTS)
@doc("Unlink a guardian from a student", status=204, tags=["students"])
def unlink_guardian(ident, guardian_id):
    services.unlink_guardian(students.get_or_404(ident), guardian_id)
    return "", 204


@bp.put("/guardians/<int:ident>/channel")
@roles("admin", "guardian", reach=GUARDIANS)
@doc(
    "Choose how the school reaches a guardian (a guardian chooses their own): e-mail, SMS or both",
    body=ChannelIn,
    out=GuardianOut,
    tags=["guardians"],
)
def set_guardian_channel(ident):
    guardian = guardians.get_or_404(ident)
    audit.apply_update(guardian, parse_body(ChannelIn).model_dump(), "guardian")
    commit_or_conflict()
    return jsonify(guardians.serialize(guardian))


@bp.post("/users")
@roles("admin", reach=SCHOOL)
@sensitive
@doc("Create a login", body=UserCreate, out=UserOut, status=201, tags=["users"])
def create_user():
    user = services.create_user(parse_body(UserCreate).model_dump())
    return jsonify(users.serialize(user)), 201


@bp.patch("/users/<int:ident>")
@roles("admin", reach=SCHOOL)
@sensitive
@doc("Change a login (role changes end its sessions)", body=UserUpdate, out=UserOut, tags=["users"])
def update_user(ident):
    user = users.get_or_404(ident)
    body = parse_body(UserUpdate)
    return jsonify(
        users.serialize(services.update_user(user, body.model_dump(exclude_unset=True), g.principal))
    )
