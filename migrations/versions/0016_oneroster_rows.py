"""OneRoster enrollments and classes as rows, so every filter and sort of /enrollments and /classes
reads an index.

An enrollment's status, dateLastModified and sourcedId are computed from up to four tables (an
enrolment, its student, its class, and for a subject enrollment the class subject: enrolments x class
subjects, about 800,000 rows in a school of 100,000); a scheduled class's title, classCode, status and
dateLastModified from three (class subject, class, subject). No index can serve a sort on such a value,
so a page sorted by it read and sorted every row of the school (/enrollments 0.5-1.5 s at scale,
docs/BENCHMARKS.md).

For each collection (`oneroster_enrollments`, `oneroster_classes`):
- a view `<name>_live` computes the rows from the tables; its SQL is the one definition of the
  records' fields (app/oneroster/rostering.py reads the columns by these names);
- PostgreSQL: `<name>` is a table of those rows, one index per sortable field, kept by statement-level
  triggers on the tables the view reads. A trigger recomputes the rows of the enrolments, classes,
  class subjects or subjects its statement touched from the view: it locks their classes' rows (so
  two transactions recompute one class's rows one after the other), deletes the rows the view no
  longer gives and inserts or updates the others, writing only rows that changed.
  Statement-level with transition tables, so a bulk statement (an import, the rollover, `flask seed
  scale`) recomputes its rows in one INSERT ... SELECT, not one per row;
- SQLite (the embedded default: one school, small): `<name>` is the view itself.

Revision ID: 0016_oneroster_rows
Revises: 0015_attendance_autovacuum
Create Date: 2026-12-01 03:20:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0016_oneroster_rows"
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

# Enrollments. kind: 0 homeroom student enrollment, 1 subject (class subject) student enrollment,
# 2 homeroom teacher, 3 subject teacher. k, k2: the record's key within its kind. user_id, class_ref: the
# integer ids behind user_sid and class_sid (the id probes of user.sourcedId= and class.sourcedId=).
# enrolment_id, class_id, section_id: what a trigger recomputes by.
ENROLLMENTS_LIVE = f"""
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


# Classes. kind: 0 homeroom class (a Schoolhouse class), 1 scheduled class (a subject taught in a class).
# grade, year_id, subject: what a record shows beside its sortable fields; subject_id: the id probe of
# course.sourcedId='course-N'; class_id, section_id, subject_id: what a trigger recomputes by.
CLASSES_LIVE = f"""
SELECT c.institution_id AS institution_id, 0 AS kind, c.id AS k, 0 AS k2,
       {_sid("class", "c.id")} AS sourced_id, {_gone("c.deleted_at IS NOT NULL")} AS status,
       c.updated_at AS dlm, c.name AS title, c.name AS class_code, 'homeroom' AS class_type,
       c.grade_level AS grade, 'course-homeroom' AS course_sid, c.academic_year_id AS year_id,
       CAST(NULL AS VARCHAR) AS subject, {NO_ID} AS subject_id,
       c.id AS class_id, {NO_ID} AS section_id
FROM classes c
UNION ALL
SELECT cs.institution_id, 1, cs.id, 0,
       {_sid("section", "cs.id")}, {_gone("c.deleted_at IS NOT NULL")},
       {_later("cs.updated_at", "c.updated_at")}, sj.name || ' ' || c.name, sj.code || '-' || c.name,
       'scheduled', c.grade_level, {_sid("course", "sj.id")}, c.academic_year_id,
       sj.name, cs.subject_id,
       cs.class_id, cs.id
FROM class_subjects cs JOIN classes c ON c.id = cs.class_id JOIN subjects sj ON sj.id = cs.subject_id
"""


