"""Enrolment integrity, the school calendar and report-card remarks.

- enrolments: at most one per student on any date. On PostgreSQL an exclusion constraint over
  daterange(start_date, end_date, '[]') (needs btree_gist for the `student_id WITH =` part); SQLite (the
  embedded default) has none, and app/academics/services.py checks the same rule. Rows that already
  overlap, or that end before they start, are listed and the upgrade stops: they are never hidden.
- closures: days a school (or one class) is closed; attendance codes per school; the code a mark carries.
- report_card_remarks: subject teachers' comments, the class teacher's and the head's remarks.

Revision ID: 0004_enrolment_calendar
Revises: 0003_accounts
Create Date: 2026-12-07 10:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0004_enrolment_calendar"
down_revision = "0003_accounts"
branch_labels = None
depends_on = None

SHOWN = 50  # overlapping pairs listed in the refusal; the count says how many there are in all

_OVERLAPS = sa.text(
    """
    SELECT a.id, a.student_id, a.class_id, a.start_date, a.end_date,
           b.id, b.class_id, b.start_date, b.end_date
    FROM enrolments a
    JOIN enrolments b
      ON b.student_id = a.student_id AND b.id > a.id
     AND a.start_date <= COALESCE(b.end_date, DATE '9999-12-31')
     AND b.start_date <= COALESCE(a.end_date, DATE '9999-12-31')
    ORDER BY a.student_id, a.start_date, a.id, b.id
    """
)
_OVERLAPS_SQLITE = sa.text(
    """
    SELECT a.id, a.student_id, a.class_id, a.start_date, a.end_date,
           b.id, b.class_id, b.start_date, b.end_date
    FROM enrolments a
    JOIN enrolments b
      ON b.student_id = a.student_id AND b.id > a.id
     AND a.start_date <= COALESCE(b.end_date, '9999-12-31')
     AND b.start_date <= COALESCE(a.end_date, '9999-12-31')
    ORDER BY a.student_id, a.start_date, a.id, b.id
    """
)
_BACKWARDS = sa.text(
    "SELECT id, student_id, class_id, start_date, end_date FROM enrolments "
    "WHERE end_date IS NOT NULL AND end_date < start_date ORDER BY id"
)


def _span(start, end):
    return f"{start} to {end or 'open-ended'}"


def refuse_bad_enrolments(conn):
    """Stop the upgrade, listing every enrolment the new rule would reject (first SHOWN of each kind)."""
    sqlite = conn.dialect.name == "sqlite"
    pairs = conn.execute(_OVERLAPS_SQLITE if sqlite else _OVERLAPS).all()
    backwards = conn.execute(_BACKWARDS).all()
    if not pairs and not backwards:
        return
    lines = []
    if pairs:
        lines.append(f"{len(pairs)} pair(s) of overlapping enrolments (a student may have one per date):")
        lines += [
            f"  student {sid}: enrolment {a} (class {ac}, {_span(a_s, a_e)}) overlaps "
            f"enrolment {b} (class {bc}, {_span(b_s, b_e)})"
            for a, sid, ac, a_s, a_e, b, bc, b_s, b_e in pairs[:SHOWN]
        ]
    if backwards:
        lines.append(f"{len(backwards)} enrolment(s) ending before they start:")
        lines += [
            f"  student {sid}: enrolment {e} (class {c}, {_span(s, end)})"
            for e, sid, c, s, end in backwards[:SHOWN]
        ]
    lines.append(
        "Correct these rows (end one enrolment the day before the next starts, or delete a duplicate), "
        "then run the upgrade again. Nothing was changed."
    )
    raise RuntimeError("0004_enrolment_calendar refused:\n" + "\n".join(lines))


def upgrade():
    conn = op.get_bind()
    refuse_bad_enrolments(conn)
    if conn.dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        # at most one enrolment per student on any date (inclusive bounds, an open end unbounded)
        op.execute(
            "ALTER TABLE enrolments ADD CONSTRAINT ex_enrolments_student_dates "
            "EXCLUDE USING gist (student_id WITH =, daterange(start_date, end_date, '[]') WITH &&)"
        )


def downgrade():
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        op.execute("ALTER TABLE enrolments DROP CONSTRAINT ex_enrolments_student_dates")
        # btree_gist stays: other databases objects may use it, and it holds no data
