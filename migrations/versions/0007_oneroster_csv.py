"""OneRoster CSV import: the sourcedIds of imported records, so a re-import updates what it made.

Revision ID: 0007_oneroster_csv
Revises: 0006_mpesa_sms
Create Date: 2026-12-08 10:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0007_oneroster_csv"
down_revision = "0006_mpesa_sms"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "oneroster_sourced_ids",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=20), nullable=False),
        sa.Column("sourced_id", sa.String(length=255), nullable=False),
        sa.Column("local_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_oneroster_sourced_ids_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oneroster_sourced_ids")),
    )
    with op.batch_alter_table("oneroster_sourced_ids", schema=None) as batch_op:
        # upsert by sourcedId: the local record an imported sourcedId names, per school and kind of record
        batch_op.create_index(
            "uq_oneroster_sourced_ids_key", ["institution_id", "entity", "sourced_id"], unique=True
        )


def downgrade():
    with op.batch_alter_table("oneroster_sourced_ids", schema=None) as batch_op:
        batch_op.drop_index("uq_oneroster_sourced_ids_key")
    op.drop_table("oneroster_sourced_ids")
