"""Fees, invoices and the payment ledger.

Money is integer minor units. The ledger (payments) is append-only: refunds and reversals are new rows
with negative amounts, so a student's balance is always SUM(non-void invoice totals) - SUM(ledger).
An invoice's `paid_minor` is the net of the ledger rows allocated to it (it may exceed the total: the
excess is the student's credit); writes that change it lock the invoice row first.
Services validate everything before writing and never commit: the view (or run_idempotent) does.
"""

from collections import defaultdict
from datetime import date, datetime, timedelta

from flask import g
from sqlalchemy import (
    DateTime,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError

from app.academics.models import Enrolment, SchoolClass, Term
from app.access.rules import scope_students
from app.audit import services as audit
from app.core.errors import Conflict, NotFound, ValidationFailed
from app.core.models import as_utc, utcnow
from app.core.tenancy import current_institution_id
from app.core.upsert import insert_for
from app.extensions import db
from app.finance.models import FeeCategory, Invoice, InvoiceLine, Payment
from app.finance.schemas import money
from app.institutions.calendar import day_start
from app.institutions.models import Institution
from app.people.models import Student

# Clock skew we tolerate on a client-supplied received_at.
FUTURE_SLACK = timedelta(minutes=5)


class ReferenceTaken(Conflict):
    def __init__(self, reference):
        super().__init__(
            f"The reference {reference!r} is already recorded in this institution.",
            errors={"reference": "is already used by another payment"},
        )


# -- shared helpers ----------------------------------------------------------------------------------


def status_of(total: int, paid: int) -> str:
    return "paid" if paid >= total else "partially_paid" if paid > 0 else "open"


def _status_sql(total, paid):
    # The same rule as status_of, for set-based updates.
    return case((paid >= total, "paid"), (paid > 0, "partially_paid"), else_="open")


def institution_currency():
    """The caller's institution's currency, read once per request."""
    iid = current_institution_id()
    key = (iid, g.get("request_id"))
    cached = g.get("_finance_currency")
    if cached is None or cached[0] != key:
        cached = g._finance_currency = (
            key,
            db.session.execute(select(Institution.currency).where(Institution.id == iid)).scalar_one(),
        )
    return cached[1]


def invoice_or_404(invoice_id, principal, *, lock=False):
    stmt = scope_students(
        select(Invoice).where(Invoice.id == invoice_id), principal, column=Invoice.student_id
    )
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    invoice = db.session.execute(stmt).scalar_one_or_none()
    if invoice is None:
        raise NotFound("invoice")
    return invoice


def payment_or_404(payment_id, principal, *, lock=False):
    stmt = scope_students(
        select(Payment).where(Payment.id == payment_id), principal, column=Payment.student_id
    )
    if lock:  # serialises two reversals of the same payment
        stmt = stmt.with_for_update()
    payment = db.session.execute(stmt).scalar_one_or_none()
    if payment is None:
        raise NotFound("payment")
    return payment


# -- fee categories ----------------------------------------------------------------------------------


def _check_category(values: dict, category: FeeCategory | None = None):
    """Body values of a create or an update (then `category` is the current row)."""
    errors = {}
    for field, name in (("name", "name"), ("amount_minor", "amount")):
        if field in values and values[field] is None:
            errors[name] = "must not be null"

    def current(field):
        return values[field] if field in values else getattr(category, field, None)

    term_id, class_id, grade = current("term_id"), current("class_id"), current("grade_level")
    if class_id is not None and grade is not None:
        errors["class_id"] = "give grade_level or class_id, not both"
    if errors:
        raise ValidationFailed(errors)
    year = db.session.execute(select(Term.academic_year_id).where(Term.id == term_id)).scalar_one_or_none()
    if year is None:
        raise ValidationFailed({"term_id": f"no such term ({term_id})"})
    if "class_id" in values and class_id is not None:
        class_year = db.session.execute(
            select(SchoolClass.academic_year_id).where(
                SchoolClass.id == class_id, SchoolClass.deleted_at.is_(None)
            )
        ).scalar_one_or_none()
        if class_year is None:
            raise ValidationFailed({"class_id": f"no such class ({class_id})"})
        if class_year != year:
            raise ValidationFailed({"class_id": "is not a class of the term's academic year"})


def create_category(values: dict) -> FeeCategory:
    _check_category(values)
    category = FeeCategory(**values)
    db.session.add(category)
    db.session.flush()
    audit.record("create", "fee_category", category.id, audit.snapshot(category, values))
    return category


def update_category(category: FeeCategory, values: dict) -> FeeCategory:
    """Lines already billed keep the amount they were billed at; only later generation uses the new one."""
    _check_category(values, category)
    audit.apply_update(category, values, "fee_category")
    return category


def delete_category(category: FeeCategory):
    billed = db.session.execute(select(exists().where(InvoiceLine.fee_category_id == category.id))).scalar()
    if billed:
        raise Conflict("This fee category is billed on invoices; it cannot be deleted.")
    audit.record(
        "delete",
        "fee_category",
        category.id,
        audit.snapshot(category, ("term_id", "name", "amount_minor", "grade_level", "class_id")),
    )
    db.session.delete(category)
    try:
        db.session.flush()
    except IntegrityError:  # billed by a generation that committed after the check above
        db.session.rollback()
        raise Conflict("This fee category is billed on invoices; it cannot be deleted.") from None


# -- invoice generation --------------------------------------------------------------------------------


def _target_classes(term_id, class_id, grade_level):
    both = "give exactly one of class_id or grade_level"
    if (class_id is None) == (grade_level is None):
        raise ValidationFailed({"class_id": both, "grade_level": both})
    term = db.session.execute(select(Term).where(Term.id == term_id)).scalar_one_or_none()
    if term is None:
        raise ValidationFailed({"term_id": f"no such term ({term_id})"})
    if class_id is not None:
        year = db.session.execute(
            select(SchoolClass.academic_year_id).where(
                SchoolClass.id == class_id, SchoolClass.deleted_at.is_(None)
            )
        ).scalar_one_or_none()
        if year is None:
            raise ValidationFailed({"class_id": f"no such class ({class_id})"})
        if year != term.academic_year_id:
            raise ValidationFailed({"class_id": "is not a class of the term's academic year"})
        return [class_id]
    ids = (
        db.session.execute(
            select(SchoolClass.id).where(
                SchoolClass.grade_level == grade_level,
                SchoolClass.academic_year_id == term.academic_year_id,
                SchoolClass.deleted_at.is_(None),
            )
        )
        .scalars()
        .all()
    )
    if not ids:
        raise ValidationFailed(
            {"grade_level": f"no class of grade {grade_level} in the term's academic year"}
        )
    return ids


def generate_invoices(term_id, *, class_id=None, grade_level=None) -> dict:
    """One invoice per currently enrolled student of the classes, one line per applicable fee category.

    Idempotent and additive: INSERT ... ON CONFLICT DO NOTHING on (student, term) and (invoice,
    category), so a re-run creates nothing, and a category added since adds its missing lines. The
    totals (and status, due date) of the touched invoices are then recomputed in one UPDATE.
    """
    class_ids = _target_classes(term_id, class_id, grade_level)
    iid, now = current_institution_id(), utcnow()
    # Core INSERT ... SELECT bypasses the ORM tenant hook, so every table read here names the
    # institution explicitly (the ids were checked in scope above; this is belt and braces).
    # `WHERE true` on the SELECTs: SQLite needs it to tell ON CONFLICT from a join's ON.
    applies = or_(
        and_(FeeCategory.grade_level.is_(None), FeeCategory.class_id.is_(None)),
        FeeCategory.grade_level == SchoolClass.grade_level,
        FeeCategory.class_id == Enrolment.class_id,
    )
    billable = (
        select(
            Enrolment.student_id,
            FeeCategory.id.label("fee_category_id"),
            FeeCategory.name,
            FeeCategory.amount_minor,
        )
        .join(SchoolClass, SchoolClass.id == Enrolment.class_id)
        .join(Student, Student.id == Enrolment.student_id)
        .join(
            FeeCategory,
            and_(
                FeeCategory.term_id == term_id,
                FeeCategory.institution_id == iid,
                FeeCategory.carried_balance.is_(False),  # a rollover's balance lines (app/rollover)
                applies,
            ),
        )
        .where(
            Enrolment.institution_id == iid,
            Enrolment.class_id.in_(class_ids),
            Enrolment.end_date.is_(None),
            Student.deleted_at.is_(None),
        )
    ).subquery("billable")

    students = select(billable.c.student_id).distinct().subquery("students")
    number = literal(f"INV-{term_id}-", String) + cast(students.c.student_id, String)
    stamp = literal(now, DateTime(timezone=True))
    created = db.session.execute(
        insert_for(Invoice)
        .from_select(
            [
                "institution_id",
                "student_id",
                "term_id",
                "number",
                "status",
                "total_minor",
                "paid_minor",
                "created_at",
                "updated_at",
            ],
            select(
                literal(iid),
                students.c.student_id,
                literal(term_id),
                number,
                literal("open"),
                literal(0),
                literal(0),
                stamp,
                stamp,
            ).where(true()),
        )
        .on_conflict_do_nothing()
        .returning(Invoice.id, Invoice.student_id, Invoice.number)
    ).all()

    # Void invoices are closed: never billed again.
    added = db.session.execute(
        insert_for(InvoiceLine)
        .from_select(
            ["institution_id", "invoice_id", "fee_category_id", "description", "amount_minor"],
            select(
                literal(iid), Invoice.id, billable.c.fee_category_id, billable.c.name, billable.c.amount_minor
            )
            .join_from(
                billable,
                Invoice,
                and_(
                    Invoice.student_id == billable.c.student_id,
                    Invoice.term_id == term_id,
                    Invoice.institution_id == iid,
                    Invoice.status != "void",
                ),
            )
            .where(true()),
        )
        .on_conflict_do_nothing()
        .returning(InvoiceLine.invoice_id, InvoiceLine.amount_minor)
    ).all()

    added_by_invoice = defaultdict(int)
    for invoice_id, amount in added:
        added_by_invoice[invoice_id] += amount
    touched = sorted(added_by_invoice)
    after = {}
    if touched:
        sums = (
            select(
                InvoiceLine.invoice_id,
                func.sum(InvoiceLine.amount_minor).label("total"),
                func.min(FeeCategory.due_date).label("due"),
            )
            .join(FeeCategory, FeeCategory.id == InvoiceLine.fee_category_id)
            .where(InvoiceLine.invoice_id.in_(touched))
            .group_by(InvoiceLine.invoice_id)
        ).subquery("sums")
        after = {
            row.id: row
            for row in db.session.execute(
                update(Invoice)
                .where(Invoice.id == sums.c.invoice_id)
                .values(
                    total_minor=sums.c.total,
                    due_date=sums.c.due,
                    updated_at=now,
                    status=_status_sql(sums.c.total, Invoice.paid_minor),
                )
                .returning(Invoice.id, Invoice.total_minor, Invoice.paid_minor, Invoice.status)
                .execution_options(synchronize_session=False)
            )
        }

    created_ids = {row.id for row in created}
    rows = [
        audit.entry(
            "create",
            "invoice",
            row.id,
            {
                "student_id": [None, row.student_id],
                "term_id": [None, term_id],
                "number": [None, row.number],
                "total_minor": [None, after[row.id].total_minor],
                "status": [None, after[row.id].status],
            },
        )
        for row in created
    ]
    for invoice_id in touched:
        if invoice_id in created_ids:
            continue
        new = after[invoice_id]
        before_total = new.total_minor - added_by_invoice[invoice_id]
        changes = {"total_minor": [before_total, new.total_minor]}
        before_status = status_of(before_total, new.paid_minor)
        if before_status != new.status:
            changes["status"] = [before_status, new.status]
        rows.append(audit.entry("update", "invoice", invoice_id, changes))
    audit.record_many(rows)
    return {"created_invoices": len(created), "added_lines": len(added), "invoices": touched}


def void_invoice(invoice: Invoice, reason: str | None) -> Invoice:
    """A void is recorded on the invoice (status, voided_at); nothing is deleted. Only unpaid invoices."""
    if invoice.status == "void":
        raise Conflict("This invoice is already void.")
    if invoice.paid_minor != 0:
        raise ValidationFailed(
            {
                "paid": f"the invoice has {money(invoice.paid_minor)} paid against it; "
                f"reverse those payments before voiding it"
            }
        )
    invoice.status, invoice.voided_at = "void", utcnow()
    changes = audit.diff(invoice, ("status", "voided_at"))
    if reason:
        changes["reason"] = [None, reason]
    audit.record("void", "invoice", invoice.id, changes)
    return invoice


def invoice_lines(invoice_id):
    return (
        db.session.execute(
            select(InvoiceLine).where(InvoiceLine.invoice_id == invoice_id).order_by(InvoiceLine.id)
        )
        .scalars()
        .all()
    )


def invoice_payments(invoice_id):
    return (
        db.session.execute(
            select(Payment).where(Payment.invoice_id == invoice_id).order_by(Payment.received_at, Payment.id)
        )
        .scalars()
        .all()
    )


# -- the ledger ----------------------------------------------------------------------------------------


def _reference_free(reference):
    if db.session.execute(select(Payment.id).where(Payment.reference == reference)).first() is not None:
        raise ReferenceTaken(reference)


def _append(row: Payment):
    """Add a ledger row; a concurrent writer of the same reference or reversal loses with a 409."""
    db.session.add(row)
    try:
        db.session.flush()
    except IntegrityError as exc:
        db.session.rollback()
        text = str(exc.orig)
        if "uq_payments_institution_reference" in text:
            raise ReferenceTaken(row.reference) from None
        if "uq_payments_reverses_id" in text:
            raise Conflict("This payment has already been reversed.") from None
        raise
    audit.record(
        "create",
        "payment",
        row.id,
        audit.snapshot(
            row,
            (
                "student_id",
                "invoice_id",
                "amount_minor",
                "method",
                "reference",
                "kind",
                "reverses_id",
                "received_at",
            ),
        ),
    )
    return row


def _lock_invoice(invoice_id):
    # FOR UPDATE: concurrent payments on one invoice queue here instead of losing each other's paid_minor.
    return db.session.execute(
        select(Invoice)
        .where(Invoice.id == invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _apply(invoice: Invoice, amount_minor: int):
    invoice.paid_minor += amount_minor
    invoice.status = status_of(invoice.total_minor, invoice.paid_minor)
    audit.record("update", "invoice", invoice.id, audit.diff(invoice, ("paid_minor", "status")))


def _received_at(value: datetime | None, now: datetime) -> datetime:
    if value is None:
        return now
    value = as_utc(value)  # documented: a time without an offset is UTC; SQLite keeps no offset
    if value > now + FUTURE_SLACK:
        raise ValidationFailed({"received_at": "must not be in the future"})
    return value


def record_payment(values: dict, principal) -> tuple[Payment, Invoice | None]:
    student_id, invoice_id = values["student_id"], values.get("invoice_id")
    found = db.session.execute(
        select(Student.id).where(Student.id == student_id, Student.deleted_at.is_(None))
    ).scalar_one_or_none()
    if found is None:
        raise ValidationFailed({"student_id": f"no such student ({student_id})"})
    invoice = None
    if invoice_id is not None:
        invoice = _lock_invoice(invoice_id)
        if invoice is None:
            raise ValidationFailed({"invoice_id": f"no such invoice ({invoice_id})"})
        if invoice.student_id != student_id:
            raise ValidationFailed({"invoice_id": "belongs to another student"})
        if invoice.status == "void":
            raise ValidationFailed({"invoice_id": "is void; payments cannot be allocated to it"})
    now = utcnow()
    received_at = _received_at(values.get("received_at"), now)
    _reference_free(values["reference"])
    payment = _append(
        Payment(
            student_id=student_id,
            invoice_id=invoice_id,
            amount_minor=values["amount"],
            method=values["method"],
            reference=values["reference"],
            kind="payment",
            note=values.get("note"),
            received_at=received_at,
            recorded_by_id=principal.user_id,
            created_at=now,
        )
    )
    if invoice is not None:
        _apply(invoice, payment.amount_minor)
    return payment, invoice


def payment_by_reference(reference) -> Payment | None:
    return db.session.execute(select(Payment).where(Payment.reference == reference)).scalar_one_or_none()


def record_received(
    student_id, invoice_id, amount_minor, reference, received_at=None, *, note=None, recorded_by_id=None
) -> tuple[Payment, Invoice | None]:
    """Money a provider reports as received (M-Pesa, app/finance/mpesa.py): the same ledger row, audit
    rows and invoice update as record_payment, without a caller's body to validate. The caller has
    checked the reference is free (payment_by_reference) under its own lock."""
    invoice = _lock_invoice(invoice_id) if invoice_id is not None else None
    now = utcnow()
    received = min(as_utc(received_at), now) if received_at is not None else now
    payment = _append(
        Payment(
            student_id=student_id,
            invoice_id=invoice_id,
            amount_minor=amount_minor,
            method="mobile_money",
            reference=reference,
            kind="payment",
            note=note,
            received_at=received,
            recorded_by_id=recorded_by_id,
            created_at=now,
        )
    )
    if invoice is not None:
        _apply(invoice, payment.amount_minor)
    return payment, invoice


def reverse_payment(payment: Payment, reason: str, reference: str | None, principal):
    """Undo a ledger row with its negative twin; the original stays. Each row is reversed at most once."""
    if payment.kind == "reversal":
        raise Conflict("This entry is itself a reversal; it cannot be reversed.")
    done = db.session.execute(
        select(Payment.id).where(Payment.reverses_id == payment.id)
    ).scalar_one_or_none()
    if done is not None:
        raise Conflict(f"This payment has already been reversed (by entry {done}).")
    reference = reference or f"REV-{payment.reference}"[:100]
    _reference_free(reference)
    invoice = _lock_invoice(payment.invoice_id) if payment.invoice_id is not None else None
    now = utcnow()
    reversal = _append(
        Payment(
            student_id=payment.student_id,
            invoice_id=payment.invoice_id,
            amount_minor=-payment.amount_minor,
            method=payment.method,
            reference=reference,
            kind="reversal",
            reverses_id=payment.id,
            note=reason,
            received_at=now,
            recorded_by_id=principal.user_id,
            created_at=now,
        )
    )
    audit.record(
        "reverse", "payment", payment.id, {"reversed_by_id": [None, reversal.id], "reason": [None, reason]}
    )
    if invoice is not None:
        _apply(invoice, reversal.amount_minor)
    return reversal, invoice


def refund_credit(student: Student, values: dict, principal) -> Payment:
    """Pay out (part of) a student's credit: a negative 'refund' row, never more than the credit."""
    # FOR NO KEY UPDATE on the student serialises a student's refunds (two cannot spend the same credit)
    # without blocking inserts that merely reference the student.
    db.session.execute(select(Student.id).where(Student.id == student.id).with_for_update(key_share=True))
    credit = balance_minor(student.id)["credit"]
    if values["amount"] > credit:
        raise ValidationFailed({"amount": f"exceeds the student's available credit of {money(credit)}"})
    _reference_free(values["reference"])
    now = utcnow()
    return _append(
        Payment(
            student_id=student.id,
            invoice_id=None,
            amount_minor=-values["amount"],
            method=values["method"],
            reference=values["reference"],
            kind="refund",
            note=values.get("note"),
            received_at=now,
            recorded_by_id=principal.user_id,
            created_at=now,
        )
    )


# -- balance and statement -------------------------------------------------------------------------------


def balance_minor(student_id) -> dict:
    invoiced = (
        select(func.coalesce(func.sum(Invoice.total_minor), 0))
        .where(Invoice.student_id == student_id, Invoice.status != "void")
        .scalar_subquery()
    )
    paid = (
        select(func.coalesce(func.sum(Payment.amount_minor), 0))
        .where(Payment.student_id == student_id)
        .scalar_subquery()
    )
    invoiced, paid = (int(v) for v in db.session.execute(select(invoiced, paid)).one())
    balance = invoiced - paid
    return {"invoiced": invoiced, "paid": paid, "balance": balance, "credit": max(0, -balance)}


def balance(student_id) -> dict:
    b = balance_minor(student_id)
    return {
        "student_id": student_id,
        "currency": institution_currency(),
        **{k: money(v) for k, v in b.items()},
    }


_DESCRIBE = {
    "invoice": lambda r: f"Invoice {r.reference}",
    "payment": lambda r: f"Payment by {r.method.replace('_', ' ')}",
    "refund": lambda r: f"Refund by {r.method.replace('_', ' ')}",
    "reversal": lambda r: f"Reversal: {r.note}" if r.note else "Reversal",
}


def statement(student_id, start: date | None, end: date | None) -> dict:
    """Invoices (debits) and ledger rows in time order with a running balance, between local dates
    `start` and `end` inclusive. opening + debits - credits == closing, to the cent."""
    if start and end and end < start:
        raise ValidationFailed({"to": "must not be before from"})
    # One signed stream: + raises what the student owes (invoices, refunds, reversed payments),
    # - lowers it (payments). Invoices sort before payments at the same instant.
    ledger = union_all(
        select(
            literal("invoice", String).label("type"),
            Invoice.id,
            Invoice.created_at.label("at"),
            literal(0).label("ord"),
            Invoice.number.label("reference"),
            Invoice.id.label("invoice_id"),
            Invoice.total_minor.label("signed"),
            null().label("method"),
            null().label("note"),
        ).where(Invoice.student_id == student_id, Invoice.status != "void"),
        select(
            Payment.kind,
            Payment.id,
            Payment.received_at,
            literal(1),
            Payment.reference,
            Payment.invoice_id,
            -Payment.amount_minor,
            Payment.method,
            Payment.note,
        ).where(Payment.student_id == student_id),
    ).subquery("ledger")
    lo = day_start(start) if start else None
    hi = day_start(end + timedelta(days=1)) if end else None
    opening = 0
    if lo is not None:
        opening = int(
            db.session.execute(
                select(func.coalesce(func.sum(ledger.c.signed), 0)).where(ledger.c.at < lo)
            ).scalar_one()
        )
    period = select(ledger).order_by(ledger.c.at, ledger.c.ord, ledger.c.id)
    if lo is not None:
        period = period.where(ledger.c.at >= lo)
    if hi is not None:
        period = period.where(ledger.c.at < hi)
    running, debits, credits, entries = opening, 0, 0, []
    for r in db.session.execute(period):
        running += r.signed
        debit, credit = max(r.signed, 0), max(-r.signed, 0)
        debits, credits = debits + debit, credits + credit
        entries.append(
            {
                "date": r.at,
                "type": r.type,
                "id": r.id,
                "reference": r.reference,
                "description": _DESCRIBE[r.type](r),
                "invoice_id": r.invoice_id,
                "debit": money(debit),
                "credit": money(credit),
                "balance": money(running),
            }
        )
    return {
        "student_id": student_id,
        "currency": institution_currency(),
        "from": start,
        "to": end,
        "opening_balance": money(opening),
        "total_debits": money(debits),
        "total_credits": money(credits),
        "closing_balance": money(running),
        "entries": entries,
    }
