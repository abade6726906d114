"""M-Pesa (Daraja) collections and SMS against the local simulator (scripts/daraja_sim.py), a real HTTP
server started here on a free port. Its callbacks reach the app through a real HTTP server too (werkzeug,
in a thread of this process, on the test's own database connection: the simulator delivers held callbacks
only when a test asks, while the test waits, so the connection is never used by two threads at once)."""

import ipaddress
import json
import threading
from datetime import date, timedelta

import pytest
import requests
from sqlalchemy import func, select
from werkzeug.serving import make_server

from app.academics.models import Term
from app.attendance.models import AttendanceRecord
from app.core.models import utcnow
from app.core.tenancy import set_current_institution
from app.extensions import db
from app.finance import mpesa
from app.finance.models import C2bPayment, Invoice, MpesaAccount, Payment, StkRequest
from app.notifications import services as notifications
from app.notifications import sms, sms_services
from app.notifications.models import OutboxEmail, OutboxSms
from app.people.models import Guardian, Student, StudentGuardian
from tests.conftest import assert_problem

UNSCOPED = {"skip_tenant": True}
SIM_CREDS = {
    "environment": "simulator",
    "shortcode": "174379",
    "consumer_key": "sim-consumer-key",
    "consumer_secret": "sim-consumer-secret",
    "passkey": "sim-passkey",
}


