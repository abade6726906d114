"""oneroster_enrollments: a school's OneRoster enrollments as rows, so every filter and sort of
/enrollments reads an index.

An enrollment's status, dateLastModified and sourcedId are computed from up to four tables (an
enrolment, its student, its class, and for a subject enrollment the class subject: enrolments x class
subjects, about 800,000 rows in a school of 100,000). No index can serve a sort on such a value, so a
page sorted by it read and sorted every row of the school (0.5-1.5 s at scale, docs/BENCHMARKS.md).

- `oneroster_enrollments_live` (a view) computes the rows from the tables; its SQL is the one
  definition of an enrollment's fields (app/oneroster/rostering.py reads the columns by these names).
- PostgreSQL: `oneroster_enrollments` is a table of those rows, one index per sortable field, kept by
  statement-level triggers on enrolments, students, classes and class_subjects. A trigger recomputes
  the rows of the enrolments, classes or class subjects its statement touched: it deletes them and
  inserts them again from the view (ON CONFLICT DO UPDATE, for a concurrent transaction that recomputed
  the same rows first). Statement-level with transition tables, so a bulk statement (an import, the
  rollover, `flask seed scale`) recomputes its rows in one INSERT ... SELECT, not one per row.
- SQLite (the embedded default: one school, small): `oneroster_enrollments` is the view itself.

Revision ID: 0016_oneroster_enrollment_rows
Revises: 0015_attendance_autovacuum
Create Date: 2026-12-01 03:20:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0016_oneroster_enrollment_rows"
down_revision = "0015_attendance_autovacuum"
branch_labels = None
depends_on = None


def _sid(prefix, column):
    return f"'{prefix}-' || CAST({column} AS VARCHAR)"


def _later(a, b):  # GREATEST is not on SQLite
    return f"CASE WHEN {a} > {b} THEN {a} ELSE {b} END"


def _gone(*deleted):
    return f"CASE WHEN {' OR '.join(deleted)} THEN 'tobedeleted' ELSE 'active' END"


STUDENT_GONE = _gone("e.end_date IS NOT NULL", "s.deleted_at IS NOT NULL", "c.deleted_at IS NOT NULL")
NO_ID, NO_DATE = "CAST(NULL AS INTEGER)", "CAST(NULL AS DATE)"
# kind: 0 homeroom student enrollment, 1 subject (class subject) student enrollment, 2 homeroom teacher,
# 3 subject teacher. k, k2: the record's key within its kind. user_id, class_ref: the integer ids behind
# user_sid and class_sid (the id probes of user.sourcedId= and class.sourcedId=). enrolment_id, class_id,
# section_id: what a trigger recomputes by.
LIVE = f"""
SELECT e.institution_id AS institution_id, 0 AS kind, e.id AS k, 0 AS k2,
       {_sid("enr", "e.id")} AS sourced_id, {STUDENT_GONE} AS status,
       {_later("e.updated_at", "s.updated_at")} AS dlm,
       'student' AS role, FALSE AS is_primary, e.start_date AS begin_date, e.end_date AS end_date,
       {_sid("student", "e.student_id")} AS user_sid, {_sid("class", "e.class_id")} AS class_sid,
       e.student_id AS user_id, e.class_id AS class_ref,
       e.id AS enrolment_id, e.class_id AS class_id, {NO_ID} AS section_id
FROM enrolments e JOIN students s ON s.id = e.student_id JOIN classes c ON c.id = e.class_id
UNION ALL
SELECT e.institution_id, 1, e.id, cs.id,
       {_sid("enrs", "e.id")} || '-' || {_sid("s", "cs.id")}, {STUDENT_GONE},
       {_later(_later("e.updated_at", "s.updated_at"), "cs.updated_at")},
       'student', FALSE, e.start_date, e.end_date,
       {_sid("student", "e.student_id")}, {_sid("section", "cs.id")},
       e.student_id, cs.id,
       e.id, e.class_id, cs.id
