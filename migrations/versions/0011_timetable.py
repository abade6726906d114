"""The timetable: periods (the bell schedule per weekday), rooms and lessons.

On PostgreSQL three exclusion constraints keep a teacher, a room and a class out of two lessons of one
period with overlapping dates, so two concurrent writers cannot both succeed (app/timetable/services.py
runs the same check first, in every database, and names the clash). They need btree_gist (integer
equality in a GiST index): a trusted extension since PostgreSQL 13, which the database owner may create.

Revision ID: 0011_timetable
Revises: 0010_uploads
Create Date: 2026-12-02 10:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0011_timetable"
down_revision = "0010_uploads"
branch_labels = None
depends_on = None


def _tenant(table):
    return [
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f(f"fk_{table}_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
    ]


def upgrade():
    op.create_table(
        "periods",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("number", sa.SmallInteger(), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("starts_at", sa.Time(), nullable=False),
        sa.Column("ends_at", sa.Time(), nullable=False),
        *_tenant("periods"),
        sa.CheckConstraint("weekday BETWEEN 0 AND 6", name=op.f("ck_periods_weekday")),
        sa.CheckConstraint("number BETWEEN 1 AND 20", name=op.f("ck_periods_number")),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_periods_times")),
        # natural key: period N of a weekday; also GET /periods?weekday= and the roll's period check
        sa.UniqueConstraint(
            "institution_id", "weekday", "number", name="uq_periods_institution_weekday_number"
        ),
    )
    op.create_table(
        "rooms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=True),
        *_tenant("rooms"),
        # natural key: room name per institution
        sa.UniqueConstraint("institution_id", "name", name="uq_rooms_institution_name"),
    )
    op.create_table(
        "lessons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("class_subject_id", sa.Integer(), nullable=False),
        sa.Column("class_id", sa.Integer(), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("teacher_id", sa.Integer(), nullable=False),
        sa.Column("room_id", sa.Integer(), nullable=True),
        sa.Column("period_id", sa.Integer(), nullable=False),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=False),
        *_tenant("lessons"),
        sa.CheckConstraint("end_date >= start_date", name=op.f("ck_lessons_dates")),
        sa.ForeignKeyConstraint(
            ["class_subject_id"],
            ["class_subjects.id"],
            name=op.f("fk_lessons_class_subject_id_class_subjects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["class_id"], ["classes.id"], name=op.f("fk_lessons_class_id_classes"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_lessons_subject_id_subjects"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["teacher_id"], ["teachers.id"], name=op.f("fk_lessons_teacher_id_teachers"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["room_id"], ["rooms.id"], name=op.f("fk_lessons_room_id_rooms"), ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["period_id"], ["periods.id"], name=op.f("fk_lessons_period_id_periods"), ondelete="RESTRICT"
        ),
    )
    with op.batch_alter_table("lessons", schema=None) as batch_op:
        # GET /me/timetable and the class export: a class's lessons on a weekday
        batch_op.create_index("ix_lessons_class_weekday", ["class_id", "weekday"], unique=False)
        # GET /me/timetable and the teacher export: a teacher's lessons on a weekday
        batch_op.create_index("ix_lessons_teacher_weekday", ["teacher_id", "weekday"], unique=False)
        # the clash check by room, and GET /lessons?room_id=
        batch_op.create_index("ix_lessons_room_period", ["room_id", "period_id"], unique=False)
        # deleting a period or class subject: the lessons that use it
        batch_op.create_index("ix_lessons_period_id", ["period_id"], unique=False)
        batch_op.create_index("ix_lessons_class_subject_id", ["class_subject_id"], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        # no double booking (teacher, room, class) in one period for overlapping dates; the GiST index
        # of each also serves the service's clash check (app/timetable/services.py)
        for name, column in (
            ("ex_lessons_teacher_slot", "teacher_id"),
            ("ex_lessons_room_slot", "room_id"),
            ("ex_lessons_class_slot", "class_id"),
        ):
            op.execute(
                f"ALTER TABLE lessons ADD CONSTRAINT {name} EXCLUDE USING gist "
                f"({column} WITH =, period_id WITH =, daterange(start_date, end_date, '[]') WITH &&)"
            )


def downgrade():
    # btree_gist stays: other constraints may use it, and it holds no data
    with op.batch_alter_table("lessons", schema=None) as batch_op:
        batch_op.drop_index("ix_lessons_class_subject_id")
        batch_op.drop_index("ix_lessons_period_id")
        batch_op.drop_index("ix_lessons_room_period")
        batch_op.drop_index("ix_lessons_teacher_weekday")
        batch_op.drop_index("ix_lessons_class_weekday")
    op.drop_table("lessons")
    op.drop_table("rooms")
    op.drop_table("periods")
