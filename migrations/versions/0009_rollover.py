"""Year-end rollover: the rollovers table (one per source year that is not undone) and the fee
categories that carry a balance from one year to the next.

Indexes, by the query each serves:
- uq_rollovers_source_live: an apply finds the year's rollover (a second apply changes nothing), and at
  most one rollover of a year is live.

Revision ID: 0009_rollover
Revises: 0008_privacy
Create Date: 2026-11-30 11:40:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0009_rollover"
down_revision = "0008_privacy"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "rollovers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_year_id", sa.Integer(), nullable=False),
        sa.Column("target_year_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("created_ids", sa.JSON(), nullable=True),
        sa.Column("requested_by_id", sa.Integer(), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_rollovers_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_year_id"],
            ["academic_years.id"],
            name=op.f("fk_rollovers_source_year_id_academic_years"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target_year_id"],
            ["academic_years.id"],
            name=op.f("fk_rollovers_target_year_id_academic_years"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_rollovers_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_id"],
            ["users.id"],
            name=op.f("fk_rollovers_requested_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollovers")),
    )
    with op.batch_alter_table("rollovers", schema=None) as batch_op:
        batch_op.create_index(
            "uq_rollovers_source_live",
            ["source_year_id"],
            unique=True,
            postgresql_where=sa.text("status <> 'undone'"),
            sqlite_where=sa.text("status <> 'undone'"),
        )
    with op.batch_alter_table("fee_categories", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("carried_balance", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade():
    with op.batch_alter_table("fee_categories", schema=None) as batch_op:
        batch_op.drop_column("carried_balance")
    with op.batch_alter_table("rollovers", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_rollovers_source_live",
            postgresql_where=sa.text("status <> 'undone'"),
            sqlite_where=sa.text("status <> 'undone'"),
        )
    op.drop_table("rollovers")