class Sim:
    def __init__(self, url):
        self.url = url

    def post(self, path, body=None):
        resp = requests.post(self.url + path, json=body or {}, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def state(self):
        return requests.get(self.url + "/sim/state", timeout=10).json()


@pytest.fixture(scope="session")
def daraja_sim(daraja_sim_url):
    return Sim(daraja_sim_url)


@pytest.fixture(scope="session")
def app_server(app):
    """The app on a real port, for the simulator's callbacks."""
    server = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def sim(app, daraja_sim, app_server, monkeypatch):
    daraja_sim.post("/sim/reset")
    daraja_sim.post("/sim/scenario", {"deliver": "hold"})
    monkeypatch.setitem(app.config, "MPESA_SIMULATOR_URL", daraja_sim.url)
    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", app_server)
    monkeypatch.setitem(app.config, "MPESA_CALLBACK_ALLOWED_IPS", [])
    return daraja_sim


@pytest.fixture
def school(sim, admin, demo):
    """The demo school on the simulator, with two open invoices of the demo student (KES)."""
    resp = admin.put("/mpesa-account", json=SIM_CREDS)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["consumer_key_hint"] == "...-key" and "sim-consumer-secret" not in json.dumps(body)
    assert "mpesa" not in body["stk_callback_url"].lower()  # Daraja refuses such URLs
    stored = db.session.execute(select(MpesaAccount), execution_options=UNSCOPED).scalars().one()
    assert "sim-passkey" not in stored.passkey_enc  # encrypted at rest
    iid, sid = demo["demo_institution_id"], demo["demo_student_id"]
    invoices = []
    for n, due in ((1, date(2090, 2, 1)), (2, date(2090, 1, 1))):
        term = Term(
            institution_id=iid,
            academic_year_id=demo["demo_academic_year_id"],
            name=f"M-Pesa term {n}",
            start_date=date(2090, n, 1),
            end_date=date(2090, n, 20),
        )
        db.session.add(term)
        db.session.flush()
        invoice = Invoice(
            institution_id=iid,
            student_id=sid,
            term_id=term.id,
            number=f"MP-{n}",
            status="open",
            total_minor=5_000_00,
            paid_minor=0,
            due_date=due,
        )
        db.session.add(invoice)
        db.session.flush()
        invoices.append(invoice.id)
    db.session.commit()
    return {"first": invoices[0], "second_older": invoices[1], "student_id": sid, "institution_id": iid}


def invoice_state(invoice_id):
    row = db.session.execute(
        select(Invoice.status, Invoice.paid_minor).where(Invoice.id == invoice_id),
        execution_options=UNSCOPED,
    ).one()
    return row.status, row.paid_minor


def payments_of(invoice_id):
    return db.session.execute(
        select(Payment.reference, Payment.amount_minor, Payment.method)
        .where(Payment.invoice_id == invoice_id)
        .order_by(Payment.id),
        execution_options=UNSCOPED,
    ).all()


def stk_rows():
    return {
        r.checkout_request_id: r
        for r in db.session.execute(
            select(StkRequest).execution_options(populate_existing=True), execution_options=UNSCOPED
        ).scalars()
    }


# -- STK push ----------------------------------------------------------------------------------------------


def test_stk_push_ends_as_one_payment_per_push_however_often_and_in_whatever_order_callbacks_come(
    school, sim, accountant, guardian
):
    sim.post("/sim/scenario", {"copies": 3})
    first = accountant.post(
        "/payments/mpesa/stk", json={"invoice_id": school["first"], "phone": "0712 345 678", "amount": "3000"}
    )
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["status"] == "pending" and first.get_json()["phone"] == "254712345678"
    second = guardian.post(
        "/payments/mpesa/stk",
        json={"invoice_id": school["first"], "phone": "+254712345678", "amount": "2000"},
    )
    assert second.status_code == 201, second.get_json()
    assert invoice_state(school["first"]) == ("open", 0)

    delivered = sim.post("/sim/deliver", {"shuffle": True, "seed": 7})["delivered"]
    assert len(delivered) == 6 and all(d["status"] == 200 for d in delivered), delivered

    checkouts = sim.state()["checkouts"]
    receipts = {c["MpesaReceiptNumber"] for c in checkouts.values()}
    assert sorted((p.reference, p.amount_minor, p.method) for p in payments_of(school["first"])) == sorted(
        (checkouts[r.checkout_request_id]["MpesaReceiptNumber"], r.amount_minor, "mobile_money")
        for r in stk_rows().values()
    )
    assert {p.reference for p in payments_of(school["first"])} == receipts and len(receipts) == 2
    assert invoice_state(school["first"]) == ("paid", 5_000_00)
    for row in stk_rows().values():
        assert row.status == "paid" and row.receipt_number in receipts and row.settled_by == "callback"
    # the guardian sees how their push ended
    got = guardian.get(f"/stk-requests/{second.get_json()['id']}").get_json()
    assert got["status"] == "paid" and got["receipt_number"] in receipts
    # the invoice answer (and its cache) shows the payments
    detail = accountant.get(f"/invoices/{school['first']}").get_json()
    assert detail["status"] == "paid" and len(detail["payments"]) == 2


def test_a_cancelled_push_is_recorded_and_leaves_the_invoice_open(school, sim, accountant):
    sim.post("/sim/scenario", {"result_code": 1032, "copies": 2})
    resp = accountant.post("/payments/mpesa/stk", json={"invoice_id": school["first"], "phone": "0712345678"})
    assert resp.status_code == 201 and resp.get_json()["amount"] == "5000.00"  # default: all outstanding
    assert all(d["status"] == 200 for d in sim.post("/sim/deliver")["delivered"])
    (row,) = stk_rows().values()
    assert row.status == "cancelled" and row.result_code == 1032 and row.payment_id is None
    assert invoice_state(school["first"]) == ("open", 0) and payments_of(school["first"]) == []


def test_a_push_whose_callback_never_comes_is_settled_by_the_stk_query_job(school, sim, accountant):
    sim.post("/sim/scenario", {"deliver": "never"})
    assert (
        accountant.post(
            "/payments/mpesa/stk", json={"invoice_id": school["first"], "phone": "0712345678"}
        ).status_code
        == 201
    )
    sim.post("/sim/scenario", {"deliver": "never", "processing": True})
    assert (
        accountant.post(
            "/payments/mpesa/stk", json={"invoice_id": school["second_older"], "phone": "0712345678"}
        ).status_code
        == 201
    )
    assert mpesa.settle_pending()["checked"] == 0  # too early: the callback may still come
    report = mpesa.settle_pending(now=utcnow() + timedelta(minutes=10))
    assert report == {"checked": 2, "settled": 1, "expired": 0, "errors": 0}
    rows = sorted(stk_rows().values(), key=lambda r: r.id)
    assert rows[0].status == "paid" and rows[0].settled_by == "query"
    assert payments_of(school["first"])[0].reference == rows[0].checkout_request_id
    assert invoice_state(school["first"]) == ("paid", 5_000_00)
    assert rows[1].status == "pending"  # Daraja: still being processed
    later = mpesa.settle_pending(now=utcnow() + timedelta(days=2))
    assert later["expired"] == 1 and stk_rows()[rows[1].checkout_request_id].status == "expired"
    assert invoice_state(school["second_older"]) == ("open", 0)


def test_callbacks_from_outside_the_allow_list_are_refused(app, school, sim, accountant, monkeypatch, client):
    monkeypatch.setitem(app.config, "MPESA_CALLBACK_ALLOWED_IPS", [ipaddress.ip_network("196.201.214.0/24")])
    accountant.post("/payments/mpesa/stk", json={"invoice_id": school["first"], "phone": "0712345678"})
    delivered = sim.post("/sim/deliver")["delivered"]
    assert [d["status"] for d in delivered] == [403]
    (row,) = stk_rows().values()
    assert row.status == "pending" and invoice_state(school["first"]) == ("open", 0)
    token = db.session.execute(select(MpesaAccount.callback_token), execution_options=UNSCOPED).scalar_one()
    allowed = client.post(
        f"/api/v1/pay/hooks/{token}/stk",
        json={"Body": {"stkCallback": {"CheckoutRequestID": row.checkout_request_id, "ResultCode": 1032}}},
        environ_base={"REMOTE_ADDR": "196.201.214.200"},
    )
    assert allowed.status_code == 200 and stk_rows()[row.checkout_request_id].status == "cancelled"


def test_callback_paths_and_bodies_are_checked(school, client):
    assert_problem(client.post("/api/v1/pay/hooks/not-a-school/stk", json={}), 404)
    token = db.session.execute(select(MpesaAccount.callback_token), execution_options=UNSCOPED).scalar_one()
    assert_problem(client.post(f"/api/v1/pay/hooks/{token}/stk", json={"Body": {}}), 422, "Body")
    success_without_receipt = {"Body": {"stkCallback": {"CheckoutRequestID": "ws_x", "ResultCode": 0}}}
    assert_problem(client.post(f"/api/v1/pay/hooks/{token}/stk", json=success_without_receipt), 422)
    unknown = {"Body": {"stkCallback": {"CheckoutRequestID": "ws_unknown", "ResultCode": 1032}}}
    assert client.post(f"/api/v1/pay/hooks/{token}/stk", json=unknown).status_code == 200


def test_push_input_is_checked_and_another_schools_invoice_is_not_found(
    school, sim, accountant, guardian, demo
):
    hillside_invoice = db.session.execute(
        select(Invoice.id).where(Invoice.institution_id == demo["hillside_institution_id"]).limit(1),
        execution_options=UNSCOPED,
    ).scalar()
    if hillside_invoice is not None:
        assert_problem(
            accountant.post(
                "/payments/mpesa/stk", json={"invoice_id": hillside_invoice, "phone": "0712345678"}
            ),
            404,
        )
    stranger = db.session.execute(
        select(Invoice.id).where(
            Invoice.institution_id == demo["demo_institution_id"],
            Invoice.student_id == demo["apostrophe_student_id"],
        ),
        execution_options=UNSCOPED,
    ).scalar()
    if stranger is not None:  # another family's invoice: not the guardian's to pay from here
        assert_problem(
            guardian.post("/payments/mpesa/stk", json={"invoice_id": stranger, "phone": "0712345678"}), 404
        )
    bad = {"invoice_id": school["first"], "phone": "12345", "amount": "10"}
    assert_problem(accountant.post("/payments/mpesa/stk", json=bad), 422, "phone")
    cents = {"invoice_id": school["first"], "phone": "0712345678", "amount": "10.50"}
    assert_problem(accountant.post("/payments/mpesa/stk", json=cents), 422, "amount")
    too_much = {"invoice_id": school["first"], "phone": "0712345678", "amount": "5001"}
    assert_problem(accountant.post("/payments/mpesa/stk", json=too_much), 422, "amount")
    assert stk_rows() == {} and sim.state()["checkouts"] == {}


def test_a_school_without_an_account_is_told_so(sim, accountant, demo):
    invoice = db.session.execute(
        select(Invoice.id).where(
            Invoice.institution_id == demo["demo_institution_id"],
            Invoice.status.in_(("open", "partially_paid")),
        ),
        execution_options=UNSCOPED,
    ).scalar()
    if invoice is None:
        pytest.skip("the demo seed has no open invoice")
    assert_problem(
        accountant.post("/payments/mpesa/stk", json={"invoice_id": invoice, "phone": "0712345678"}), 409
    )


# -- paybill (C2B) -------------------------------------------------------------------------------------------


def register(app):
    result = app.test_cli_runner().invoke(
        args=["mpesa", "register-urls", "--school", "demo-academy"], catch_exceptions=False
    )
    set_current_institution(None)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def c2b_rows():
    return (
        db.session.execute(
            select(C2bPayment).execution_options(populate_existing=True).order_by(C2bPayment.id),
            execution_options=UNSCOPED,
        )
        .scalars()
        .all()
    )


def test_paybill_with_an_admission_number_lands_on_the_oldest_open_invoice_once(app, school, sim, demo):
    urls = register(app)
    assert sim.state()["registrations"]["174379"]["ConfirmationURL"] == urls["confirmation_url"]
    iid = demo["demo_institution_id"]
    pupil = Student(institution_id=iid, admission_number="ADM-MP-77", first_name="Paybill", last_name="Pupil")
    db.session.add(pupil)
    db.session.flush()
    terms = (
        db.session.execute(
            select(Term.id).where(Term.institution_id == iid).order_by(Term.id), execution_options=UNSCOPED
        )
        .scalars()
        .all()
    )
    invoice_ids = []
    for n, (term_id, due) in enumerate(
        zip(terms[:3], (date(2090, 5, 1), date(2090, 4, 1), None), strict=True)
    ):
        invoice = Invoice(
            institution_id=iid,
            student_id=pupil.id,
            term_id=term_id,
            number=f"MP-ADM-{n}",
            status="paid" if n == 2 else "open",
            total_minor=2_000_00,
            paid_minor=2_000_00 if n == 2 else 0,
            due_date=due,
        )
        db.session.add(invoice)
        db.session.flush()
        invoice_ids.append(invoice.id)
    db.session.commit()
    later, older, _paid = invoice_ids
    paid = sim.post(
        "/sim/c2b/pay",
        {
            "ShortCode": "174379",
            "Amount": 1500,
            "BillRefNumber": "adm-mp-77",
            "MSISDN": "254712345678",
            "copies": 3,
        },
    )
    assert paid["accepted"] and [c["status"] for c in paid["confirmations"]] == [200, 200, 200]
    (row,) = c2b_rows()
    assert row.trans_id == paid["TransID"] and row.status == "applied"
    assert row.invoice_id == older and row.student_id == pupil.id  # the open invoice due first
    assert [(p.reference, p.amount_minor) for p in payments_of(older)] == [(paid["TransID"], 1_500_00)]
    assert invoice_state(older) == ("partially_paid", 1_500_00) and payments_of(later) == []
    by_number = sim.post("/sim/c2b/pay", {"ShortCode": "174379", "Amount": 5000, "BillRefNumber": "MP-1"})
    assert by_number["accepted"] and invoice_state(school["first"]) == ("paid", 5_000_00)


def test_an_unknown_account_lands_in_suspense_until_an_accountant_assigns_it(
    app, school, sim, accountant, teacher
):
    register(app)
    paid = sim.post(
        "/sim/c2b/pay", {"ShortCode": "174379", "Amount": 700, "BillRefNumber": "NO-SUCH-1", "copies": 2}
    )
    assert paid["accepted"]
    suspense = accountant.get("/paybill-payments?status=suspense").get_json()["data"]
    assert [(r["trans_id"], r["amount"], r["bill_ref"]) for r in suspense] == [
        (paid["TransID"], "700.00", "NO-SUCH-1")
    ]
    assert teacher.get("/paybill-payments").status_code == 403
    ident = suspense[0]["id"]
    assert_problem(
        accountant.post(f"/paybill-payments/{ident}/assign", json={"invoice_id": 999_999_999}),
        422,
        "invoice_id",
    )
    done = accountant.post(f"/paybill-payments/{ident}/assign", json={"invoice_id": school["first"]})
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "assigned" and done.get_json()["payment_id"]
    assert invoice_state(school["first"]) == ("partially_paid", 700_00)
    assert_problem(
        accountant.post(f"/paybill-payments/{ident}/assign", json={"invoice_id": school["first"]}), 409
    )
    assert accountant.get("/paybill-payments?status=suspense").get_json()["data"] == []


# -- SMS -----------------------------------------------------------------------------------------------------


def test_segments_are_counted_in_gsm7_and_ucs2():
    assert sms.encode("a" * 160) == sms.Encoded("a" * 160, "gsm7", 160, 1)
    assert sms.encode("a" * 161).segments == 2 and sms.encode("a" * 306).segments == 2
    assert sms.encode("a" * 307).segments == 3
    assert sms.encode("€" * 80).units == 160 and sms.encode("€" * 80).segments == 1
    assert sms.encode("a" * 152 + "€" + "a" * 152).segments == 3  # 306 septets, but the € pair is not split
    assert sms.encode("“Amani’s” fees – due…").encoding == "gsm7"  # typography made plain
    assert sms.encode("Zoë") == sms.Encoded("Zoe", "gsm7", 3, 1)
    assert sms.encode("你" * 70).segments == 1 and sms.encode("你" * 71).segments == 2
    assert sms.encode("你" * 134).segments == 2 and sms.encode("你" * 135).segments == 3
    assert sms.fit("x" * 200, "short").text == "short"
    assert sms.e164("0712 345 678") == "+254712345678" and sms.e164("+1 312 555 0142") == "+13125550142"
    assert sms.e164("call me") is None


def demo_guardian(demo):
    gid = (
        db.session.execute(
            select(StudentGuardian.guardian_id).where(StudentGuardian.student_id == demo["demo_student_id"]),
            execution_options=UNSCOPED,
        )
        .scalars()
        .first()
    )
    guardian = db.session.get(Guardian, gid)
    guardian.phone = "0722 000 111"
    db.session.commit()
    return guardian


def sms_rows(**where):
    stmt = select(OutboxSms).execution_options(populate_existing=True).order_by(OutboxSms.id)
    for k, v in where.items():
        stmt = stmt.where(getattr(OutboxSms, k) == v)
    return db.session.execute(stmt, execution_options=UNSCOPED).scalars().all()


@pytest.fixture
def sms_to_file(app, tmp_path, monkeypatch):
    monkeypatch.setitem(app.config, "SMS_BACKEND", "file")
    monkeypatch.setitem(app.config, "SMS_DIR", str(tmp_path / "sms"))
    return tmp_path / "sms"


def absent_today(demo):
    day = date(2090, 3, 5)
    db.session.add(
        AttendanceRecord(
            institution_id=demo["demo_institution_id"],
            student_id=demo["demo_student_id"],
            class_id=demo["demo_class_id"],
            period=0,
            date=day,
            status="absent",
            source="manual",
        )
    )
    db.session.commit()
    return day


def test_an_absent_students_guardian_who_chose_sms_gets_one_sms(app, demo, guardian, sms_to_file):
    g = demo_guardian(demo)
    chosen = guardian.put(f"/guardians/{g.id}/channel", json={"notify_by": "sms"})
    assert chosen.status_code == 200 and chosen.get_json()["notify_by"] == "sms"
    day = absent_today(demo)
    for _ in range(2):  # the job runs every few minutes: the second run finds nothing new
        notifications.send_absence_alerts(on_date=day, institution_ids=[demo["demo_institution_id"]])
    texts = sms_rows(kind="absence_alert", to_number="+254722000111")
    assert len(texts) == 1 and texts[0].segments == 1 and texts[0].encoding == "gsm7"
    assert "absent" in texts[0].body and len(texts[0].body) <= 160
    emails = db.session.execute(
        select(func.count()).select_from(OutboxEmail).where(OutboxEmail.dedupe_key.like(f"absence:%:{g.id}")),
        execution_options=UNSCOPED,
    ).scalar()
    assert emails == 0  # SMS only, as chosen
    assert sms_services.dispatch_sms_outbox()["sent"] >= 1
    assert sms_services.dispatch_sms_outbox()["sent"] == 0
    files = [json.loads(p.read_text()) for p in sms_to_file.glob("*.json")]
    mine = [f for f in files if f["to"] == "+254722000111"]
    assert len(mine) == 1 and mine[0]["message"] == texts[0].body
    assert sms_rows(id=texts[0].id)[0].status == "sent"


def test_the_sms_goes_through_africas_talking_on_the_simulator_with_a_delivery_report(
    app, demo, guardian, sim, monkeypatch, app_server
):
    monkeypatch.setitem(app.config, "SMS_BACKEND", "africastalking")
    monkeypatch.setitem(app.config, "AT_BASE_URL", sim.url)
    monkeypatch.setitem(app.config, "AT_USERNAME", "sandbox")
    monkeypatch.setitem(app.config, "AT_API_KEY", "sim-at-api-key")
    report_url = f"{app_server}/api/v1/sms/delivery-reports/{sms_services.report_token()}"
    sim.post("/sim/config", {"at_delivery_report_url": report_url})
    g = demo_guardian(demo)
    assert guardian.put(f"/guardians/{g.id}/channel", json={"notify_by": "both"}).status_code == 200
    day = absent_today(demo)
    notifications.send_absence_alerts(on_date=day, institution_ids=[demo["demo_institution_id"]])
    (text,) = sms_rows(kind="absence_alert", to_number="+254722000111")
    assert sms_services.send_outbox_sms(text.id) == "sent"
    assert sms_services.send_outbox_sms(text.id) == "sent"  # a second send is a no-op
    received = [m for m in sim.state()["sms"] if m["to"] == "+254722000111"]
    assert len(received) == 1 and received[0]["message"] == text.body and received[0]["username"] == "sandbox"
    row = sms_rows(id=text.id)[0]
    assert row.provider_message_id == received[0]["id"] and row.cost == "KES 0.8000"
    assert [d["status"] for d in sim.post("/sim/deliver")["delivered"]] == [200]
    row = sms_rows(id=text.id)[0]
    assert row.delivery_status == "Success" and row.delivered_at is not None
    # "both": the e-mail went into its own outbox too
    assert (
        db.session.execute(
            select(func.count()).select_from(OutboxEmail).where(OutboxEmail.dedupe_key == text.dedupe_key),
            execution_options=UNSCOPED,
        ).scalar()
        == 1
    )


def test_a_delivery_report_needs_the_secret_path(client):
    assert (
        client.post("/api/v1/sms/delivery-reports/guess", data={"id": "x", "status": "Success"}).status_code
        == 404
    )


def test_an_mpesa_payment_sends_its_receipt_by_sms(school, sim, accountant, guardian, demo, sms_to_file):
    g = demo_guardian(demo)
    assert guardian.put(f"/guardians/{g.id}/channel", json={"notify_by": "sms"}).status_code == 200
    accountant.post(
        "/payments/mpesa/stk", json={"invoice_id": school["first"], "phone": "0712345678", "amount": "1000"}
    )
    sim.post("/sim/deliver")
    (row,) = stk_rows().values()
    assert row.status == "paid"
    assert notifications.queue_payment_receipt(row.payment_id)["sms"] >= 1
    notifications.queue_payment_receipt(row.payment_id)  # the task may run twice: still one message
    (text,) = sms_rows(kind="payment_receipt", to_number="+254722000111")
    assert row.receipt_number in text.body and "KES 1,000.00" in text.body and text.segments == 1
    assert sms_services.send_outbox_sms(text.id) == "sent"
    assert any(json.loads(p.read_text())["message"] == text.body for p in sms_to_file.glob("*.json"))
