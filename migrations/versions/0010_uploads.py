"""Photos, logos and documents (app/uploads): one row per kept file, its bytes in the upload storage.

Revision ID: 0010_uploads
Revises: 0009_rollover (the lead re-chains the 0004s when merging)
Create Date: 2026-12-02 10:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0010_uploads"
down_revision = "0009_rollover"
branch_labels = None
depends_on = None

ONE_PER_OWNER = "kind IN ('photo', 'logo')"
PENDING = "thumbnail_status = 'pending'"


def upgrade():
    op.create_table(
        "uploads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_type", sa.String(length=20), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("storage_key", sa.String(length=500), nullable=False),
        sa.Column("thumbnail_key", sa.String(length=500), nullable=True),
        sa.Column("thumbnail_status", sa.String(length=10), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_uploads_created_by_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_uploads_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_uploads")),
    )
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        # GET /students/{id}/documents (newest first), and a person's files when they are erased
        batch_op.create_index(
            "ix_uploads_owner", ["institution_id", "owner_type", "owner_id", "id"], unique=False
        )
        # one photo per person and one logo per school; GET .../photo and the report cards' logo
        batch_op.create_index(
            "uq_uploads_one_per_owner",
            ["institution_id", "owner_type", "owner_id", "kind"],
            unique=True,
            postgresql_where=sa.text(ONE_PER_OWNER),
            sqlite_where=sa.text(ONE_PER_OWNER),
        )
        # the beat sweep: images whose thumbnail is still pending (a lost message)
        batch_op.create_index(
            "ix_uploads_thumbnail_pending",
            ["created_at"],
            unique=False,
            postgresql_where=sa.text(PENDING),
            sqlite_where=sa.text(PENDING),
        )


def downgrade():
    with op.batch_alter_table("uploads", schema=None) as batch_op:
        batch_op.drop_index("ix_uploads_thumbnail_pending")
        batch_op.drop_index("uq_uploads_one_per_owner")
        batch_op.drop_index("ix_uploads_owner")
    op.drop_table("uploads")
