"""Another institution's records answer 404, exactly like missing ones, on every route that takes an id."""

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app.academics.models import AcademicYear, ClassSubject, Enrolment, SchoolClass, Subject, Term
from app.announcements.models import Announcement, AnnouncementRecipient
from app.attendance.models import AttendanceCode, AttendanceSession
from app.audit.models import AuditEntry
from app.extensions import db
from app.finance.models import C2bPayment, FeeCategory, Invoice, Payment, StkRequest
from app.grading.models import Assessment, AssessmentType
from app.institutions.models import Closure
from app.jobs.models import Job
from app.oneroster.models import OneRosterClient
from app.people.models import Guardian, Student, Teacher, User
from app.timetable.models import Lesson, Period, Room
from app.uploads.models import Upload
from tests.conftest import assert_problem

# First path segment -> the model whose ids the route takes. A new route with an id must be added here,
# or the walk fails: no route escapes the check.
MODELS = {
    "students": Student,
    "guardians": Guardian,
    "teachers": Teacher,
    "users": User,
    "academic-years": AcademicYear,
    "terms": Term,
    "subjects": Subject,
    "classes": SchoolClass,
    "class-subjects": ClassSubject,
    "enrolments": Enrolment,
    "audit-log": AuditEntry,
    "attendance-sessions": AttendanceSession,
    "assessment-types": AssessmentType,
    "assessments": Assessment,
    "fee-categories": FeeCategory,
    "invoices": Invoice,
    "payments": Payment,
    "exports": Job,
    "imports": Job,
    "oneroster": OneRosterClient,  # /oneroster/clients/<id>
    "closures": Closure,
    "attendance-codes": AttendanceCode,
    "stk-requests": StkRequest,
    "paybill-payments": C2bPayment,
    "documents": Upload,
    "files": Upload,  # the signed file link: without its token, 404 like a missing file
    "periods": Period,
    "rooms": Room,
    "lessons": Lesson,
    "me": Announcement,  # /me/announcements/<id>/read
}
# Second id in a nested path (e.g. /students/<id>/guardians/<guardian_id>).
NESTED = {"guardian_id": Guardian}


def demo_id(model, institution_id):
    found = db.session.execute(
        select(model.id).where(model.institution_id == institution_id).order_by(model.id).limit(1),
        execution_options={"skip_tenant": True},
    ).scalar()
    assert found is not None, (
        f"no {model.__tablename__} row in Demo Academy: the walk needs one (seed or fixture)"
    )
    return found


@pytest.fixture
def qr_session(demo):
    """The demo seed has no QR session; make one so /attendance-sessions/<id> routes are walked too."""
    from datetime import date, datetime, timedelta

    now = datetime.now(UTC)
    row = AttendanceSession(
        institution_id=demo["demo_institution_id"],
        class_id=demo["demo_class_id"],
        period=0,
        date=date.today(),
        opened_at=now,
        expires_at=now + timedelta(minutes=5),
    )
    db.session.add(row)
    db.session.flush()
    return row


@pytest.fixture
def mpesa_rows(demo):
    """The demo seed has no M-Pesa rows; make a push request and a paybill payment to walk their routes."""
    from datetime import datetime

    iid = demo["demo_institution_id"]
    invoice = db.session.execute(
        select(Invoice).where(Invoice.institution_id == iid).limit(1), execution_options={"skip_tenant": True}
    ).scalar_one()
    now = datetime.now(UTC)
    db.session.add(
        StkRequest(
            institution_id=iid,
            invoice_id=invoice.id,
            student_id=invoice.student_id,
            phone="254712345678",
            amount_minor=100,
            merchant_request_id="t-1",
            checkout_request_id="ws_CO_tenancy",
            status="pending",
            created_at=now,
        )
    )
    db.session.add(
        C2bPayment(
            institution_id=iid,
            trans_id="TENANCY1",
            amount_minor=100,
            bill_ref="X",
            status="suspense",
            created_at=now,
        )
    )
    db.session.flush()


@pytest.fixture
def demo_job(demo):
    """The demo seed has no export/import jobs; make one so /exports/<id> and /imports/<id> are walked."""
    row = Job(
        institution_id=demo["demo_institution_id"],
        job_type="export",
        kind="class_roster",
        format="csv",
        params={"class_id": demo["demo_class_id"]},
        status="queued",
        attempts=0,
        progress_percent=0,
        rows_done=0,
    )
    db.session.add(row)
    db.session.flush()
    return row


def id_routes(app):
    for rule in app.url_map.iter_rules():
        if "<int:" in rule.rule and rule.rule.startswith("/api/v1/"):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield rule, method