ROWS = {
    "oneroster_enrollments": {
        "live": ENROLLMENTS_LIVE,
        # (name, type, nullable): _create makes the Columns on each upgrade (a Column joins one Table only)
        "columns": (
            ("sourced_id", sa.String(), False),
            ("status", sa.String(), False),
            ("dlm", sa.DateTime(timezone=True), False),
            ("role", sa.String(), False),
            ("is_primary", sa.Boolean(), False),
            ("begin_date", sa.Date(), True),
            ("end_date", sa.Date(), True),
            ("user_sid", sa.String(), False),
            ("class_sid", sa.String(), False),
            ("user_id", sa.Integer(), False),
            ("class_ref", sa.Integer(), False),
            ("enrolment_id", sa.Integer(), True),
            ("class_id", sa.Integer(), False),
            ("section_id", sa.Integer(), True),
        ),
        # each sortable (and = filterable) field, per school, with the stable order after it, so a page
        # sorted by it reads the index in order and stops (app/oneroster/query.py list_answer)
        "sorted": (
            "sourced_id",
            "status",
            "dlm",
            "role",
            "is_primary",
            "begin_date",
            "end_date",
            "user_sid",
            "class_sid",
        ),
        "probes": ("user_id", "class_ref"),  # user.sourcedId='student-N', class.sourcedId='section-N'
        # what a trigger recomputes by -> the column holding it
        "keys": {"enrolment": "enrolment_id", "class": "class_id", "section": "section_id"},
        # source table -> (the key its rows change, that key's column in it, the events that change rows):
        # a student's rows are its enrolments' (a new student has none; a deleted one's enrolments go by
        # ON DELETE CASCADE, which fires the enrolments trigger)
        "sources": {
            "enrolments": ("enrolment", "id", ("insert", "update", "delete")),
            "students": ("enrolment", None, ("update",)),
            "classes": ("class", "id", ("insert", "update", "delete")),
            "class_subjects": ("section", "id", ("insert", "update", "delete")),
        },
    },
    "oneroster_classes": {
        "live": CLASSES_LIVE,
        "columns": (
            ("sourced_id", sa.String(), False),
            ("status", sa.String(), False),
            ("dlm", sa.DateTime(timezone=True), False),
            ("title", sa.String(), False),
            ("class_code", sa.String(), False),
            ("class_type", sa.String(), False),
            ("grade", sa.Integer(), False),
            ("course_sid", sa.String(), False),
            ("year_id", sa.Integer(), False),
            ("subject", sa.String(), True),
            ("subject_id", sa.Integer(), True),
            ("class_id", sa.Integer(), False),
            ("section_id", sa.Integer(), True),
        ),
        "sorted": ("sourced_id", "status", "dlm", "title", "class_code", "class_type", "course_sid"),
        "probes": ("subject_id",),  # course.sourcedId='course-N'
        "keys": {"class": "class_id", "section": "section_id", "subject": "subject_id"},
        # a subject's name and code are in its sections' titles and codes (a subject in use is never
        # deleted: class_subjects.subject_id is ON DELETE RESTRICT)
        "sources": {
            "classes": ("class", "id", ("insert", "update", "delete")),
            "class_subjects": ("section", "id", ("insert", "update", "delete")),
            "subjects": ("subject", "id", ("update",)),
        },
    },
}
KEY_COLUMNS = ("institution_id", "kind", "k", "k2")
TRANSITIONS = {
    "insert": "NEW TABLE AS new_rows",
    "update": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "OLD TABLE AS old_rows",
}


def _names(spec):
    return ", ".join([*KEY_COLUMNS, *(name for name, _, _ in spec["columns"])])


