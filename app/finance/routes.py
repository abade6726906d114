"""Fees, invoices, payments, balances and statements. Admins and accountants write; guardians and
students read their own children's / their own; teachers have no access to finance (403)."""

from datetime import timedelta

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select

from app.access.rules import STUDENTS, scope_students, student_in_scope_or_404
from app.core.admission import cached
from app.core.auth import SCHOOL, roles
from app.core.caching import LONG, scoped
from app.core.crud import CONFLICTS, Resource, commit_or_conflict
from app.core.idempotency import HEADER, run_idempotent
from app.core.openapi import doc
from app.core.pagination import Filter, ListSpec, list_response
from app.core.queryargs import DATE, Param, QueryArgs, one_of
from app.core.schemas import dump, fields_of, parse_body
from app.extensions import db
from app.finance import services
from app.finance.models import INVOICE_STATUSES, PAYMENT_METHODS, FeeCategory, Invoice, Payment
from app.finance.schemas import (
    BalanceOut,
    FeeCategoryCreate,
    FeeCategoryOut,
    FeeCategoryUpdate,
    GenerateIn,
    GenerateOut,
    InvoiceDetailOut,
    InvoiceOut,
    PaymentIn,
    PaymentOut,
    PaymentReceiptOut,
    RefundIn,
    ReverseIn,
    StatementOut,
    VoidIn,
    money,
)
from app.institutions.calendar import day_start

bp = Blueprint("finance", __name__)

WRITE = ("admin", "accountant")
READ = ("admin", "accountant", "guardian", "student")

CONFLICTS.update(
    {
        "uq_invoices_student_term": "The student already has an invoice for this term.",
        "uq_invoices_institution_number": "An invoice with this number already exists.",
        "uq_payments_institution_reference": "A payment with this reference already exists.",
        "uq_payments_reverses_id": "This payment has already been reversed.",
    }
)


# -- serialisation -----------------------------------------------------------------------------------


def category_out(c):
    return {
        "id": c.id,
        "term_id": c.term_id,
        "name": c.name,
        "amount": money(c.amount_minor),
        "grade_level": c.grade_level,
        "class_id": c.class_id,
        "due_date": c.due_date,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    }


def invoice_out(i):
    return {
        "id": i.id,
        "number": i.number,
        "student_id": i.student_id,
        "term_id": i.term_id,
        "status": i.status,
        "total": money(i.total_minor),
        "paid": money(i.paid_minor),
        "outstanding": money(max(i.total_minor - i.paid_minor, 0) if i.status != "void" else 0),
        "due_date": i.due_date,
        "voided_at": i.voided_at,
        "created_at": i.created_at,
        "updated_at": i.updated_at,
    }


_PAYMENT_FIELDS = tuple(f for f in fields_of(PaymentOut) if f != "amount")


def payment_out(p):
    return {**dump(p, _PAYMENT_FIELDS), "amount": money(p.amount_minor)}


def receipt_out(payment, invoice):
    return {
        **payment_out(payment),
        "invoice": invoice_out(invoice) if invoice is not None else None,
        "balance": services.balance(payment.student_id),
    }


# -- fee categories ----------------------------------------------------------------------------------

fee_categories = Resource(
    "fee category",
    "/fee-categories",
    FeeCategory,
    FeeCategoryOut,
    ListSpec(
        FeeCategory.id,
        filters={
            "term_id": FeeCategory.term_id,
            "grade_level": FeeCategory.grade_level,
            "class_id": FeeCategory.class_id,
        },
        sorts={"name": FeeCategory.name},
    ),
    read_roles=READ,
    write_roles=WRITE,
    serialize=category_out,
).register(bp)


@bp.post("/fee-categories")
@roles(*WRITE, reach=SCHOOL)
@doc(
    "Create a fee category (no grade_level/class_id: billed to everyone)",
    body=FeeCategoryCreate,
    out=FeeCategoryOut,
    status=201,
    tags=["fee-categories"],
)
def create_fee_category():
    category = services.create_category(parse_body(FeeCategoryCreate).model_dump())
    commit_or_conflict()
    return jsonify(category_out(category)), 201


@bp.patch("/fee-categories/<int:ident>")
@roles(*WRITE, reach=SCHOOL)
@doc(
    "Change a fee category (lines already billed keep their amount)",
    body=FeeCategoryUpdate,
    out=FeeCategoryOut,
    tags=["fee-categories"],
)
def update_fee_category(ident):
    category = fee_categories.get_or_404(ident)
    services.update_category(category, parse_body(FeeCategoryUpdate).model_dump(exclude_unset=True))
    commit_or_conflict()
    return jsonify(category_out(category))


