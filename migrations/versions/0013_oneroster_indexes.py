"""OneRoster 1.2 REST: the per-school indexes that read a collection's large branches in the order a
page asks for (app/oneroster/query.py list_answer pushes ORDER BY ... LIMIT into each branch).

Indexes, by the query each serves:
- ix_students_institution_id, ix_enrolments_institution_id, ix_class_subjects_institution_id: the default
  order (kind, id) of /users, /students, /demographics, /enrollments, /classes, one school's rows in id
  order; also the id probes of `sourcedId='student-N'` style filters within a school.
- ix_students_institution_given_name_id, ix_students_institution_family_name_id: /users?sort=givenName,
  sort=familyName (and `givenName='...'` filters). Not partial: OneRoster shows deleted students as
  tobedeleted, so the partial (deleted_at IS NULL) indexes of GET /students cannot serve it.
- ix_students_institution_sourced_id: /users?sort=sourcedId and /demographics?sort=sourcedId, the
  expression "'student-' || id" the collection computes.
- ix_students_institution_birth_date: /demographics?sort=birthDate and birthDate filters.
- ix_class_subjects_institution_subject: /classes?filter=course.sourcedId='course-N' and
  /courses/{id}/classes, the sections of one subject.

Revision ID: 0013_oneroster_indexes
Revises: 0012_announcements
Create Date: 2026-11-30 14:55:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0013_oneroster_indexes"
down_revision = "0012_announcements"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_students_institution_id", "students", ["institution_id", "id"]),
    ("ix_students_institution_given_name_id", "students", ["institution_id", "first_name", "id"]),
    ("ix_students_institution_family_name_id", "students", ["institution_id", "last_name", "id"]),
    (
        "ix_students_institution_sourced_id",
        "students",
        ["institution_id", sa.text("('student-' || CAST(id AS VARCHAR))")],
    ),
    ("ix_students_institution_birth_date", "students", ["institution_id", "date_of_birth"]),
    ("ix_enrolments_institution_id", "enrolments", ["institution_id", "id"]),
    ("ix_class_subjects_institution_id", "class_subjects", ["institution_id", "id"]),
    ("ix_class_subjects_institution_subject", "class_subjects", ["institution_id", "subject_id"]),
)


def upgrade():
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade():
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
