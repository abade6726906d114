"""Announcements: staff posts to an audience, and one row per person reached, with read state.

Indexes, by the query each serves:
- ix_announcements_institution_id: GET /announcements for an admin: the school's, newest first.
- ix_announcements_author_id: GET /announcements for a teacher: their own posts, newest first.
- pk_announcement_recipients (announcement_id, kind, person_id): the fan-out's ON CONFLICT (a task run
  twice adds nobody twice), POST /me/announcements/{id}/read, one announcement's delivery counts.
- ix_announcement_recipients_person: GET /me/announcements: one person's announcements, newest first.

Revision ID: 0012_announcements
Revises: 0011_timetable
Create Date: 2026-11-30 11:50:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0012_announcements"
down_revision = "0011_timetable"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "announcements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("audience", sa.String(length=10), nullable=False),
        sa.Column("grade_level", sa.Integer(), nullable=True),
        sa.Column("class_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("recipient_count", sa.Integer(), nullable=False),
        sa.Column("email_count", sa.Integer(), nullable=False),
        sa.Column("sms_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "audience IN ('school','grade','class','guardians','staff')",
            name=op.f("ck_announcements_audience"),
        ),
        sa.CheckConstraint("status IN ('queued','delivered')", name=op.f("ck_announcements_status")),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_announcements_author_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["class_id"], ["classes.id"], name=op.f("fk_announcements_class_id_classes"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_announcements_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_announcements")),
    )
    with op.batch_alter_table("announcements", schema=None) as batch_op:
        batch_op.create_index("ix_announcements_institution_id", ["institution_id", "id"], unique=False)
        batch_op.create_index("ix_announcements_author_id", ["author_id", "id"], unique=False)

    op.create_table(
        "announcement_recipients",
        sa.Column("announcement_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('guardian','student','user')", name=op.f("ck_announcement_recipients_kind")
        ),
        sa.ForeignKeyConstraint(
            ["announcement_id"],
            ["announcements.id"],
            name=op.f("fk_announcement_recipients_announcement_id_announcements"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_announcement_recipients_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "announcement_id", "kind", "person_id", name=op.f("pk_announcement_recipients")
        ),
    )
    with op.batch_alter_table("announcement_recipients", schema=None) as batch_op:
        batch_op.create_index(
            "ix_announcement_recipients_person", ["kind", "person_id", "announcement_id"], unique=False
        )


def downgrade():
    with op.batch_alter_table("announcement_recipients", schema=None) as batch_op:
        batch_op.drop_index("ix_announcement_recipients_person")
    op.drop_table("announcement_recipients")
    with op.batch_alter_table("announcements", schema=None) as batch_op:
        batch_op.drop_index("ix_announcements_author_id")
        batch_op.drop_index("ix_announcements_institution_id")
    op.drop_table("announcements")
