"""Fees, invoices, the payment ledger, balances and statements.

Most tests bill a fresh term (so the seeded invoices of the current term stay out of the sums) and a
fresh pupil enrolled in the demo class, whose figures are computed by hand below:
  Tuition 1500.00 (everyone) + Science lab 250.50 (grade 7) + Class trip 99.99 (the demo class) = 1850.49
"""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from app.academics.models import Enrolment, SchoolClass
from app.audit.models import AuditEntry
from app.extensions import db
from app.finance.models import Invoice, InvoiceLine, Payment
from app.finance.schemas import InvoiceDetailOut, PaymentReceiptOut, StatementOut
from tests.conftest import assert_problem

PUPIL_TOTAL = "1850.49"


def scalar(stmt):
    # Test-side reads see every institution: the tenant hook is for requests.
    return db.session.execute(stmt, execution_options={"skip_tenant": True}).scalar()


def enrolled_in(class_ids):
    return scalar(
        select(func.count())
        .select_from(Enrolment)
        .where(Enrolment.class_id.in_(class_ids), Enrolment.end_date.is_(None))
    )


@pytest.fixture
def term(admin, demo):
    today = date.today()
    resp = admin.post(
        "/terms",
        json={
            "academic_year_id": demo["demo_academic_year_id"],
            "name": "Finance term",
            "start_date": str(today - timedelta(days=7)),
            "end_date": str(today + timedelta(days=60)),
        },
    )
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


@pytest.fixture
def pupil(admin, demo):
    resp = admin.post(
        "/students",
        json={
            "admission_number": "FIN-0001",
            "first_name": "Wanjiru",
            "last_name": "Kamau",
            "grade_level": 7,
        },
    )
    assert resp.status_code == 201, resp.get_json()
    sid = resp.get_json()["id"]
    resp = admin.post(
        "/enrolments",
        json={"student_id": sid, "class_id": demo["demo_class_id"], "start_date": str(date.today())},
    )
    assert resp.status_code == 201, resp.get_json()
    return sid


@pytest.fixture
def categories(accountant, term, demo):
    made = {}
    for name, amount, scope in [
        ("Tuition", "1500.00", {}),
        ("Science lab", "250.5", {"grade_level": 7}),
        ("Class trip", "99.99", {"class_id": demo["demo_class_id"]}),
        ("Grade 3 books", "1000", {"grade_level": 3}),
    ]:
        resp = accountant.post(
            "/fee-categories",
            json={
                "term_id": term,
                "name": name,
                "amount": amount,
                "due_date": str(date.today() + timedelta(days=30)),
                **scope,
            },
        )
        assert resp.status_code == 201, resp.get_json()
        made[name] = resp.get_json()
    return made


@pytest.fixture
def billed(accountant, term, categories, pupil, demo):
    """The demo class billed for the fresh term; returns the pupil's invoice."""
    resp = accountant.post("/invoices/generate", json={"term_id": term, "class_id": demo["demo_class_id"]})
    assert resp.status_code == 200, resp.get_json()
    invoices = accountant.get(f"/invoices?student_id={pupil}&term_id={term}").get_json()["data"]
    assert len(invoices) == 1
    return invoices[0]


def pay(api, student_id, amount, reference, invoice_id=None, **extra):
    body = {
        "student_id": student_id,
        "amount": amount,
        "method": "mobile_money",
        "reference": reference,
        **extra,
    }
    if invoice_id is not None:
        body["invoice_id"] = invoice_id
    return api.post("/payments", json=body)


def payments_of(student_id):
    return scalar(select(func.count()).select_from(Payment).where(Payment.student_id == student_id))


# -- fee categories ----------------------------------------------------------------------------------


def test_fee_categories_are_crud_with_decimal_string_amounts(accountant, admin, term, demo):
    resp = accountant.post("/fee-categories", json={"term_id": term, "name": "Tuition", "amount": "1500"})
    assert resp.status_code == 201
    cat = resp.get_json()
    assert cat["amount"] == "1500.00" and cat["grade_level"] is None and cat["class_id"] is None
    changed = accountant.patch(f"/fee-categories/{cat['id']}", json={"amount": "1600.5", "grade_level": 4})
    assert changed.status_code == 200 and changed.get_json()["amount"] == "1600.50"
    listed = admin.get(f"/fee-categories?term_id={term}").get_json()["data"]
    assert [(c["id"], c["amount"], c["grade_level"]) for c in listed] == [(cat["id"], "1600.50", 4)]
    assert accountant.delete(f"/fee-categories/{cat['id']}").status_code == 204
    assert_problem(accountant.get(f"/fee-categories/{cat['id']}"), 404)
    audit = scalar(
        select(func.count())
        .select_from(AuditEntry)
        .where(AuditEntry.entity_type == "fee_category", AuditEntry.entity_id == str(cat["id"]))
    )
    assert audit == 3


