"""Privacy: the record of disclosures (staff reads of a student's sensitive records), erasures with
their statements, and an audit log that the retention job and an erasure may change.

Indexes, by the query each serves:
- ix_disclosures_institution_student: GET /students/{id}/disclosures, reads of the student's record.
- ix_disclosures_institution_guardian: the same list, reads of the student's guardians' contacts.
- uq_erasures_subject: a second erasure of the same person finds the first (idempotent).

The audit log stays append-only for the application: its trigger now lets an UPDATE or DELETE through
only in a transaction that set `schoolhouse.audit_maintenance` to 'on' (SET LOCAL), which only the
retention job and an erasure do (app/privacy/services.py). TRUNCATE stays refused.

Revision ID: 0008_privacy
Revises: 0007_oneroster_csv
Create Date: 2026-11-30 11:40:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0008_privacy"
down_revision = "0007_oneroster_csv"
branch_labels = None
depends_on = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

AUDIT_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'ROW' AND coalesce(current_setting('schoolhouse.audit_maintenance', true), '') = 'on' THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
"""

AUDIT_FUNCTION_BEFORE = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
"""


def upgrade():
    op.create_table(
        "disclosures",
        sa.Column("id", BIGID, nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_role", sa.String(length=20), nullable=False),
        sa.Column("student_id", sa.Integer(), nullable=True),
        sa.Column("guardian_id", sa.Integer(), nullable=True),
        sa.Column("record", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_disclosures_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disclosures")),
    )
    with op.batch_alter_table("disclosures", schema=None) as batch_op:
        batch_op.create_index(
            "ix_disclosures_institution_student", ["institution_id", "student_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_disclosures_institution_guardian", ["institution_id", "guardian_id", "id"], unique=False
        )
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subject_type", sa.String(length=10), nullable=False),
        sa.Column("subject_id", sa.Integer(), nullable=False),
        sa.Column("performed_by_id", sa.Integer(), nullable=True),
        sa.Column("statement", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_erasures_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["performed_by_id"],
            ["users.id"],
            name=op.f("fk_erasures_performed_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasures")),
        sa.UniqueConstraint("institution_id", "subject_type", "subject_id", name="uq_erasures_subject"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(AUDIT_FUNCTION)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(AUDIT_FUNCTION_BEFORE)
    op.drop_table("erasures")
    with op.batch_alter_table("disclosures", schema=None) as batch_op:
        batch_op.drop_index("ix_disclosures_institution_guardian")
        batch_op.drop_index("ix_disclosures_institution_student")
    op.drop_table("disclosures")
