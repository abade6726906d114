"""Users (logins) and the people they belong to."""

from functools import cache

from sqlalchemy import and_, bindparam, select

from app.access.rules import student_in_reach
from app.audit import services as audit
from app.auth.services import revoke_user_sessions
from app.core.crud import check_refs, commit_or_conflict, flush_or_conflict
from app.core.errors import Conflict, NotFound, ValidationFailed
from app.core.security import hash_password
from app.core.tenancy import execute_reusable, reusable
from app.extensions import db
from app.people.models import Guardian, Student, StudentGuardian, Teacher, User

LINKS = {"student_id": Student, "teacher_id": Teacher, "guardian_id": Guardian}
ROLE_LINK = {"student": "student_id", "teacher": "teacher_id", "guardian": "guardian_id"}


def create_user(values: dict) -> User:
    user = add_user(values)
    commit_or_conflict()
    return user


def add_user(values: dict) -> User:
    """A new login in the current transaction (flushed, audited, not committed). `values` holds either
    `password` or, for a login whose owner sets it later (app/auth/accounts.py), `password_hash`."""
    links = {k: values.pop(k) for k in LINKS if k in values}
    given = {k: v for k, v in links.items() if v is not None}
    needed = ROLE_LINK.get(values["role"])
    if needed and needed not in given:
        raise ValidationFailed({needed: f"is required for a {values['role']} login"})
    extra = set(given) - {needed}
    if extra:
        raise ValidationFailed({k: f"does not apply to a {values['role']} login" for k in sorted(extra)})
    check_refs(given, {k: LINKS[k] for k in given})
    person = db.session.get(LINKS[needed], given[needed]) if needed else None
    if person is not None and person.user_id is not None:
        raise ValidationFailed({needed: "already has a login"})
    values["email"] = values["email"].lower()
    if "password" in values:
        values["password_hash"] = hash_password(values.pop("password"))
    user = User(**values)
    db.session.add(user)
    flush_or_conflict()
    if person is not None:
        person.user_id = user.id
    audit.record(
        "create",
        "user",
        user.id,
        audit.snapshot(user, ["email", "role", "first_name", "last_name", "is_active"]),
    )
    return user


def update_user(user: User, values: dict, principal) -> User:
    if "role" in values and user.id == principal.user_id:
        raise ValidationFailed({"role": "is read-only for your own account"})
    if values.get("is_active") is False and user.id == principal.user_id:
        raise ValidationFailed({"is_active": "cannot be turned off for your own account"})
    if values.get("is_active") is True and not user.is_active and _person_deleted(user.id):
        raise ValidationFailed({"is_active": "the person this login belongs to has been deleted"})
    if user.role == "admin" and (
        values.get("is_active") is False or values.get("role") not in (None, "admin")
    ):
        _keep_an_admin(user)
    if "role" in values and values["role"] != user.role and values["role"] in ROLE_LINK:
        raise ValidationFailed(
            {"role": "a login becomes a teacher, guardian or student login only when created for that person"}
        )
    if "email" in values and values["email"]:
        values["email"] = values["email"].lower()
    for k, v in values.items():
        if v is None and k != "role":
            raise ValidationFailed({k: "must not be null"})
        if v is not None:
            setattr(user, k, v)
    changes = audit.diff(user, values.keys())
    if changes:
        flush_or_conflict()  # a clash (the e-mail of another login) is a 409 here, before the audit row
        audit.record("update", "user", user.id, changes)
    if "role" in changes or changes.get("is_active") == [True, False]:
        # Tokens carry the role: end the user's sessions so the change applies at once.
        revoke_user_sessions(user.id, "role_change" if "role" in changes else "deactivated")
    commit_or_conflict()
    return user


def _keep_an_admin(user: User):
    """Refuse to demote or deactivate the school's last active admin: nobody could then manage it.
    The active admins are locked in id order, so two admins demoting each other at once cannot both
    pass: the second waits, then sees the first change and is refused."""
    admins = (
        db.session.execute(
            select(User.id)
            .where(
                User.institution_id == user.institution_id,
                User.role == "admin",
                User.is_active,
                User.deleted_at.is_(None),
            )
            .order_by(User.id)
            .with_for_update()
        )
        .scalars()
        .all()
    )
    if user.is_active and not [i for i in admins if i != user.id]:
        raise Conflict("This is the school's last active admin; make another admin first.")


