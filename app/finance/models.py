from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.models import BigId, TenantMixin, TimestampMixin
from app.extensions import db

# Money is integer minor units (cents) in the institution's currency: exact, never float.
INVOICE_STATUSES = ("open", "partially_paid", "paid", "void")
PAYMENT_METHODS = ("cash", "bank", "mobile_money", "card")


class FeeCategory(TenantMixin, TimestampMixin, db.Model):
    __tablename__ = "fee_categories"
    id: Mapped[int] = mapped_column(primary_key=True)
    term_id: Mapped[int] = mapped_column(ForeignKey("terms.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(100))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    grade_level: Mapped[int | None]  # applies to one grade level, or
    class_id: Mapped[int | None] = mapped_column(ForeignKey("classes.id", ondelete="RESTRICT"))  # one class
    due_date: Mapped[date | None] = mapped_column(Date)
    # A year-end rollover's balance carried forward or brought forward (app/rollover/services.py): its
    # lines carry each student's own amount, and invoice generation never bills it.
    carried_balance: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    __table_args__ = (
        # invoice generation and GET /fee-categories?term_id=: the categories of a term
        Index("ix_fee_categories_term", "term_id"),
        CheckConstraint("amount_minor >= 0", name="amount_nonnegative"),
    )


class Invoice(TenantMixin, TimestampMixin, db.Model):
    __tablename__ = "invoices"
    __cache_scopes__ = ("student_id",)  # cached balances and statements per student (app/core/caching.py)
    id: Mapped[int] = mapped_column(primary_key=True)
    student_id: Mapped[int] = mapped_column(ForeignKey("students.id", ondelete="RESTRICT"))
    term_id: Mapped[int] = mapped_column(ForeignKey("terms.id", ondelete="RESTRICT"))
    number: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default="open")
    total_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    due_date: Mapped[date | None] = mapped_column(Date)
    voided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    lines = relationship("InvoiceLine", lazy="raise", order_by="InvoiceLine.id")

    __table_args__ = (
        # idempotent generation: one invoice per student and term; also a student's invoices
        UniqueConstraint("student_id", "term_id", name="uq_invoices_student_term"),
        # natural key: invoice number per institution
        UniqueConstraint("institution_id", "number", name="uq_invoices_institution_number"),
        # fee reminders and GET /invoices?status=: unpaid invoices by due date
        Index("ix_invoices_institution_status_due", "institution_id", "status", "due_date"),
        # GET /invoices?term_id=: a term's invoices
        Index("ix_invoices_term", "term_id"),
    )


class InvoiceLine(TenantMixin, db.Model):
    __tablename__ = "invoice_lines"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="RESTRICT"))
    fee_category_id: Mapped[int] = mapped_column(ForeignKey("fee_categories.id", ondelete="RESTRICT"))
    description: Mapped[str] = mapped_column(String(200))
    amount_minor: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        # idempotent generation: a category is billed once per invoice; also an invoice's lines
        UniqueConstraint("invoice_id", "fee_category_id", name="uq_invoice_lines_invoice_category"),
    )


class Payment(TenantMixin, db.Model):
    """Append-only ledger: refunds and corrections are new rows with negative amounts."""

    __tablename__ = "payments"
    __cache_scopes__ = ("student_id",)  # cached balances and statements per student (app/core/caching.py)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    student_id: Mapped[int] = mapped_column(ForeignKey("students.id", ondelete="RESTRICT"))
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id", ondelete="RESTRICT"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    method: Mapped[str] = mapped_column(String(20))
    reference: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20), default="payment")  # payment, refund, reversal
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id", ondelete="RESTRICT"))
    note: Mapped[str | None] = mapped_column(String(500))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # natural key: an external transaction reference is recorded once per institution
        UniqueConstraint("institution_id", "reference", name="uq_payments_institution_reference"),
        # balances and statements: a student's ledger in time order
        Index("ix_payments_student_received", "student_id", "received_at"),
        # invoice status: the payments against an invoice
        Index("ix_payments_invoice_id", "invoice_id", postgresql_where=text("invoice_id IS NOT NULL")),
        # fee collection report: the tenant's payments over a date range
        Index("ix_payments_institution_received", "institution_id", "received_at"),
        # a payment is reversed at most once
        Index(
            "uq_payments_reverses_id",
            "reverses_id",
            unique=True,
            postgresql_where=text("reverses_id IS NOT NULL"),
            sqlite_where=text("reverses_id IS NOT NULL"),
        ),
        CheckConstraint("method IN ('cash','bank','mobile_money','card')", name="method"),
    )


