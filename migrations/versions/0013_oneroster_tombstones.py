"""OneRoster tombstones: records deleted outright stay visible as tobedeleted for a retention window.

Revision ID: 0013_oneroster_tombstones
Revises: 0012_announcements
Create Date: 2026-11-30 14:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0013_oneroster_tombstones"
down_revision = "0012_announcements"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "oneroster_tombstones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collection", sa.String(length=30), nullable=False),
        sa.Column("sourced_id", sa.String(length=255), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_oneroster_tombstones_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oneroster_tombstones")),
    )
    with op.batch_alter_table("oneroster_tombstones", schema=None) as batch_op:
        # one tombstone per record
        batch_op.create_index(
            "uq_oneroster_tombstones_key", ["institution_id", "collection", "sourced_id"], unique=True
        )
        # a collection's tombstones of a school, in a delta (dateLastModified > ...)
        batch_op.create_index(
            "ix_oneroster_tombstones_institution_deleted", ["institution_id", "collection", "deleted_at"]
        )
        # the nightly prune
        batch_op.create_index("ix_oneroster_tombstones_deleted_at", ["deleted_at"])


def downgrade():
    with op.batch_alter_table("oneroster_tombstones", schema=None) as batch_op:
        batch_op.drop_index("ix_oneroster_tombstones_deleted_at")
        batch_op.drop_index("ix_oneroster_tombstones_institution_deleted")
        batch_op.drop_index("uq_oneroster_tombstones_key")
    op.drop_table("oneroster_tombstones")