FROM enrolments e JOIN students s ON s.id = e.student_id JOIN classes c ON c.id = e.class_id
     JOIN class_subjects cs ON cs.class_id = e.class_id
UNION ALL
SELECT c.institution_id, 2, c.id, 0,
       {_sid("tenrc", "c.id")}, {_gone("c.deleted_at IS NOT NULL")}, c.updated_at,
       'teacher', TRUE, {NO_DATE}, {NO_DATE},
       {_sid("teacher", "c.homeroom_teacher_id")}, {_sid("class", "c.id")},
       c.homeroom_teacher_id, c.id,
       {NO_ID}, c.id, {NO_ID}
FROM classes c WHERE c.homeroom_teacher_id IS NOT NULL
UNION ALL
SELECT cs.institution_id, 3, cs.id, 0,
       {_sid("tenrs", "cs.id")}, {_gone("c.deleted_at IS NOT NULL")},
       {_later("cs.updated_at", "c.updated_at")},
       'teacher', TRUE, {NO_DATE}, {NO_DATE},
       {_sid("teacher", "cs.teacher_id")}, {_sid("section", "cs.id")},
       cs.teacher_id, cs.id,
       {NO_ID}, cs.class_id, cs.id
FROM class_subjects cs JOIN classes c ON c.id = cs.class_id WHERE cs.teacher_id IS NOT NULL
"""

COLUMNS = (
    "institution_id, kind, k, k2, sourced_id, status, dlm, role, is_primary, begin_date, end_date, "
    "user_sid, class_sid, user_id, class_ref, enrolment_id, class_id, section_id"
)
UPDATED = [c.strip() for c in COLUMNS.split(",")[4:]]
# Each sortable (and = filterable) field, per school, with the stable order after it, so a page sorted
# by it reads the index in order and stops (app/oneroster/query.py list_answer).
SORTED = ("sourced_id", "status", "dlm", "role", "is_primary", "begin_date", "end_date", "user_sid",
          "class_sid")  # fmt: skip

# what a trigger recomputes by -> the column of oneroster_enrollments (and of the view) holding it
KEYS = {"enrolment": "enrolment_id", "class": "class_id", "section": "section_id"}


def _refresh_by(column):
    # One key per statement: an OR of keys would stop the planner pushing the condition into each
    # branch of the view, and a one-row change would join every enrolment with its class subjects.
    return f"""
        DELETE FROM oneroster_enrollments WHERE {column} = ANY (ids);
        INSERT INTO oneroster_enrollments ({COLUMNS})
        SELECT {COLUMNS} FROM oneroster_enrollments_live WHERE {column} = ANY (ids)
        ON CONFLICT (institution_id, kind, k, k2) DO UPDATE SET
            {", ".join(f"{c} = EXCLUDED.{c}" for c in UPDATED)};"""


REFRESH = f"""
CREATE FUNCTION oneroster_enrollments_refresh(by_key text, ids integer[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF by_key = 'enrolment' THEN {_refresh_by(KEYS["enrolment"])}
    ELSIF by_key = 'class' THEN {_refresh_by(KEYS["class"])}
    ELSIF by_key = 'section' THEN {_refresh_by(KEYS["section"])}
    ELSE RAISE EXCEPTION 'oneroster_enrollments_refresh: unknown key %', by_key;
    END IF;
END $$
"""

# source table -> (the key its rows change, that key's column in it, the events that change rows):
# a student's rows are its enrolments' (a new student has none; a deleted one's enrolments go by
# ON DELETE CASCADE, which fires the enrolments trigger)
SOURCES = {
    "enrolments": ("enrolment", "id", ("insert", "update", "delete")),
    "students": ("enrolment", None, ("update",)),
    "classes": ("class", "id", ("insert", "update", "delete")),
    "class_subjects": ("section", "id", ("insert", "update", "delete")),
}
TRANSITIONS = {
    "insert": "NEW TABLE AS new_rows",
    "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "OLD TABLE AS old_rows",
}


def _trigger_function(table, by_key, key):
    def keys(rows):
        if key is None:
            return f"SELECT array_agg(e.id) FROM enrolments e WHERE e.student_id IN (SELECT id FROM {rows})"
        return f"SELECT array_agg({key}) FROM {rows}"

    return f"""
CREATE FUNCTION oneroster_enrollments_from_{table}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE ids integer[];
BEGIN
    IF TG_OP = 'DELETE' THEN
        {keys("old_rows")} INTO ids;
    ELSIF TG_OP = 'UPDATE' THEN  -- a row moved to another class is recomputed under its old key too
        {keys("(SELECT * FROM old_rows UNION ALL SELECT * FROM new_rows) AS moved")} INTO ids;
    ELSE
        {keys("new_rows")} INTO ids;
    END IF;
    IF ids IS NOT NULL THEN
        PERFORM oneroster_enrollments_refresh('{by_key}', ids);
    END IF;
    RETURN NULL;
END $$
"""


def _triggers(table, events):
    for event in events:
        yield f"""CREATE TRIGGER oneroster_enrollments_{table}_{event} AFTER {event.upper()} ON {table}
                  REFERENCING {TRANSITIONS[event]} FOR EACH STATEMENT
                  EXECUTE FUNCTION oneroster_enrollments_from_{table}()"""


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        op.execute(f"CREATE VIEW oneroster_enrollments AS {LIVE}")
        return
    op.execute(f"CREATE VIEW oneroster_enrollments_live AS {LIVE}")
    op.create_table(
        "oneroster_enrollments",
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("k2", sa.Integer(), nullable=False),
        sa.Column("sourced_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("dlm", sa.DateTime(timezone=True), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.Column("begin_date", sa.Date(), nullable=True),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("user_sid", sa.String(), nullable=False),
        sa.Column("class_sid", sa.String(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("class_ref", sa.Integer(), nullable=False),
        sa.Column("enrolment_id", sa.Integer(), nullable=True),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("section_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["institution_id"], ["institutions.id"], name="fk_oneroster_enrollments_institution_id_institutions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("institution_id", "kind", "k", "k2", name="pk_oneroster_enrollments"),
    )  # fmt: skip
    op.execute(
        f"INSERT INTO oneroster_enrollments ({COLUMNS}) SELECT {COLUMNS} FROM oneroster_enrollments_live"
    )
    for name in SORTED:
        op.create_index(
            f"ix_oneroster_enrollments_{name}",
            "oneroster_enrollments",
            ["institution_id", name, "kind", "k", "k2"],
        )
    # the id probes (user.sourcedId='student-N', class.sourcedId='section-N') and the triggers' keys
    op.create_index(
        "ix_oneroster_enrollments_user_id", "oneroster_enrollments", ["institution_id", "user_id"]
    )
    op.create_index(
        "ix_oneroster_enrollments_class_ref", "oneroster_enrollments", ["institution_id", "class_ref"]
    )
    op.create_index("ix_oneroster_enrollments_enrolment_id", "oneroster_enrollments", ["enrolment_id"])
    op.create_index("ix_oneroster_enrollments_class_id", "oneroster_enrollments", ["class_id"])
    op.create_index("ix_oneroster_enrollments_section_id", "oneroster_enrollments", ["section_id"])
    op.execute(REFRESH)
    for table, (by_key, key, events) in SOURCES.items():
        op.execute(_trigger_function(table, by_key, key))
        for statement in _triggers(table, events):
            op.execute(statement)


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP VIEW oneroster_enrollments")
        return
    for table, (_, _, events) in SOURCES.items():
        for event in events:
            op.execute(f"DROP TRIGGER oneroster_enrollments_{table}_{event} ON {table}")
        op.execute(f"DROP FUNCTION oneroster_enrollments_from_{table}()")
    op.execute("DROP FUNCTION oneroster_enrollments_refresh(text, integer[])")
    op.drop_table("oneroster_enrollments")
    op.execute("DROP VIEW oneroster_enrollments_live")