@pytest.fixture
def demo_oneroster_client(demo):
    """The demo seed has no OneRoster client; make one so /oneroster/clients/<id> is walked."""
    row = OneRosterClient(
        institution_id=demo["demo_institution_id"],
        client_id="tenancy-walk",
        secret_hash="not-a-hash",
        name="Walk LMS",
        scopes="roster.readonly",
        created_at=datetime.now(UTC),
    )
    db.session.add(row)
    db.session.flush()
    return row


@pytest.fixture
def demo_document(demo):
    """The demo seed has no uploads; make a document so /documents/<id> and /files/<id> are walked."""
    row = Upload(
        institution_id=demo["demo_institution_id"],
        owner_type="student",
        owner_id=demo["demo_student_id"],
        kind="birth_certificate",
        filename="walk.pdf",
        content_type="application/pdf",
        size_bytes=1,
        sha256="0" * 64,
        storage_key="walk.pdf",
        thumbnail_status="none",
        created_at=datetime.now(UTC),
    )
    db.session.add(row)
    db.session.flush()
    return row


@pytest.fixture
def demo_announcement(demo):
    """The demo seed has no announcement; make one (with the demo admin as a recipient) so
    /me/announcements/<id>/read is walked."""
    now = datetime.now(UTC)
    row = Announcement(
        institution_id=demo["demo_institution_id"],
        title="Tenancy walk",
        body="Walk.",
        audience="staff",
        status="delivered",
        recipient_count=1,
        email_count=0,
        sms_count=0,
        created_at=now,
    )
    db.session.add(row)
    db.session.flush()
    db.session.add(
        AnnouncementRecipient(
            institution_id=demo["demo_institution_id"],
            announcement_id=row.id,
            kind="user",
            person_id=demo["demo_user_ids"]["admin"],
            created_at=now,
        )
    )
    db.session.flush()
    return row


def test_every_id_route_answers_404_for_another_institution(
    app,
    demo,
    hillside_admin,
    qr_session,
    demo_job,
    demo_oneroster_client,
    mpesa_rows,
    demo_document,
    demo_announcement,
):
    inst = demo["demo_institution_id"]
    walked = 0
    for rule, method in id_routes(app):
        segment = rule.rule.split("/")[3]
        assert segment in MODELS, f"{rule.rule}: add its model to MODELS so the tenant walk covers it"
        url = rule.rule
        for name in re.findall(r"<int:(\w+)>", rule.rule):
            model = NESTED.get(name, MODELS[segment])
            url = url.replace(f"<int:{name}>", str(demo_id(model, inst)))
        for conv in re.findall(r"<(?:\w+:)?\w+>", url):
            url = url.replace(conv, "2026-01-05")  # date-like path parts
        resp = hillside_admin._call(method, url, json={})
        body = assert_problem(resp, 404)
        assert "not found" in body["detail"].lower() or "no such" in body["detail"].lower()
        walked += 1
    assert walked >= 20


def test_foreign_and_missing_ids_look_the_same(hillside_admin, demo):
    foreign = hillside_admin.get(f"/students/{demo['demo_student_id']}")
    missing = hillside_admin.get("/students/999999999")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.get_json()["detail"] == missing.get_json()["detail"]


def test_lists_show_only_own_institution(hillside_admin, admin, demo):
    ids = {s["id"] for s in hillside_admin.get("/students?limit=200").get_json()["data"]}
    assert demo["demo_student_id"] not in ids and demo["hillside_student_id"] in ids
    ids = {s["id"] for s in admin.get("/students?limit=200").get_json()["data"]}
    assert demo["hillside_student_id"] not in ids


def test_references_to_another_institution_are_rejected(hillside_admin, demo):
    hill_year = hillside_admin.get("/academic-years").get_json()["data"][0]["id"]
    demo_class = demo["demo_class_id"]
    resp = hillside_admin.post(
        "/enrolments",
        json={"student_id": demo["hillside_student_id"], "class_id": demo_class, "start_date": "2026-01-10"},
    )
    assert_problem(resp, 422, "class_id")
    resp = hillside_admin.post(
        "/classes",
        json={
            "academic_year_id": hill_year,
            "name": "X",
            "grade_level": 1,
            "section": "Z",
            "homeroom_teacher_id": demo["demo_teacher_id"],
        },
    )
    assert_problem(resp, 422, "homeroom_teacher_id")


@pytest.mark.parametrize("body", [{"institution_id": 1}, {"institution": "x"}])
def test_institution_cannot_be_set_from_a_body(hillside_admin, body):
    resp = hillside_admin.post("/subjects", json={"code": "ZZ", "name": "Z", **body})
    assert_problem(resp, 422, next(iter(body)))