@bp.delete("/fee-categories/<int:ident>")
@roles(*WRITE, reach=SCHOOL)
@doc("Delete a fee category that has never been billed", status=204, tags=["fee-categories"])
def delete_fee_category(ident):
    services.delete_category(fee_categories.get_or_404(ident))
    commit_or_conflict()
    return "", 204


# -- invoices ------------------------------------------------------------------------------------------


def _one_of(column, allowed):
    return Filter(one_of(*allowed), lambda stmt, value: stmt.where(column == value))


INVOICE_SPEC = ListSpec(
    Invoice.id,
    filters={
        "student_id": Invoice.student_id,
        "term_id": Invoice.term_id,
        "status": _one_of(Invoice.status, INVOICE_STATUSES),
    },
    sorts={"created_at": Invoice.created_at, "number": Invoice.number},
)


@bp.get("/invoices")
@roles(*READ, reach=STUDENTS)
@doc(
    "List invoices",
    out=InvoiceOut,
    many=True,
    tags=["invoices"],
    query=INVOICE_SPEC,
)
def list_invoices():
    stmt = scope_students(select(Invoice), g.principal, column=Invoice.student_id)
    return list_response(db.session, stmt, INVOICE_SPEC, invoice_out)


@bp.get("/invoices/<int:ident>")
@roles(*READ, reach=STUDENTS)
@doc("An invoice with its lines and payments", out=InvoiceDetailOut, tags=["invoices"])
def get_invoice(ident):
    invoice = services.invoice_or_404(ident, g.principal)
    lines = [
        {
            "id": line.id,
            "fee_category_id": line.fee_category_id,
            "description": line.description,
            "amount": money(line.amount_minor),
        }
        for line in services.invoice_lines(invoice.id)
    ]
    payments = [payment_out(p) for p in services.invoice_payments(invoice.id)]
    return jsonify({**invoice_out(invoice), "lines": lines, "payments": payments})


@bp.post("/invoices/generate")
@roles(*WRITE, reach=SCHOOL)
@doc(
    "Bill a class (or a grade) for a term: one invoice per enrolled student; re-runs only add what is "
    "missing",
    body=GenerateIn,
    out=GenerateOut,
    tags=["invoices"],
)
def generate_invoices():
    body = parse_body(GenerateIn)
    result = services.generate_invoices(body.term_id, class_id=body.class_id, grade_level=body.grade_level)
    commit_or_conflict()
    return jsonify(result)


@bp.post("/invoices/<int:ident>/void")
@roles(*WRITE, reach=STUDENTS)
@doc(
    "Void an invoice nothing has been paid against (recorded, never deleted)",
    body=VoidIn,
    body_required=False,
    rules={"paid": "nothing paid against the invoice"},
    out=InvoiceOut,
    tags=["invoices"],
)
def void_invoice(ident):
    invoice = services.invoice_or_404(ident, g.principal, lock=True)
    body = parse_body(VoidIn) if request.content_length else VoidIn()
    services.void_invoice(invoice, body.reason)
    commit_or_conflict()
    return jsonify(invoice_out(invoice))


# -- payments ------------------------------------------------------------------------------------------


def _received_between(bound):
    def apply(stmt, day):
        if bound == "from":
            return stmt.where(Payment.received_at >= day_start(day))
        return stmt.where(Payment.received_at < day_start(day + timedelta(days=1)))

    return Filter(DATE, apply)


PAYMENT_SPEC = ListSpec(
    Payment.id,
    filters={
        "student_id": Payment.student_id,
        "invoice_id": Payment.invoice_id,
        "method": _one_of(Payment.method, PAYMENT_METHODS),
        "kind": _one_of(Payment.kind, ("payment", "refund", "reversal")),
        "from": _received_between("from"),
        "to": _received_between("to"),
    },
    sorts={"received_at": Payment.received_at},
)


@bp.get("/payments")
@roles(*READ, reach=STUDENTS)
@doc(
    "List ledger entries (payments, refunds, reversals); from/to are local dates, inclusive",
    out=PaymentOut,
    many=True,
    tags=["payments"],
    query=PAYMENT_SPEC,
)
def list_payments():
    stmt = scope_students(select(Payment), g.principal, column=Payment.student_id)
    return list_response(db.session, stmt, PAYMENT_SPEC, payment_out)