@pytest.mark.parametrize(
    "body, field",
    [
        ({"amount": "12.345"}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": 12.5}, "amount"),
        ({"amount_minor": 100}, "amount_minor"),
        ({"name": ""}, "name"),
        ({"grade_level": 7, "class_id": "CLASS"}, "class_id"),
        ({"term_id": 999999999}, "term_id"),
    ],
)
def test_fee_category_bad_input_is_422_and_nothing_is_written(accountant, term, demo, body, field):
    if body.get("class_id") == "CLASS":
        body = {**body, "class_id": demo["demo_class_id"]}
    full = {"term_id": term, "name": "Tuition", "amount": "10.00", **body}
    assert_problem(accountant.post("/fee-categories", json=full), 422, field)
    assert accountant.get(f"/fee-categories?term_id={term}").get_json()["data"] == []


def test_fee_category_of_another_institution_or_year_is_rejected(accountant, hillside_admin, term, demo):
    assert_problem(
        hillside_admin.post("/fee-categories", json={"term_id": term, "name": "X", "amount": "1"}),
        422,
        "term_id",
    )
    hill_class = demo["hillside_class_id"]
    assert_problem(
        accountant.post(
            "/fee-categories", json={"term_id": term, "name": "X", "amount": "1", "class_id": hill_class}
        ),
        422,
        "class_id",
    )
    assert_problem(accountant.patch(f"/fee-categories/{hill_class}", json={"name": "Y"}), 404)


def test_a_billed_fee_category_cannot_be_deleted(accountant, billed, categories):
    body = assert_problem(accountant.delete(f"/fee-categories/{categories['Tuition']['id']}"), 409)
    assert "billed" in body["detail"]
    # an unbilled one (nobody in grade 3 was billed) can go
    assert accountant.delete(f"/fee-categories/{categories['Grade 3 books']['id']}").status_code == 204


def test_changing_a_fee_keeps_what_was_already_billed(accountant, term, billed, categories, demo):
    tuition = categories["Tuition"]["id"]
    assert accountant.patch(f"/fee-categories/{tuition}", json={"amount": "1600.00"}).status_code == 200
    again = accountant.post("/invoices/generate", json={"term_id": term, "class_id": demo["demo_class_id"]})
    assert again.get_json()["added_lines"] == 0
    assert accountant.get(f"/invoices/{billed['id']}").get_json()["total"] == PUPIL_TOTAL
    assert_problem(accountant.patch(f"/fee-categories/{tuition}", json={"amount": None}), 422, "amount")
    assert_problem(accountant.patch(f"/fee-categories/{tuition}", json={"term_id": term}), 422, "term_id")


def test_who_may_touch_fee_categories(teacher, guardian, student, term, categories):
    assert_problem(teacher.get("/fee-categories"), 403)
    assert_problem(guardian.post("/fee-categories", json={"term_id": term, "name": "X", "amount": "1"}), 403)
    assert student.get(f"/fee-categories?term_id={term}").status_code == 200


# -- invoice generation ----------------------------------------------------------------------------------


def test_generate_bills_each_enrolled_student_once_and_a_rerun_creates_nothing(
    accountant, term, categories, pupil, demo
):
    n = enrolled_in([demo["demo_class_id"]])
    body = {"term_id": term, "class_id": demo["demo_class_id"]}
    first = accountant.post("/invoices/generate", json=body).get_json()
    # grade 7 demo class: tuition, lab and trip apply, grade 3 books do not
    assert first["created_invoices"] == n and first["added_lines"] == 3 * n and len(first["invoices"]) == n
    second = accountant.post("/invoices/generate", json=body).get_json()
    assert second == {"created_invoices": 0, "added_lines": 0, "invoices": []}
    assert scalar(select(func.count()).select_from(Invoice).where(Invoice.term_id == term)) == n
    assert (
        scalar(select(func.count()).select_from(InvoiceLine).join(Invoice).where(Invoice.term_id == term))
        == 3 * n
    )

    inv = accountant.get(f"/invoices?student_id={pupil}&term_id={term}").get_json()["data"][0]
    assert inv["total"] == PUPIL_TOTAL and inv["paid"] == "0.00" and inv["outstanding"] == PUPIL_TOTAL
    assert inv["status"] == "open" and inv["number"] == f"INV-{term}-{pupil}"
    assert inv["due_date"] == str(date.today() + timedelta(days=30))
    detail = accountant.get(f"/invoices/{inv['id']}").get_json()
    assert sorted((line["description"], line["amount"]) for line in detail["lines"]) == [
        ("Class trip", "99.99"),
        ("Science lab", "250.50"),
        ("Tuition", "1500.00"),
    ]
    assert set(detail) == set(InvoiceDetailOut.model_fields)
    created = scalar(
        select(func.count())
        .select_from(AuditEntry)
        .where(
            AuditEntry.entity_type == "invoice",
            AuditEntry.action == "create",
            AuditEntry.entity_id.in_([str(i) for i in first["invoices"]]),
        )
    )
    assert created == n


def test_a_category_added_later_is_billed_by_a_rerun(accountant, term, billed, pupil, demo):
    assert pay(accountant, pupil, PUPIL_TOTAL, "FULL-1", billed["id"]).status_code == 201
    assert accountant.get(f"/invoices/{billed['id']}").get_json()["status"] == "paid"
    someone = next(
        i
        for i in accountant.get(f"/invoices?term_id={term}&limit=200").get_json()["data"]
        if i["student_id"] != pupil
    )
    assert accountant.post(f"/invoices/{someone['id']}/void", json={"reason": "left"}).status_code == 200
    resp = accountant.post("/fee-categories", json={"term_id": term, "name": "Exam fee", "amount": "100.00"})
    assert resp.status_code == 201

    n = enrolled_in([demo["demo_class_id"]])
    again = accountant.post(
        "/invoices/generate", json={"term_id": term, "class_id": demo["demo_class_id"]}
    ).get_json()
    assert again["created_invoices"] == 0 and again["added_lines"] == n - 1  # not the void invoice
    assert someone["id"] not in again["invoices"] and billed["id"] in again["invoices"]
    mine = accountant.get(f"/invoices/{billed['id']}").get_json()
    assert mine["total"] == "1950.49" and mine["paid"] == PUPIL_TOTAL and mine["outstanding"] == "100.00"
    assert mine["status"] == "partially_paid" and len(mine["lines"]) == 4
    void = accountant.get(f"/invoices/{someone['id']}").get_json()
    assert void["status"] == "void" and void["total"] == someone["total"] and len(void["lines"]) == 3
    change = db.session.execute(
        select(AuditEntry.changes)
        .where(
            AuditEntry.entity_type == "invoice",
            AuditEntry.entity_id == str(billed["id"]),
            AuditEntry.action == "update",
        )
        .order_by(AuditEntry.id.desc())
        .limit(1),
        execution_options={"skip_tenant": True},
    ).scalar()
    assert change == {"total_minor": [185049, 195049], "status": ["paid", "partially_paid"]}


def test_generate_by_grade_level_covers_every_class_of_that_grade(accountant, term, categories, demo):
    classes = (
        db.session.execute(
            select(SchoolClass.id).where(
                SchoolClass.institution_id == demo["demo_institution_id"], SchoolClass.grade_level == 3
            ),
            execution_options={"skip_tenant": True},
        )
        .scalars()
        .all()
    )
    assert len(classes) == 2
    n = enrolled_in(classes)
    result = accountant.post("/invoices/generate", json={"term_id": term, "grade_level": 3}).get_json()
    # grade 3: tuition and the grade 3 books, not the grade 7 lab nor the demo class trip
    assert result["created_invoices"] == n and result["added_lines"] == 2 * n
    one = accountant.get(f"/invoices/{result['invoices'][0]}").get_json()
    assert one["total"] == "2500.00"


@pytest.mark.parametrize(
    "body, fields",
    [
        ({}, ("class_id", "grade_level")),
        ({"class_id": "DEMO", "grade_level": 7}, ("class_id", "grade_level")),
        ({"grade_level": 19}, ("grade_level",)),
        ({"class_id": 999999999}, ("class_id",)),
        ({"class_id": "HILL"}, ("class_id",)),
        ({"class_id": "DEMO", "term_id": "HILLTERM"}, ("term_id",)),
    ],
)
def test_generate_bad_input(accountant, term, categories, demo, body, fields):
    swap = {
        "DEMO": demo["demo_class_id"],
        "HILL": demo["hillside_class_id"],
        "HILLTERM": demo["hillside_current_term_id"],
    }
    body = {"term_id": term, **{k: swap.get(v, v) for k, v in body.items()}}
    assert_problem(accountant.post("/invoices/generate", json=body), 422, *fields)
    assert scalar(select(func.count()).select_from(Invoice).where(Invoice.term_id == term)) == 0


def test_generate_rejects_a_class_of_another_academic_year(admin, accountant, term, categories, demo):
    year = admin.post(
        "/academic-years", json={"name": "2099/00", "start_date": "2099-01-01", "end_date": "2099-12-31"}
    ).get_json()
    klass = admin.post(
        "/classes",
        json={"academic_year_id": year["id"], "name": "Future 7A", "grade_level": 7, "section": "A"},
    ).get_json()
    assert_problem(
        accountant.post("/invoices/generate", json={"term_id": term, "class_id": klass["id"]}),
        422,
        "class_id",
    )


# -- invoices: reads and voids -------------------------------------------------------------------------------


def test_void_only_unpaid_invoices_and_nothing_is_ever_deleted(accountant, admin, billed, pupil):
    paid = pay(accountant, pupil, "10.00", "VOID-1", billed["id"]).get_json()
    body = assert_problem(accountant.post(f"/invoices/{billed['id']}/void", json={}), 422, "paid")
    assert "10.00" in body["errors"]["paid"]
    assert (
        accountant.post(f"/payments/{paid['id']}/reverse", json={"reason": "wrong invoice"}).status_code
        == 201
    )
    voided = accountant.post(f"/invoices/{billed['id']}/void", json={"reason": "withdrawn"})
    assert voided.status_code == 200
    assert voided.get_json()["status"] == "void" and voided.get_json()["voided_at"]
    assert voided.get_json()["outstanding"] == "0.00"
    assert_problem(accountant.post(f"/invoices/{billed['id']}/void"), 409)
    assert_problem(pay(accountant, pupil, "5.00", "VOID-2", billed["id"]), 422, "invoice_id")
    # a void invoice no longer counts: the pupil owes nothing
    assert accountant.get(f"/students/{pupil}/balance").get_json()["balance"] == "0.00"
    assert admin.delete(f"/invoices/{billed['id']}").status_code == 405
    assert admin.delete(f"/payments/{paid['id']}").status_code == 405
    entry = db.session.execute(
        select(AuditEntry.changes).where(
            AuditEntry.entity_type == "invoice",
            AuditEntry.entity_id == str(billed["id"]),
            AuditEntry.action == "void",
        ),
        execution_options={"skip_tenant": True},
    ).scalar_one()
    assert entry["status"] == ["open", "void"] and entry["reason"] == [None, "withdrawn"]


def test_invoice_lists_filter_and_reject_unknown_values(accountant, term, billed, pupil):
    rows = accountant.get(f"/invoices?term_id={term}&status=open&limit=5").get_json()
    assert len(rows["data"]) == 5 and rows["next_cursor"]
    assert all(i["status"] == "open" and i["term_id"] == term for i in rows["data"])
    nxt = accountant.get(
        f"/invoices?term_id={term}&status=open&limit=5&cursor={rows['next_cursor']}"
    ).get_json()
    assert not {i["id"] for i in rows["data"]} & {i["id"] for i in nxt["data"]}
    assert_problem(accountant.get("/invoices?status=overdue"), 422, "status")
    assert_problem(accountant.get("/invoices?student_id=abc"), 422, "student_id")


# -- payments -------------------------------------------------------------------------------------------


def test_same_idempotency_key_and_body_makes_one_payment_and_the_same_answer(accountant, billed, pupil):
    body = {
        "student_id": pupil,
        "invoice_id": billed["id"],
        "amount": "500.00",
        "method": "mobile_money",
        "reference": "QK7L2M9X",
    }
    key = {"Idempotency-Key": "pay-once-0001"}
    first = accountant.post("/payments", json=body, headers=key)
    again = accountant.post("/payments", json=body, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json() and again.headers.get("Idempotent-Replayed") == "true"
    assert set(first.get_json()) == set(PaymentReceiptOut.model_fields)
    assert payments_of(pupil) == 1
    assert accountant.get(f"/invoices/{billed['id']}").get_json()["paid"] == "500.00"

    other = accountant.post("/payments", json={**body, "amount": "600.00"}, headers=key)
    assert_problem(other, 409)
    assert payments_of(pupil) == 1


def test_a_retry_racing_the_first_request_is_answered_with_the_first_answer(
    accountant, billed, pupil, monkeypatch
):
    """Two requests with one key: the second looked for the key before the first committed, so it runs
    the write and meets the first's reference. It must replay the first answer, not report a clash."""
    from app.core import idempotency

    body = {
        "student_id": pupil,
        "invoice_id": billed["id"],
        "amount": "20.00",
        "method": "card",
        "reference": "ch_race",
    }
    key = {"Idempotency-Key": "race-0001"}
    first = accountant.post("/payments", json=body, headers=key)
    real_find, calls = idempotency._find, []

    def late_find(endpoint, k):  # the first lookup happens "before" the other request committed
        calls.append(k)
        return None if len(calls) == 1 else real_find(endpoint, k)

    monkeypatch.setattr(idempotency, "_find", late_find)
    again = accountant.post("/payments", json=body, headers=key)
    assert again.status_code == 201 and again.get_json() == first.get_json()
    assert payments_of(pupil) == 1
    # another key reusing that reference is still a clash
    assert_problem(
        accountant.post("/payments", json=body, headers={"Idempotency-Key": "race-0002"}), 409, "reference"
    )
    assert payments_of(pupil) == 1


def test_a_reference_is_used_once_per_institution(accountant, hillside_admin, billed, pupil, demo):
    assert pay(accountant, pupil, "100.00", "BNK0001", billed["id"]).status_code == 201
    body = assert_problem(pay(accountant, pupil, "100.00", "BNK0001", billed["id"]), 409, "reference")
    assert "BNK0001" in body["detail"]
    assert payments_of(pupil) == 1
    # another school may have a bank transaction with the same reference
    assert pay(hillside_admin, demo["hillside_student_id"], "1.00", "BNK0001").status_code == 201


@pytest.mark.parametrize("amount", ["12.345", "-5", "abc", 0, "0.00", 12.5, None, "1e3"])
def test_bad_amounts_are_422_naming_amount_and_write_nothing(accountant, billed, pupil, amount):
    resp = pay(accountant, pupil, amount, "BAD-AMOUNT", billed["id"])
    assert_problem(resp, 422, "amount")
    assert payments_of(pupil) == 0
    assert accountant.get(f"/invoices/{billed['id']}").get_json()["paid"] == "0.00"


def test_payment_references_must_belong_to_the_caller_and_the_student(accountant, billed, pupil, demo):
    seeded = payments_of(demo["demo_student_id"])
    body = assert_problem(
        pay(accountant, demo["demo_student_id"], "10.00", "X-1", billed["id"]), 422, "invoice_id"
    )
    assert "another student" in body["errors"]["invoice_id"]
    assert_problem(pay(accountant, demo["hillside_student_id"], "10.00", "X-2"), 422, "student_id")
    assert_problem(pay(accountant, pupil, "10.00", "X-3", 999999999), 422, "invoice_id")
    assert_problem(pay(accountant, pupil, "10.00", "X-4", method="cheque"), 422, "method")
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    assert_problem(pay(accountant, pupil, "10.00", "X-5", received_at=future), 422, "received_at")
    assert_problem(pay(accountant, pupil, "10.00", "X-6", recorded_by_id=1), 422, "recorded_by_id")
    assert payments_of(pupil) == 0 and payments_of(demo["demo_student_id"]) == seeded


def test_partial_then_full_then_overpayment(accountant, billed, pupil):
    first = pay(accountant, pupil, "1000.00", "P-1", billed["id"]).get_json()
    assert first["invoice"]["status"] == "partially_paid" and first["invoice"]["outstanding"] == "850.49"
    assert first["balance"]["balance"] == "850.49" and first["balance"]["credit"] == "0.00"
    assert first["balance"]["currency"] == "KES" and first["amount"] == "1000.00"

    second = pay(accountant, pupil, "850.49", "P-2", billed["id"]).get_json()
    assert second["invoice"]["status"] == "paid" and second["invoice"]["outstanding"] == "0.00"
    assert second["balance"]["balance"] == "0.00"

    third = pay(accountant, pupil, "100.00", "P-3", billed["id"])
    assert third.status_code == 201
    third = third.get_json()
    assert third["invoice"]["status"] == "paid" and third["invoice"]["paid"] == "1950.49"
    assert third["balance"] == {
        "student_id": pupil,
        "currency": "KES",
        "invoiced": PUPIL_TOTAL,
        "paid": "1950.49",
        "balance": "-100.00",
        "credit": "100.00",
    }
    # unallocated money is credit too
    pay(accountant, pupil, "0.01", "P-4")
    assert accountant.get(f"/students/{pupil}/balance").get_json()["credit"] == "100.01"
    audited = scalar(
        select(func.count())
        .select_from(AuditEntry)
        .where(
            AuditEntry.entity_type == "payment",
            AuditEntry.action == "create",
            AuditEntry.entity_id.in_([str(first["id"]), str(second["id"]), str(third["id"])]),
        )
    )
    assert audited == 3


def test_refunds_only_up_to_the_credit(accountant, billed, pupil):
    pay(accountant, pupil, "1900.49", "R-1", billed["id"])  # 50.00 over
    body = assert_problem(
        accountant.post(
            f"/students/{pupil}/refunds", json={"amount": "50.01", "method": "cash", "reference": "RF-1"}
        ),
        422,
        "amount",
    )
    assert "50.00" in body["errors"]["amount"]
    refund = accountant.post(
        f"/students/{pupil}/refunds", json={"amount": "30.00", "method": "cash", "reference": "RF-1"}
    )
    assert refund.status_code == 201
    row = refund.get_json()
    assert row["kind"] == "refund" and row["amount"] == "-30.00" and row["invoice_id"] is None
    assert row["balance"]["credit"] == "20.00"
    assert_problem(
        accountant.post(
            f"/students/{pupil}/refunds", json={"amount": "20.00", "method": "cash", "reference": "RF-1"}
        ),
        409,
        "reference",
    )
    assert_problem(
        accountant.post(
            f"/students/{pupil}/refunds", json={"amount": "-1", "method": "cash", "reference": "RF-2"}
        ),
        422,
        "amount",
    )
    assert payments_of(pupil) == 2


def test_a_reversal_restores_the_balance_and_cannot_be_repeated(accountant, billed, pupil):
    before = accountant.get(f"/students/{pupil}/balance").get_json()
    paid = pay(accountant, pupil, "1000.00", "MPESA123", billed["id"]).get_json()
    resp = accountant.post(f"/payments/{paid['id']}/reverse", json={"reason": "bounced"})
    assert resp.status_code == 201
    rev = resp.get_json()
    assert rev["kind"] == "reversal" and rev["amount"] == "-1000.00" and rev["reverses_id"] == paid["id"]
    assert rev["reference"] == "REV-MPESA123" and rev["invoice_id"] == billed["id"]
    assert rev["invoice"]["status"] == "open" and rev["invoice"]["paid"] == "0.00"
    assert accountant.get(f"/students/{pupil}/balance").get_json() == before
    assert_problem(accountant.post(f"/payments/{paid['id']}/reverse", json={"reason": "again"}), 409)
    assert_problem(accountant.post(f"/payments/{rev['id']}/reverse", json={"reason": "undo"}), 409)
    assert payments_of(pupil) == 2
    # the original stays in the ledger, untouched
    assert accountant.get(f"/payments/{paid['id']}").get_json() == {
        k: v for k, v in paid.items() if k not in ("invoice", "balance")
    }


def test_reverse_needs_a_reason(accountant, billed, pupil):
    paid = pay(accountant, pupil, "1.00", "NR-1", billed["id"]).get_json()
    assert_problem(accountant.post(f"/payments/{paid['id']}/reverse", json={}), 422, "reason")
    assert_problem(
        accountant.post(f"/payments/{paid['id']}/reverse", json={"reason": "x", "reference": "NR-1"}),
        409,
        "reference",
    )


def test_payment_lists_filter_by_student_method_and_dates(accountant, billed, pupil):
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    pay(accountant, pupil, "1.00", "L-1", billed["id"], received_at=three_days_ago.isoformat())
    pay(accountant, pupil, "2.00", "L-2", billed["id"], method="cash")
    rows = accountant.get(f"/payments?student_id={pupil}").get_json()["data"]
    assert [r["reference"] for r in rows] == ["L-1", "L-2"]
    cash = accountant.get(f"/payments?student_id={pupil}&method=cash").get_json()["data"]
    assert [r["reference"] for r in cash] == ["L-2"]
    local_today = datetime.now(ZoneInfo("Africa/Nairobi")).date()
    recent = accountant.get(f"/payments?student_id={pupil}&from={local_today - timedelta(days=1)}").get_json()
    assert [r["reference"] for r in recent["data"]] == ["L-2"]
    older = accountant.get(f"/payments?student_id={pupil}&to={local_today - timedelta(days=2)}").get_json()
    assert [r["reference"] for r in older["data"]] == ["L-1"]
    assert_problem(accountant.get("/payments?method=cheque"), 422, "method")
    assert_problem(accountant.get("/payments?from=yesterday"), 422, "from")


# -- balance and statement ---------------------------------------------------------------------------------


def test_statement_adds_up_to_the_cent(accountant, billed, pupil):
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    p1 = pay(accountant, pupil, "1000.00", "S-1", billed["id"], received_at=two_days_ago).get_json()
    p2 = pay(accountant, pupil, "1000.00", "S-2", billed["id"]).get_json()  # 149.51 over
    accountant.post(
        f"/students/{pupil}/refunds", json={"amount": "49.51", "method": "bank", "reference": "S-3"}
    )
    accountant.post(f"/payments/{p2['id']}/reverse", json={"reason": "bounced", "reference": "S-4"})

    whole = accountant.get(f"/students/{pupil}/statement").get_json()
    assert set(whole) == set(StatementOut.model_json_schema()["properties"])
    # hand-computed: -1000.00 (earlier payment), +1850.49, -1000.00, +49.51, +1000.00
    assert [(e["type"], e["reference"], e["debit"], e["credit"], e["balance"]) for e in whole["entries"]] == [
        ("payment", "S-1", "0.00", "1000.00", "-1000.00"),
        ("invoice", billed["number"], PUPIL_TOTAL, "0.00", "850.49"),
        ("payment", "S-2", "0.00", "1000.00", "-149.51"),
        ("refund", "S-3", "49.51", "0.00", "-100.00"),
        ("reversal", "S-4", "1000.00", "0.00", "900.00"),
    ]
    assert whole["opening_balance"] == "0.00" and whole["closing_balance"] == "900.00"
    assert whole["total_debits"] == "2900.00" and whole["total_credits"] == "2000.00"
    assert whole["entries"][4]["description"] == "Reversal: bounced"
    balance = accountant.get(f"/students/{pupil}/balance").get_json()
    assert balance == {
        "student_id": pupil,
        "currency": "KES",
        "invoiced": PUPIL_TOTAL,
        "paid": "950.49",
        "balance": "900.00",
        "credit": "0.00",
    }
    assert accountant.get(f"/invoices/{billed['id']}").get_json()["status"] == "partially_paid"

    local_today = datetime.now(ZoneInfo("Africa/Nairobi")).date()
    today = accountant.get(f"/students/{pupil}/statement?from={local_today}").get_json()
    assert today["opening_balance"] == "-1000.00" and len(today["entries"]) == 4
    total = Decimal(today["opening_balance"]) + sum(
        Decimal(e["debit"]) - Decimal(e["credit"]) for e in today["entries"]
    )
    assert str(total) == today["closing_balance"] == "900.00"
    before = accountant.get(f"/students/{pupil}/statement?to={local_today - timedelta(days=1)}").get_json()
    assert [e["id"] for e in before["entries"]] == [p1["id"]] and before["closing_balance"] == "-1000.00"
    assert_problem(
        accountant.get(f"/students/{pupil}/statement?from={local_today}&to={local_today - timedelta(1)}"),
        422,
        "to",
    )
    assert_problem(accountant.get(f"/students/{pupil}/statement?from=soon"), 422, "from")
    assert_problem(accountant.get(f"/students/{pupil}/statement?page=2"), 422, "page")


def test_seeded_student_balance_matches_the_ledger(guardian, demo):
    """The demo student's seeded invoice is part-paid: balance = invoiced - paid, computed independently."""
    sid = demo["demo_student_id"]
    invoiced = scalar(
        select(func.sum(Invoice.total_minor)).where(Invoice.student_id == sid, Invoice.status != "void")
    )
    paid = scalar(select(func.sum(Payment.amount_minor)).where(Payment.student_id == sid))
    balance = guardian.get(f"/students/{sid}/balance").get_json()
    assert Decimal(balance["balance"]) == (Decimal(invoiced) - Decimal(paid)) / 100 > 0
    statement = guardian.get(f"/students/{sid}/statement").get_json()
    assert statement["closing_balance"] == balance["balance"] == statement["entries"][-1]["balance"]
    assert sum(Decimal(e["debit"]) - Decimal(e["credit"]) for e in statement["entries"]) == Decimal(
        balance["balance"]
    )


# -- who sees what -----------------------------------------------------------------------------------------


def test_teachers_have_no_access_to_finance(teacher, demo):
    sid = demo["demo_student_id"]
    for resp in (
        teacher.get("/invoices"),
        teacher.get(f"/invoices/{demo['demo_invoice_id']}"),
        teacher.get("/payments"),
        teacher.get(f"/students/{sid}/balance"),
        teacher.get(f"/students/{sid}/statement"),
        teacher.post(
            "/payments", json={"student_id": sid, "amount": "1", "method": "cash", "reference": "T"}
        ),
        teacher.post("/invoices/generate", json={"term_id": 1, "class_id": 1}),
    ):
        assert_problem(resp, 403)


def test_guardians_and_students_read_only_their_own(guardian, student, accountant, billed, pupil, demo):
    own = demo["demo_student_id"]
    statement = guardian.get(f"/students/{own}/statement")
    assert statement.status_code == 200 and statement.get_json()["entries"]
    assert_problem(guardian.get(f"/students/{pupil}/statement"), 404)
    assert_problem(guardian.get(f"/students/{pupil}/balance"), 404)
    assert_problem(guardian.get(f"/invoices/{billed['id']}"), 404)
    kids = {k["id"] for k in guardian.get("/students").get_json()["data"]}
    assert {own, demo["demo_sibling_student_id"]} <= kids and pupil not in kids
    assert {i["student_id"] for i in guardian.get("/invoices?limit=200").get_json()["data"]} <= kids
    assert guardian.get(f"/invoices/{demo['demo_invoice_id']}").status_code == 200
    assert_problem(
        guardian.post(
            "/payments", json={"student_id": own, "amount": "1", "method": "cash", "reference": "G"}
        ),
        403,
    )

    assert student.get(f"/students/{own}/balance").status_code == 200
    assert_problem(student.get(f"/students/{demo['demo_sibling_student_id']}/balance"), 404)
    mine = student.get("/payments?limit=200").get_json()["data"]
    assert mine and {p["student_id"] for p in mine} == {own}
    other = pay(accountant, pupil, "1.00", "OWN-1", billed["id"]).get_json()
    assert_problem(student.get(f"/payments/{other['id']}"), 404)


def test_another_school_sees_nothing(hillside_admin, accountant, billed, pupil, demo):
    payment = pay(accountant, pupil, "1.00", "HS-1", billed["id"]).get_json()
    assert_problem(hillside_admin.get(f"/invoices/{demo['demo_invoice_id']}"), 404)
    assert_problem(hillside_admin.get(f"/payments/{payment['id']}"), 404)
    assert_problem(hillside_admin.post(f"/payments/{payment['id']}/reverse", json={"reason": "x"}), 404)
    assert_problem(hillside_admin.post(f"/invoices/{billed['id']}/void", json={}), 404)
    assert_problem(hillside_admin.get(f"/students/{pupil}/statement"), 404)
    assert_problem(
        hillside_admin.post(
            f"/students/{pupil}/refunds", json={"amount": "1", "method": "cash", "reference": "Z"}
        ),
        404,
    )
    ids = {i["id"] for i in hillside_admin.get("/invoices?limit=200").get_json()["data"]}
    assert billed["id"] not in ids and demo["demo_invoice_id"] not in ids
    assert_problem(pay(hillside_admin, pupil, "1.00", "HS-2"), 422, "student_id")
    assert (
        hillside_admin.get(f"/students/{demo['hillside_student_id']}/balance").get_json()["currency"] == "USD"
    )
