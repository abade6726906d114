"""OneRoster 1.2: clients (client credentials), their tokens as sessions, and the indexes of delta sync.

A client's token is a row of auth_sessions naming the client instead of a user (user_id becomes
nullable), so the revocation store (app/core/revocation.py) covers it unchanged.

Revision ID: 0004_oneroster
Revises: 0003_accounts
Create Date: 2026-12-01 10:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = "0004_oneroster"
down_revision = "0003_accounts"
branch_labels = None
depends_on = None

# dateLastModified>'...' (a OneRoster delta): each table's changed rows of the school, by time
DELTA = (
    "students",
    "teachers",
    "guardians",
    "classes",
    "enrolments",
    "class_subjects",
    "grades",
    "assessments",
)


def upgrade():
    op.create_table(
        "oneroster_clients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("scopes", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_token_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_oneroster_clients_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oneroster_clients")),
    )
    with op.batch_alter_table("oneroster_clients", schema=None) as batch_op:
        # POST /oauth/token: the client named by HTTP Basic, across schools
        batch_op.create_index("uq_oneroster_clients_client_id", ["client_id"], unique=True)
        # GET /oneroster/clients: a school's clients
        batch_op.create_index("ix_oneroster_clients_institution", ["institution_id", "id"], unique=False)

    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.alter_column("user_id", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("client_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_auth_sessions_client_id_oneroster_clients"),
            "oneroster_clients",
            ["client_id"],
            ["id"],
            ondelete="CASCADE",
        )
        # revoking or rotating a OneRoster client ends its tokens
        batch_op.create_index(
            "ix_auth_sessions_client_id",
            ["client_id"],
            unique=False,
            postgresql_where=sa.text("client_id IS NOT NULL"),
        )

    for table in DELTA:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(
                f"ix_{table}_institution_updated", ["institution_id", "updated_at"], unique=False
            )


def downgrade():
    for table in DELTA:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_institution_updated")
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_auth_sessions_client_id")
        batch_op.drop_constraint(op.f("fk_auth_sessions_client_id_oneroster_clients"), type_="foreignkey")
        batch_op.drop_column("client_id")
        batch_op.alter_column("user_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("oneroster_clients", schema=None) as batch_op:
        batch_op.drop_index("ix_oneroster_clients_institution")
        batch_op.drop_index("uq_oneroster_clients_client_id")
    op.drop_table("oneroster_clients")