@bp.get("/payments/<int:ident>")
@roles(*READ, reach=STUDENTS)
@doc("One ledger entry", out=PaymentOut, tags=["payments"])
def get_payment(ident):
    return jsonify(payment_out(services.payment_or_404(ident, g.principal)))


@bp.post("/payments")
@roles(*WRITE, reach=STUDENTS)
@doc(
    "Record a payment (Idempotency-Key honoured: a retry replays the first answer)",
    body=PaymentIn,
    out=PaymentReceiptOut,
    status=201,
    tags=["payments"],
    idempotent=True,
    description="Without invoice_id the money is the student's credit. Paying more than an invoice's "
    "outstanding amount marks it paid and leaves the excess as credit.",
)
def create_payment():
    body = parse_body(PaymentIn)
    payload = body.model_dump(mode="json")

    def write():
        payment, invoice = services.record_payment(body.model_dump(), g.principal)
        return receipt_out(payment, invoice), 201

    try:
        return run_idempotent("payments.create", payload, write)
    except services.ReferenceTaken:
        if request.headers.get(HEADER) is None:
            raise
        # A concurrent retry with this key may have just committed this very payment: replay its answer
        # (a reference used by some other request still ends in this 409).
        db.session.rollback()
        return run_idempotent("payments.create", payload, write)


@bp.post("/payments/<int:ident>/reverse")
@roles(*WRITE, reach=STUDENTS)
@doc(
    "Reverse a payment or refund: a new negative entry undoes it (once)",
    body=ReverseIn,
    out=PaymentReceiptOut,
    status=201,
    tags=["payments"],
)
def reverse_payment(ident):
    payment = services.payment_or_404(ident, g.principal, lock=True)
    body = parse_body(ReverseIn)
    reversal, invoice = services.reverse_payment(payment, body.reason, body.reference, g.principal)
    commit_or_conflict()
    return jsonify(receipt_out(reversal, invoice)), 201


# -- per student -----------------------------------------------------------------------------------------


@bp.post("/students/<int:ident>/refunds")
@roles(*WRITE, reach=STUDENTS)
@doc(
    "Refund (part of) a student's credit", body=RefundIn, out=PaymentReceiptOut, status=201, tags=["students"]
)
def refund(ident):
    student = student_in_scope_or_404(ident, g.principal)
    body = parse_body(RefundIn)
    row = services.refund_credit(student, body.model_dump(), g.principal)
    commit_or_conflict()
    return jsonify(receipt_out(row, None)), 201


NO_ARGS = QueryArgs()

# A student's balance and statement read that student's invoices and payments only (a payment for another
# student leaves them cached), the currency and time zone (institutions, bumped by PATCH /institution),
# and the tables the reach check reads (app/core/caching.py).
STUDENT_FINANCE = (
    scoped("invoices", "student_id"),
    scoped("payments", "student_id"),
    "institutions",
    "students",
    "enrolments",
    "classes",
    "class_subjects",
    "student_guardians",
)
# Every table they read is versioned above: the TTL bounds memory, not staleness (app/core/caching.py).
FINANCE_TTL = LONG


@bp.get("/students/<int:ident>/balance")
@roles(*READ, reach=STUDENTS)
@cached(*STUDENT_FINANCE, ttl=FINANCE_TTL)
@doc("A student's fee balance (negative balance = credit)", out=BalanceOut, tags=["students"], query=NO_ARGS)
def student_balance(ident):
    student = student_in_scope_or_404(ident, g.principal)
    NO_ARGS.check()
    return jsonify(services.balance(student.id))


STATEMENT_ARGS = QueryArgs(
    Param("from", DATE, description="First local date (inclusive)."),
    Param("to", DATE, description="Last local date (inclusive).", rule="not before from"),
)


@bp.get("/students/<int:ident>/statement")
@roles(*READ, reach=STUDENTS)
@cached(*STUDENT_FINANCE, ttl=FINANCE_TTL)
@doc(
    "A student's statement: invoices and ledger entries with a running balance",
    out=StatementOut,
    tags=["students"],
    query=STATEMENT_ARGS,
)
def student_statement(ident):
    student = student_in_scope_or_404(ident, g.principal)
    args = STATEMENT_ARGS.parse()
    return jsonify(services.statement(student.id, args["from"], args["to"]))