def _refresh(table, spec):
    names = _names(spec)
    values = [name for name, _, _ in spec["columns"]]
    updated = ", ".join(f"{name} = EXCLUDED.{name}" for name in values)
    changed = f"({', '.join(f'{table}.{n}' for n in values)}) IS DISTINCT FROM ({', '.join(f'EXCLUDED.{n}' for n in values)})"
    same_key = " AND ".join(f"v.{c} = {table}.{c}" for c in KEY_COLUMNS)
    # One statement per key (an OR of keys would stop the planner pushing the condition into each branch
    # of the view, and a one-row change would join every enrolment with its class subjects): the view's
    # rows of the keys, computed once; the table's rows of those keys the view no longer gives are
    # deleted, the others inserted or updated, and a row whose values did not change is not written
    # (the rollover updates students after their enrolments, with the same time: their rows are
    # computed again and found equal; each write touches every index).
    # First the classes the rows belong to (before and after) are locked, in id order: two transactions
    # recomputing rows of one class then run one after the other, and the second computes from what the
    # first committed. Without it, a class renamed while one of its subjects was removed could write
    # back the removed subject's rows computed from before the removal (tests/test_oneroster_rows.py).
    # The lock's class ids come from the view too: a second computation, small beside the writes.
    branches = "\n    ELS".join(
        f"""IF by_key = '{key}' THEN
        PERFORM FROM classes WHERE id IN (
            SELECT class_id FROM {table}_live WHERE {column} = ANY (ids)
            UNION SELECT class_id FROM {table} WHERE {column} = ANY (ids)
        ) ORDER BY id FOR NO KEY UPDATE;
        WITH v AS MATERIALIZED (SELECT {names} FROM {table}_live WHERE {column} = ANY (ids)),
        gone AS (
            DELETE FROM {table} WHERE {column} = ANY (ids) AND NOT EXISTS (SELECT FROM v WHERE {same_key})
        )
        INSERT INTO {table} ({names}) SELECT {names} FROM v
        ON CONFLICT ({", ".join(KEY_COLUMNS)}) DO UPDATE SET {updated} WHERE {changed};"""
        for key, column in spec["keys"].items()
    )
    return f"""
CREATE FUNCTION {table}_refresh(by_key text, ids integer[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    {branches}
    ELSE RAISE EXCEPTION '{table}_refresh: unknown key %', by_key;
    END IF;
END $$
"""


def _trigger_function(table, source, by_key, key):
    def keys(rows):
        if key is None:  # a student's rows are its enrolments'
            return f"SELECT array_agg(e.id) FROM enrolments e WHERE e.student_id IN (SELECT id FROM {rows})"
        return f"SELECT array_agg({key}) FROM {rows}"

    return f"""
CREATE FUNCTION {table}_from_{source}() RETURNS trigger
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
        PERFORM {table}_refresh('{by_key}', ids);
    END IF;
    RETURN NULL;
END $$
"""


def _create(table, spec):
    op.execute(f"CREATE VIEW {table}_live AS {spec['live']}")
    op.create_table(
        table,
        *[sa.Column(name, sa.Integer(), nullable=False) for name in KEY_COLUMNS],
        *[sa.Column(name, kind, nullable=nullable) for name, kind, nullable in spec["columns"]],
        sa.ForeignKeyConstraint(
            ["institution_id"], ["institutions.id"], name=f"fk_{table}_institution_id_institutions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(*KEY_COLUMNS, name=f"pk_{table}"),
    )  # fmt: skip
    names = _names(spec)
    op.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {table}_live")
    for name in spec["sorted"]:
        op.create_index(f"ix_{table}_{name}", table, ["institution_id", name, "kind", "k", "k2"])
    for name in spec["probes"]:
        op.create_index(f"ix_{table}_{name}", table, ["institution_id", name])
    for column in spec["keys"].values():
        op.create_index(f"ix_{table}_by_{column}", table, [column])
    op.execute(_refresh(table, spec))
    for source, (by_key, key, events) in spec["sources"].items():
        op.execute(_trigger_function(table, source, by_key, key))
        for event in events:
            op.execute(
                f"""CREATE TRIGGER {table}_{source}_{event} AFTER {event.upper()} ON {source}
                    REFERENCING {TRANSITIONS[event]} FOR EACH STATEMENT
                    EXECUTE FUNCTION {table}_from_{source}()"""
            )


def _drop(table, spec):
    for source, (_, _, events) in spec["sources"].items():
        for event in events:
            op.execute(f"DROP TRIGGER {table}_{source}_{event} ON {source}")
        op.execute(f"DROP FUNCTION {table}_from_{source}()")
    op.execute(f"DROP FUNCTION {table}_refresh(text, integer[])")
    op.drop_table(table)
    op.execute(f"DROP VIEW {table}_live")


def upgrade():
    for table, spec in ROWS.items():
        if op.get_bind().dialect.name == "postgresql":
            _create(table, spec)
        else:
            op.execute(f"CREATE VIEW {table} AS {spec['live']}")


def downgrade():
    for table, spec in ROWS.items():
        if op.get_bind().dialect.name == "postgresql":
            _drop(table, spec)
        else:
            op.execute(f"DROP VIEW {table}")
