"""OneRoster 1.2 REST: the per-school indexes that read a collection's large branches in the order a
page asks for (app/oneroster/query.py list_answer pushes ORDER BY ... LIMIT into each branch).

Indexes, by the query each serves (each per school, deleted rows included: OneRoster shows them as
tobedeleted, so the partial `deleted_at IS NULL` indexes of GET /students cannot serve it):
- ix_students_institution_id, ix_enrolments_institution_id, ix_class_subjects_institution_id: the default
  order (kind, id) of /users, /students, /demographics, /enrollments, /classes.
- ix_students_institution_updated_id (replaces ix_students_institution_updated, which it covers):
  sort=dateLastModified in full, and the delta filter dateLastModified>'...'.
- ix_students_institution_given_name_id, ix_students_institution_family_name_id,
  ix_students_institution_birth_date: sort (and = filters) on givenName, familyName, birthDate.
- ix_students_institution_sourced_id, ix_enrolments_institution_sourced_id,
  ix_class_subjects_institution_sourced_id, ix_enrolments_institution_user_sourced_id: sort=sourcedId
  (and enrollments' sort=user.sourcedId), on the expression "'student-' || id" the collection computes.
- ix_students_institution_oneroster_status, ix_students_institution_enabled, ix_students_institution_sex:
  sort=status, enabledUser, sex (low-cardinality: a filter matching most of a school still reads it all).
- ix_students_first_name_trgm, ix_students_last_name_trgm (pg_trgm GIN): givenName~'..', familyName~'..'.
- ix_enrolments_institution_start_id: /enrollments?sort=beginDate.
- ix_class_subjects_institution_subject: /classes?filter=course.sourcedId='course-N' and
  /courses/{id}/classes, the sections of one subject.

Revision ID: 0014_oneroster_indexes
Revises: 0013_oneroster_tombstones
Create Date: 2026-11-30 14:55:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0014_oneroster_indexes"
down_revision = "0013_oneroster_tombstones"
branch_labels = None
depends_on = None

STATUS = "(CASE WHEN deleted_at IS NOT NULL THEN 'tobedeleted' ELSE 'active' END)"
INDEXES = (
    ("ix_students_institution_id", "students", ["institution_id", "id"], {}),
    ("ix_students_institution_given_name_id", "students", ["institution_id", "first_name", "id"], {}),
    ("ix_students_institution_family_name_id", "students", ["institution_id", "last_name", "id"], {}),
    (
        "ix_students_institution_sourced_id",
        "students",
        ["institution_id", sa.text("('student-' || CAST(id AS VARCHAR))")],
        {},
    ),
    ("ix_students_institution_birth_date", "students", ["institution_id", "date_of_birth", "id"], {}),
    ("ix_students_institution_updated_id", "students", ["institution_id", "updated_at", "id"], {}),
    ("ix_students_institution_oneroster_status", "students", ["institution_id", sa.text(STATUS), "id"], {}),
    (
        "ix_students_institution_enabled",
        "students",
        ["institution_id", sa.text("(status = 'active')"), "id"],
        {},
    ),
    (
        "ix_students_institution_sex",
        "students",
        [
            "institution_id",
            sa.text("(CASE WHEN gender IN ('male', 'female') THEN gender ELSE 'unspecified' END)"),
            "id",
        ],
        {},
    ),
    ("ix_enrolments_institution_id", "enrolments", ["institution_id", "id"], {}),
    (
        "ix_enrolments_institution_sourced_id",
        "enrolments",
        ["institution_id", sa.text("('enr-' || CAST(id AS VARCHAR))")],
        {},
    ),
    ("ix_enrolments_institution_start_id", "enrolments", ["institution_id", "start_date", "id"], {}),
    (
        "ix_enrolments_institution_user_sourced_id",
        "enrolments",
        ["institution_id", sa.text("('student-' || CAST(student_id AS VARCHAR))"), "id"],
        {},
    ),
    ("ix_class_subjects_institution_id", "class_subjects", ["institution_id", "id"], {}),
    ("ix_class_subjects_institution_subject", "class_subjects", ["institution_id", "subject_id"], {}),
    (
        "ix_class_subjects_institution_sourced_id",
        "class_subjects",
        ["institution_id", sa.text("('section-' || CAST(id AS VARCHAR))")],
        {},
    ),
)


# contains (`givenName~'ale'`): trigram GIN indexes, PostgreSQL only (pg_trgm is a trusted extension, so
# the database's owner may create it; docs/DEPLOY.md)
TRIGRAM = (
    (
        "ix_students_first_name_trgm",
        "students",
        [sa.text("lower(first_name) gin_trgm_ops")],
        {"postgresql_using": "gin"},
    ),
    (
        "ix_students_last_name_trgm",
        "students",
        [sa.text("lower(last_name) gin_trgm_ops")],
        {"postgresql_using": "gin"},
    ),
)


def upgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, table, columns, kw in INDEXES + (TRIGRAM if postgres else ()):
        op.create_index(name, table, columns, **kw)
    # (institution_id, updated_at, id) serves all the narrower one did, and the delta sort in full
    op.drop_index("ix_students_institution_updated", table_name="students")


def downgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_index("ix_students_institution_updated", "students", ["institution_id", "updated_at"])
    for name, table, _, _ in reversed(INDEXES + (TRIGRAM if postgres else ())):
        op.drop_index(name, table_name=table)