# -- M-Pesa (Daraja): app/finance/mpesa.py ---------------------------------------------------------------

MPESA_ENVIRONMENTS = ("sandbox", "production", "simulator")
STK_STATUSES = ("pending", "paid", "failed", "cancelled", "expired")
C2B_STATUSES = ("applied", "suspense", "assigned", "duplicate")


class MpesaAccount(TenantMixin, TimestampMixin, db.Model):
    """A school's Daraja app and shortcode. The secrets are Fernet tokens (app/core/crypto.py)."""

    __tablename__ = "mpesa_accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    environment: Mapped[str] = mapped_column(String(10))
    shortcode: Mapped[str] = mapped_column(String(20))
    transaction_type: Mapped[str] = mapped_column(String(30), default="CustomerPayBillOnline")
    consumer_key_enc: Mapped[str] = mapped_column(Text)
    consumer_secret_enc: Mapped[str] = mapped_column(Text)
    passkey_enc: Mapped[str] = mapped_column(Text)
    # The secret part of this school's callback paths: Daraja signs nothing, so an unguessable URL
    # (and the optional source allow-list, MPESA_CALLBACK_ALLOWED_IPS) is what it allows.
    callback_token: Mapped[str] = mapped_column(String(64))
    urls_registered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # one Daraja account per school (PUT /mpesa/account upserts it)
        UniqueConstraint("institution_id", name="uq_mpesa_accounts_institution"),
        # a callback's path names its school: the account by token
        UniqueConstraint("callback_token", name="uq_mpesa_accounts_callback_token"),
        CheckConstraint("environment IN ('sandbox','production','simulator')", name="environment"),
    )


class StkRequest(TenantMixin, db.Model):
    """One STK push: pending until its callback (or the STK query of the settle job) says how it ended."""

    __tablename__ = "mpesa_stk_requests"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoices.id", ondelete="RESTRICT"))
    student_id: Mapped[int] = mapped_column(ForeignKey("students.id", ondelete="RESTRICT"))
    phone: Mapped[str] = mapped_column(String(15))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    merchant_request_id: Mapped[str] = mapped_column(String(64))
    checkout_request_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    result_code: Mapped[int | None]
    result_desc: Mapped[str | None] = mapped_column(String(255))
    receipt_number: Mapped[str | None] = mapped_column(String(30))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id", ondelete="RESTRICT"))
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    settled_by: Mapped[str | None] = mapped_column(String(10))  # callback, query
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # exactly once: a callback finds (and locks) its request by CheckoutRequestID
        UniqueConstraint(
            "institution_id", "checkout_request_id", name="uq_mpesa_stk_requests_institution_checkout"
        ),
        # the settle job: requests still pending, oldest first
        Index(
            "ix_mpesa_stk_requests_pending_created",
            "created_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # GET /invoices/{id}/mpesa-requests and the access walk: an invoice's pushes
        Index("ix_mpesa_stk_requests_invoice", "invoice_id"),
        CheckConstraint("status IN ('pending','paid','failed','cancelled','expired')", name="stk_status"),
    )


class C2bPayment(TenantMixin, db.Model):
    """A paybill payment (C2B confirmation), recorded once per TransID. Applied to an invoice, or held in
    suspense until an accountant assigns it."""

    __tablename__ = "mpesa_c2b_payments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    trans_id: Mapped[str] = mapped_column(String(30))
    trans_type: Mapped[str | None] = mapped_column(String(40))
    trans_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    bill_ref: Mapped[str] = mapped_column(String(100))
    msisdn: Mapped[str | None] = mapped_column(String(100))  # Daraja may send it masked or hashed
    payer_name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10))
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoices.id", ondelete="RESTRICT"))
    student_id: Mapped[int | None] = mapped_column(ForeignKey("students.id", ondelete="RESTRICT"))
    payment_id: Mapped[int | None] = mapped_column(ForeignKey("payments.id", ondelete="RESTRICT"))
    assigned_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    assigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # exactly once: one row per M-Pesa transaction, however often the confirmation comes
        UniqueConstraint("institution_id", "trans_id", name="uq_mpesa_c2b_payments_institution_trans"),
        # GET /mpesa/suspense: the school's unassigned payments, in id order
        Index(
            "ix_mpesa_c2b_payments_suspense",
            "institution_id",
            "id",
            postgresql_where=text("status = 'suspense'"),
            sqlite_where=text("status = 'suspense'"),
        ),
        CheckConstraint("status IN ('applied','suspense','assigned','duplicate')", name="c2b_status"),
    )
