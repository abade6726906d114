"""M-Pesa (Daraja) collections and SMS: a school's Daraja account (secrets encrypted), STK push requests,
paybill (C2B) payments with their suspense list, the SMS outbox, and each guardian's channel.

Indexes, by the query each serves:
- uq_mpesa_accounts_callback_token: a callback's path names its school.
- uq_mpesa_stk_requests_institution_checkout: a callback finds its request by CheckoutRequestID (and a
  request is recorded once).
- ix_mpesa_stk_requests_pending_created: the settle job's requests still pending, oldest first.
- ix_mpesa_stk_requests_invoice: an invoice's push requests.
- uq_mpesa_c2b_payments_institution_trans: each M-Pesa TransID recorded once.
- ix_mpesa_c2b_payments_suspense: GET /mpesa/suspense.
- sms_outbox: as email_outbox (dedupe, pending due, sending lease) plus the provider's message id for
  delivery reports.

Revision ID: 0006_mpesa_sms
Revises: 0005_enrolment_calendar
Create Date: 2026-11-30 10:50:23

"""

import sqlalchemy as sa
from alembic import op

revision = "0006_mpesa_sms"
down_revision = "0005_enrolment_calendar"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "mpesa_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(length=10), nullable=False),
        sa.Column("shortcode", sa.String(length=20), nullable=False),
        sa.Column("transaction_type", sa.String(length=30), nullable=False),
        sa.Column("consumer_key_enc", sa.Text(), nullable=False),
        sa.Column("consumer_secret_enc", sa.Text(), nullable=False),
        sa.Column("passkey_enc", sa.Text(), nullable=False),
        sa.Column("callback_token", sa.String(length=64), nullable=False),
        sa.Column("urls_registered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "environment IN ('sandbox','production','simulator')", name=op.f("ck_mpesa_accounts_environment")
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_mpesa_accounts_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mpesa_accounts")),
        sa.UniqueConstraint("callback_token", name="uq_mpesa_accounts_callback_token"),
        sa.UniqueConstraint("institution_id", name="uq_mpesa_accounts_institution"),
    )
    op.create_table(
        "sms_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("to_number", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("encoding", sa.String(length=5), nullable=False),
        sa.Column("segments", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("provider_message_id", sa.String(length=100), nullable=True),
        sa.Column("cost", sa.String(length=30), nullable=True),
        sa.Column("delivery_status", sa.String(length=30), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_sms_outbox_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_outbox")),
    )
    with op.batch_alter_table("sms_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sms_outbox_pending_due",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text("status = 'pending'"),
        )
        batch_op.create_index(
            "ix_sms_outbox_provider_message_id",
            ["provider_message_id"],
            unique=False,
            postgresql_where=sa.text("provider_message_id IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_sms_outbox_sending_lease",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text("status = 'sending'"),
        )
        batch_op.create_index(
            "uq_sms_outbox_institution_dedupe", ["institution_id", "dedupe_key"], unique=True
        )

    op.create_table(
        "mpesa_c2b_payments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("trans_id", sa.String(length=30), nullable=False),
        sa.Column("trans_type", sa.String(length=40), nullable=True),
        sa.Column("trans_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("bill_ref", sa.String(length=100), nullable=False),
        sa.Column("msisdn", sa.String(length=100), nullable=True),
        sa.Column("payer_name", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=True),
        sa.Column("student_id", sa.Integer(), nullable=True),
        sa.Column("payment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("assigned_by_id", sa.Integer(), nullable=True),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('applied','suspense','assigned','duplicate')",
            name=op.f("ck_mpesa_c2b_payments_c2b_status"),
        ),
        sa.ForeignKeyConstraint(
            ["assigned_by_id"],
            ["users.id"],
            name=op.f("fk_mpesa_c2b_payments_assigned_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_mpesa_c2b_payments_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_mpesa_c2b_payments_invoice_id_invoices"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_mpesa_c2b_payments_payment_id_payments"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["student_id"],
            ["students.id"],
            name=op.f("fk_mpesa_c2b_payments_student_id_students"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mpesa_c2b_payments")),
        sa.UniqueConstraint("institution_id", "trans_id", name="uq_mpesa_c2b_payments_institution_trans"),
    )
    with op.batch_alter_table("mpesa_c2b_payments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_mpesa_c2b_payments_suspense",
            ["institution_id", "id"],
            unique=False,
            postgresql_where=sa.text("status = 'suspense'"),
            sqlite_where=sa.text("status = 'suspense'"),
        )

    op.create_table(
        "mpesa_stk_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("student_id", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=15), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("merchant_request_id", sa.String(length=64), nullable=False),
        sa.Column("checkout_request_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("result_code", sa.Integer(), nullable=True),
        sa.Column("result_desc", sa.String(length=255), nullable=True),
        sa.Column("receipt_number", sa.String(length=30), nullable=True),
        sa.Column("payment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("requested_by_id", sa.Integer(), nullable=True),
        sa.Column("settled_by", sa.String(length=10), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("institution_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending','paid','failed','cancelled','expired')",
            name=op.f("ck_mpesa_stk_requests_stk_status"),
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.id"],
            name=op.f("fk_mpesa_stk_requests_institution_id_institutions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_mpesa_stk_requests_invoice_id_invoices"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
            name=op.f("fk_mpesa_stk_requests_payment_id_payments"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_id"],
            ["users.id"],
            name=op.f("fk_mpesa_stk_requests_requested_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["student_id"],
            ["students.id"],
            name=op.f("fk_mpesa_stk_requests_student_id_students"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mpesa_stk_requests")),
        sa.UniqueConstraint(
            "institution_id", "checkout_request_id", name="uq_mpesa_stk_requests_institution_checkout"
        ),
    )
    with op.batch_alter_table("mpesa_stk_requests", schema=None) as batch_op:
        batch_op.create_index("ix_mpesa_stk_requests_invoice", ["invoice_id"], unique=False)
        batch_op.create_index(
            "ix_mpesa_stk_requests_pending_created",
            ["created_at"],
            unique=False,
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        )

    with op.batch_alter_table("guardians", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("notify_by", sa.String(length=5), server_default="email", nullable=False)
        )
        batch_op.create_check_constraint("notify_by", "notify_by IN ('email','sms','both')")


def downgrade():
    with op.batch_alter_table("guardians", schema=None) as batch_op:
        batch_op.drop_constraint("notify_by", type_="check")
        batch_op.drop_column("notify_by")

    with op.batch_alter_table("mpesa_stk_requests", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_mpesa_stk_requests_pending_created",
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        )
        batch_op.drop_index("ix_mpesa_stk_requests_invoice")

    op.drop_table("mpesa_stk_requests")
    with op.batch_alter_table("mpesa_c2b_payments", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_mpesa_c2b_payments_suspense",
            postgresql_where=sa.text("status = 'suspense'"),
            sqlite_where=sa.text("status = 'suspense'"),
        )

    op.drop_table("mpesa_c2b_payments")
    with op.batch_alter_table("sms_outbox", schema=None) as batch_op:
        batch_op.drop_index("uq_sms_outbox_institution_dedupe")
        batch_op.drop_index("ix_sms_outbox_sending_lease", postgresql_where=sa.text("status = 'sending'"))
        batch_op.drop_index(
            "ix_sms_outbox_provider_message_id", postgresql_where=sa.text("provider_message_id IS NOT NULL")
        )
        batch_op.drop_index("ix_sms_outbox_pending_due", postgresql_where=sa.text("status = 'pending'"))

    op.drop_table("sms_outbox")
    op.drop_table("mpesa_accounts")