def _person_deleted(user_id) -> bool:
    for model in (Student, Teacher, Guardian):
        deleted_at = db.session.execute(select(model.deleted_at).where(model.user_id == user_id)).first()
        if deleted_at is not None:
            return deleted_at[0] is not None
    return False


def end_access(person):
    """A deleted student, teacher or guardian loses their login in the deleting transaction: it is
    deactivated and its sessions end (app/auth/services.py writes the database, then the Redis copy)."""
    if person.user_id is None:
        return
    user = db.session.get(User, person.user_id)
    if user is None:
        return
    if user.is_active:
        user.is_active = False
        audit.record("update", "user", user.id, {"is_active": [True, False]})
    revoke_user_sessions(user.id, "person_deleted")


# GET /students and /students/{id}: StudentOut's fields in its order (app/people/schemas.py).
STUDENT_COLUMNS = (
    Student.id,
    Student.admission_number,
    Student.first_name,
    Student.last_name,
    Student.date_of_birth,
    Student.gender,
    Student.grade_level,
    Student.status,
    Student.email,
    Student.user_id,
    Student.created_at,
    Student.updated_at,
)
GUARDIAN_COLUMNS = (
    Guardian.id,
    Guardian.first_name,
    Guardian.last_name,
    Guardian.email,
    Guardian.phone,
    StudentGuardian.relationship_type,
    StudentGuardian.is_primary,
)
STUDENT_FIELDS = tuple(c.key for c in STUDENT_COLUMNS)
GUARDIAN_FIELDS = ("id", "first_name", "last_name", "email", "phone", "relationship", "is_primary")


@cache
def _student_detail_statement():
    """The live student and their live guardians (primary first, then by id) in one statement: a row
    per guardian link, or one row with empty guardian columns. Built once and scoped once per school
    (tenancy.reusable); the guardians' conditions sit in the outer joins' ON clauses, so a student
    without guardians still has their row."""
    guardian = (Guardian.id.label("guardian_id"), *GUARDIAN_COLUMNS[1:])
    return reusable(
        select(*STUDENT_COLUMNS, *guardian)
        .outerjoin(StudentGuardian, StudentGuardian.student_id == Student.id)
        .outerjoin(Guardian, and_(Guardian.id == StudentGuardian.guardian_id, Guardian.deleted_at.is_(None)))
        .where(Student.id == bindparam("student_id", type_=Student.id.type), Student.deleted_at.is_(None))
        .order_by(StudentGuardian.is_primary.desc(), Guardian.id)
    )


def student_detail(student_id, principal) -> dict | None:
    """GET /students/{id}: the student and their guardians as the answer's dict, or None when the student
    is missing, deleted or out of the caller's reach (app/access/rules.py): one statement, from plain
    rows (a lone read runs in autocommit, app/core/tenancy.py)."""
    if not student_in_reach(student_id, principal):
        return None
    rows = execute_reusable(db.session, _student_detail_statement(), {"student_id": student_id})
    if not rows:
        return None
    n = len(STUDENT_FIELDS)
    data = dict(zip(STUDENT_FIELDS, rows[0][:n]))
    data["guardians"] = [dict(zip(GUARDIAN_FIELDS, row[n:])) for row in rows if row[n] is not None]
    return data


def link_guardian(student: Student, guardian_id, relationship, is_primary):
    check_refs({"guardian_id": guardian_id}, {"guardian_id": Guardian})
    existing = db.session.get(StudentGuardian, (student.id, guardian_id))
    if existing is not None:
        raise ValidationFailed({"guardian_id": "is already a guardian of this student"})
    db.session.add(
        StudentGuardian(
            student_id=student.id,
            guardian_id=guardian_id,
            relationship_type=relationship,
            is_primary=is_primary,
        )
    )
    audit.record("link_guardian", "student", student.id, {"guardian_id": [None, guardian_id]})
    commit_or_conflict()


def unlink_guardian(student: Student, guardian_id):
    link = db.session.get(StudentGuardian, (student.id, guardian_id))
    if link is None:
        raise NotFound("guardian link")
    db.session.delete(link)
    audit.record("unlink_guardian", "student", student.id, {"guardian_id": [guardian_id, None]})
    commit_or_conflict()
