"""Enrolment integrity, the school calendar and report-card remarks.

- enrolments: at most one per student on any date. On PostgreSQL an exclusion constraint over
  daterange(start_date, end_date, '[]') (needs btree_gist for the `student_id WITH =` part); SQLite (the
  embedded default) has none, and app/academics/services.py checks the same rule. Rows that already
  overlap, or that end before they start, are listed and the upgrade stops: they are never hidden.
- closures: days a school (or one class) is closed; attendance codes per school; the code a mark carries.
- report_card_remarks: subject teachers' comments, the class teacher's and the head's remarks.

Revision ID: 0005_enrolment_calendar
Revises: 0004_oneroster
Create Date: 2026-12-07 10:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0005_enrolment_calendar"
down_revision = "0004_oneroster"
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
    raise RuntimeError("0005_enrolment_calendar refused:\n" + "\n".join(lines))


def _timestamps():
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def _tenant(table):
    return [
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f(f"fk_{table}_institution_id_institutions"),
            ondelete="CASCADE",
        ),
    ]


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

    op.create_table(
        "closures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=True),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        *_timestamps(),
        *_tenant("closures"),
        sa.CheckConstraint("kind IN ('holiday','strike','exam','other')", name=op.f("ck_closures_kind")),
        sa.CheckConstraint("end_date >= start_date", name=op.f("ck_closures_dates")),
        sa.ForeignKeyConstraint(
            ["class_id"], ["classes.id"], name=op.f("fk_closures_class_id_classes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_closures")),
    )
    with op.batch_alter_table("closures", schema=None) as batch_op:
        # "is this day closed for class C" (roll call) and the closures within a range (statistics)
        batch_op.create_index(
            "ix_closures_institution_dates", ["institution_id", "start_date", "end_date"], unique=False
        )
        # deleting a class removes its closures (ON DELETE CASCADE looks them up by class)
        batch_op.create_index("ix_closures_class_id", ["class_id"], unique=False)

    op.create_table(
        "attendance_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=20), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        *_timestamps(),
        *_tenant("attendance_codes"),
        sa.CheckConstraint(
            "status IN ('present','absent','late','excused')", name=op.f("ck_attendance_codes_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attendance_codes")),
        # natural key, and the roll call's lookup of the codes a roll carries
        sa.UniqueConstraint("institution_id", "code", name="uq_attendance_codes_institution_code"),
    )
    if conn.dialect.name == "sqlite":
        # A plain ADD COLUMN: a batch copy of the table would drop the expression index that the roll
        # call's upsert targets (uq_attendance_student_date_period_subject), which SQLite cannot reflect.
        op.execute(
            "ALTER TABLE attendance_records ADD COLUMN code_id INTEGER "
            "CONSTRAINT fk_attendance_records_code_id_attendance_codes "
            "REFERENCES attendance_codes (id) ON DELETE RESTRICT"
        )
    else:
        op.add_column("attendance_records", sa.Column("code_id", sa.Integer(), nullable=True))
        op.create_foreign_key(
            op.f("fk_attendance_records_code_id_attendance_codes"),
            "attendance_records",
            "attendance_codes",
            ["code_id"],
            ["id"],
            ondelete="RESTRICT",
        )
    # deleting an attendance code: is any mark still carrying it (few marks do)
    op.create_index(
        "ix_attendance_code_id",
        "attendance_records",
        ["code_id"],
        unique=False,
        postgresql_where=sa.text("code_id IS NOT NULL"),
    )

    op.create_table(
        "report_card_remarks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("student_id", sa.Integer(), nullable=False),
        sa.Column("term_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=15), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.String(length=2000), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        *_timestamps(),
        *_tenant("report_card_remarks"),
        sa.CheckConstraint(
            "kind IN ('subject','class_teacher','head')", name=op.f("ck_report_card_remarks_kind")
        ),
        sa.CheckConstraint(
            "(kind = 'subject') = (subject_id IS NOT NULL)",
            name=op.f("ck_report_card_remarks_subject_only_for_subject"),
        ),
        sa.ForeignKeyConstraint(
            ["student_id"],
            ["students.id"],
            name=op.f("fk_report_card_remarks_student_id_students"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["term_id"], ["terms.id"], name=op.f("fk_report_card_remarks_term_id_terms"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"],
            ["subjects.id"],
            name=op.f("fk_report_card_remarks_subject_id_subjects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["users.id"],
            name=op.f("fk_report_card_remarks_author_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_card_remarks")),
    )
    with op.batch_alter_table("report_card_remarks", schema=None) as batch_op:
        # natural key (one remark of a kind per student, term and subject) and the report cards' read
        batch_op.create_index(
            "uq_report_card_remarks_student_term_kind_subject",
            ["student_id", "term_id", "kind", sa.literal_column("coalesce(subject_id, 0)")],
            unique=True,
        )


def downgrade():
    with op.batch_alter_table("report_card_remarks", schema=None) as batch_op:
        batch_op.drop_index("uq_report_card_remarks_student_term_kind_subject")
    op.drop_table("report_card_remarks")
    op.drop_index("ix_attendance_code_id", table_name="attendance_records")
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        with op.batch_alter_table("attendance_records", schema=None) as batch_op:
            batch_op.drop_column("code_id")
    else:
        op.drop_constraint(
            op.f("fk_attendance_records_code_id_attendance_codes"), "attendance_records", type_="foreignkey"
        )
        op.drop_column("attendance_records", "code_id")
    op.drop_table("attendance_codes")
    with op.batch_alter_table("closures", schema=None) as batch_op:
        batch_op.drop_index("ix_closures_class_id")
        batch_op.drop_index("ix_closures_institution_dates")
    op.drop_table("closures")
    if conn.dialect.name == "postgresql":
        op.execute("ALTER TABLE enrolments DROP CONSTRAINT ex_enrolments_student_dates")
        # btree_gist stays: other objects in the database may use it, and it holds no data
