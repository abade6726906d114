"""Revocations whose Redis copy was not confirmed: checks trust Redis again only once it is rebuilt.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 08:30:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("revocation_unconfirmed", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        # "is any revocation missing from Redis?" (app/core/revocation.py, about once a second per
        # process): a partial index holds only those rows, so the answer is one index probe.
        batch_op.create_index(
            "ix_auth_sessions_revocation_unconfirmed",
            ["id"],
            unique=False,
            postgresql_where=sa.text("revocation_unconfirmed"),
            sqlite_where=sa.text("revocation_unconfirmed"),
        )
        # the rebuild of the Redis copy: sessions revoked within one access-token lifetime
        batch_op.create_index("ix_auth_sessions_revoked_at", ["revoked_at"], unique=False)


def downgrade():
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_auth_sessions_revoked_at")
        batch_op.drop_index("ix_auth_sessions_revocation_unconfirmed")
        batch_op.drop_column("revocation_unconfirmed")
