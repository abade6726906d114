"""Year-end rollover of the demo school (app/rollover/services.py): preview, apply, a second apply that
changes nothing, overrides, carried balances, undo and when it is refused, who may do it; and once
through a real Celery worker."""

import pytest
from sqlalchemy import func, select

from app.academics.models import AcademicYear, Enrolment, SchoolClass, Term
from app.attendance.models import AttendanceRecord
from app.extensions import db
from app.finance.models import FeeCategory, Invoice, InvoiceLine
from app.people.models import Student, User
from app.rollover.services import next_name
from tests.conftest import PASSWORD, assert_problem
from tests.embedded import run_embedded
from tests.worker_support import Worker, poll

UNSCOPED = {"skip_tenant": True}


@pytest.fixture(autouse=True)
def in_process(app):
    """The rollover job runs in-process (Celery's task_always_eager): done when POST returns."""
    celery = app.extensions["celery"]
    saved = celery.conf.task_always_eager
    celery.conf.task_always_eager = True
    yield
    celery.conf.task_always_eager = saved


def url(demo, tail=""):
    return f"/academic-years/{demo['demo_academic_year_id']}/rollover{tail}"


def rows(stmt):
    return db.session.execute(stmt, execution_options=UNSCOPED).all()


def one(stmt):
    return db.session.execute(stmt, execution_options=UNSCOPED).scalar_one_or_none()


def current_class(student_id):
    return one(
        select(SchoolClass)
        .join(Enrolment, Enrolment.class_id == SchoolClass.id)
        .where(Enrolment.student_id == student_id, Enrolment.end_date.is_(None))
    )


def in_grade(demo, grade, n=1):
    """n students currently enrolled in a class of grade `grade` of the demo year (section A)."""
    return [
        r.student_id
        for r in rows(
            select(Enrolment.student_id)
            .join(SchoolClass, SchoolClass.id == Enrolment.class_id)
            .where(
                SchoolClass.academic_year_id == demo["demo_academic_year_id"],
                SchoolClass.grade_level == grade,
                SchoolClass.section == "A",
                Enrolment.end_date.is_(None),
            )
            .order_by(Enrolment.student_id)
            .limit(n)
        )
    ]


def owing_student(demo):
    """A student of grade 1-9 (so they continue) with something unpaid on an invoice."""
    return one(
        select(Invoice.student_id)
        .join(Enrolment, Enrolment.student_id == Invoice.student_id)
        .join(SchoolClass, SchoolClass.id == Enrolment.class_id)
        .where(
            Enrolment.end_date.is_(None),
            SchoolClass.academic_year_id == demo["demo_academic_year_id"],
            SchoolClass.grade_level < 10,
            Invoice.status != "void",
            Invoice.total_minor > Invoice.paid_minor,
            Invoice.institution_id == demo["demo_institution_id"],
        )
        .order_by(Invoice.student_id)
        .limit(1)
    )


def apply(admin, demo, **body):
    resp = admin.post(url(demo), json=body)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    out = resp.get_json()
    assert out["dry_run"] is False
    return out


def test_next_name_counts_the_years_up():
    assert next_name("2025/26") == "2026/27"
    assert next_name("2025-2026") == "2026-2027"
    assert next_name("School year 2099/00") == "School year 2100/01"
    assert next_name("Current") == "Current"


def test_preview_lists_what_will_happen_and_writes_nothing(admin, demo):
    years_before = one(select(func.count()).select_from(AcademicYear))
    resp = admin.post(url(demo), json={"dry_run": True})
    assert resp.status_code == 202, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["dry_run"] is True and body["rollover"] is None
    p = body["preview"]
    assert p["classes_copied"] == 20  # grades 1-10, sections A and B
    assert p["students"] == p["promoted"] + p["graduating"] > 0
    assert p["repeating"] == p["withdrawn"] == 0
    grade10 = [g for g in p["by_grade"] if g["grade_level"] == 10][0]
    assert grade10["graduate"] == grade10["students"] == len(p["graduates"]) == p["graduating"]
    assert all(g["promote"] == g["students"] for g in p["by_grade"] if g["grade_level"] < 10)
    demo_class = [c for c in p["by_class"] if c["class_id"] == demo["demo_class_id"]][0]
    grade8a = one(
        select(SchoolClass.name).where(
            SchoolClass.academic_year_id == demo["demo_academic_year_id"],
            SchoolClass.grade_level == 8,
            SchoolClass.section == "A",
        )
    )
    assert demo_class["to"] == [{"class_name": grade8a, "students": demo_class["students"]}]
    assert p["new_year"]["terms"] and len(p["new_year"]["terms"]) == 3
    assert p["carried_balances"]["students"] > 0 and p["carried_balances"]["total_minor"] > 0
    assert one(select(func.count()).select_from(AcademicYear)) == years_before
    assert_problem(admin.get(url(demo)), 404)  # no rollover was made


def test_apply_promotes_graduates_carries_balances_and_a_second_apply_changes_nothing(admin, demo, client):
    pupil = demo["demo_student_id"]  # grade 7 A, has the student@ login
    leaver = in_grade(demo, 10)[0]
    owing = owing_student(demo)
    balance_before = admin.get(f"/students/{owing}/balance").get_json()
    unpaid_before = one(
        select(func.sum(Invoice.total_minor - Invoice.paid_minor)).where(
            Invoice.student_id == owing, Invoice.status != "void"
        )
    )
    preview = admin.post(url(demo), json={"dry_run": True}).get_json()["preview"]

    out = apply(admin, demo)
    assert out["created"] is True
    ro = admin.get(url(demo)).get_json()
    assert ro["status"] == "applied" and ro["job"]["status"] == "done"
    assert ro["job"]["progress"]["percent"] == 100
    s = ro["summary"]
    assert s["promoted"] == preview["promoted"] and s["graduated"] == preview["graduating"]
    assert s["classes_copied"] == 20 and s["class_subjects_copied"] == preview["class_subjects_copied"]
    assert s["fee_categories_copied"] == preview["fee_categories_copied"] > 0
    new_year = db.session.get(AcademicYear, ro["target_year_id"])
    assert new_year.name == next_name(db.session.get(AcademicYear, demo["demo_academic_year_id"]).name)

    # the pupil is in grade 8, section A, of the new year from its first day; the old enrolment ended
    klass = current_class(pupil)
    assert (klass.academic_year_id, klass.grade_level, klass.section) == (new_year.id, 8, "A")
    assert db.session.get(Student, pupil).grade_level == 8
    old = one(
        select(Enrolment).where(Enrolment.student_id == pupil, Enrolment.class_id == demo["demo_class_id"])
    )
    assert old.end_date == db.session.get(AcademicYear, demo["demo_academic_year_id"]).end_date
    roster = admin.get(f"/classes/{klass.id}/students?limit=200").get_json()["data"]
    assert pupil in [r["id"] for r in roster]

    # the grade 10 student graduated
    assert current_class(leaver) is None
    assert db.session.get(Student, leaver).status == "graduated"

    # the unpaid balance: the old invoices are settled by a carried-forward line, the new first term's
    # invoice opens with it; the student's balance is what it was
    first = one(select(Term).where(Term.academic_year_id == new_year.id).order_by(Term.start_date).limit(1))
    invoice = one(select(Invoice).where(Invoice.student_id == owing, Invoice.term_id == first.id))
    lines = rows(
        select(InvoiceLine.description, InvoiceLine.amount_minor).where(InvoiceLine.invoice_id == invoice.id)
    )
    assert [(d.startswith("Balance brought forward"), a) for d, a in lines] == [(True, unpaid_before)]
    assert invoice.total_minor == unpaid_before and invoice.status == "open"
    assert admin.get(f"/students/{owing}/balance").get_json() == balance_before
    assert s["carried_balances"]["students"] == preview["carried_balances"]["students"]
    assert s["carried_balances"]["total_minor"] == preview["carried_balances"]["total_minor"]

    # invoice generation for the new term bills the copied fees, never the carried balance again
    gen = admin.post("/invoices/generate", json={"term_id": first.id, "grade_level": klass.grade_level})
    assert gen.status_code in (200, 201), gen.get_data(as_text=True)
    brought = rows(
        select(InvoiceLine.id)
        .join(FeeCategory, FeeCategory.id == InvoiceLine.fee_category_id)
        .where(FeeCategory.carried_balance.is_(True), FeeCategory.term_id == first.id)
    )
    assert len(brought) == s["carried_balances"]["students"]

    # a second apply finds the rollover and changes nothing
    years = one(select(func.count()).select_from(AcademicYear))
    enrolments = one(select(func.count()).select_from(Enrolment))
    again = apply(admin, demo)
    assert again["created"] is False and again["rollover"]["id"] == ro["id"]
    assert one(select(func.count()).select_from(AcademicYear)) == years
    assert one(select(func.count()).select_from(Enrolment)) == enrolments


def test_overrides_are_honoured_and_leavers_lose_their_login(admin, demo, client):
    pupil = demo["demo_student_id"]
    repeat, withdraw = in_grade(demo, 3, 2)
    top = in_grade(demo, 10)[0]
    out = apply(
        admin,
        demo,
        overrides=[
            {"student_id": pupil, "action": "graduate"},
            {"student_id": repeat, "action": "repeat"},
            {"student_id": withdraw, "action": "withdraw"},
            {"student_id": top, "action": "repeat"},
        ],
    )
    s = admin.get(url(demo)).get_json()["summary"]
    assert out["created"] and s["repeating"] == 2 and s["withdrawn"] == 1 and s["accounts_ended"] == 1
    assert db.session.get(Student, pupil).status == "graduated" and current_class(pupil) is None
    assert db.session.get(Student, withdraw).status == "withdrawn" and current_class(withdraw) is None
    assert (current_class(repeat).grade_level, current_class(top).grade_level) == (3, 10)
    user = db.session.get(User, db.session.get(Student, pupil).user_id)
    assert user.is_active is False
    resp = client.post(
        "/api/v1/auth/login", json={"email": "student@demo-academy.test", "password": PASSWORD}
    )
    assert resp.status_code in (401, 403)


def test_bad_requests_are_refused_naming_the_field(admin, demo, hillside_admin):
    hill_student = hillside_admin.get("/students?limit=1").get_json()["data"][0]["id"]
    assert_problem(
        admin.post(url(demo), json={"overrides": [{"student_id": hill_student, "action": "repeat"}]}),
        422,
        "overrides[0].student_id",
    )
    top = in_grade(demo, 10)[0]
    assert_problem(
        admin.post(url(demo), json={"overrides": [{"student_id": top, "action": "promote"}]}),
        422,
        "overrides[0].action",
    )
    assert_problem(admin.post(url(demo), json={"overrides": [{"student_id": top, "action": "skip"}]}), 422)
    year = db.session.get(AcademicYear, demo["demo_academic_year_id"])
    assert_problem(admin.post(url(demo), json={"new_year": {"name": year.name}}), 422, "new_year.name")
    assert_problem(
        admin.post(url(demo), json={"new_year": {"start_date": year.end_date.isoformat()}}),
        422,
        "new_year.start_date",
    )
    assert_problem(admin.get(url(demo)), 404)  # nothing was queued


def test_undo_restores_the_school_and_is_refused_once_the_new_year_has_attendance(admin, demo):
    pupil = demo["demo_student_id"]
    leaver = in_grade(demo, 10)[0]
    owing = owing_student(demo)
    balance_before = admin.get(f"/students/{owing}/balance").get_json()
    invoices_before = rows(
        select(Invoice.id, Invoice.total_minor, Invoice.status)
        .where(Invoice.student_id == owing)
        .order_by(Invoice.id)
    )
    years = one(select(func.count()).select_from(AcademicYear))

    apply(admin, demo)
    ro = admin.get(url(demo)).get_json()
    undone = admin.post(url(demo, "/undo"))
    assert undone.status_code == 200, undone.get_data(as_text=True)
    assert undone.get_json()["status"] == "undone" and undone.get_json()["target_year_id"] is None
    assert one(select(func.count()).select_from(AcademicYear)) == years
    assert current_class(pupil).id == demo["demo_class_id"]
    assert db.session.get(Student, leaver).status == "active" and current_class(leaver) is not None
    assert admin.get(f"/students/{owing}/balance").get_json() == balance_before
    after = rows(
        select(Invoice.id, Invoice.total_minor, Invoice.status)
        .where(Invoice.student_id == owing)
        .order_by(Invoice.id)
    )
    assert after == invoices_before
    assert_problem(admin.post(url(demo, "/undo")), 404)  # nothing left to undo

    # rolled over again, then a roll is taken in the new year: the undo is refused, naming it
    again = apply(admin, demo)
    assert again["created"] is True and again["rollover"]["id"] != ro["id"]
    klass = current_class(pupil)
    first_day = db.session.get(AcademicYear, klass.academic_year_id).start_date
    db.session.add(
        AttendanceRecord(
            institution_id=demo["demo_institution_id"],
            student_id=pupil,
            class_id=klass.id,
            date=first_day,
            status="present",
            period=0,
            source="manual",
        )
    )
    db.session.flush()
    refused = admin.post(url(demo, "/undo"))
    assert_problem(refused, 409)
    assert "attendance" in refused.get_json()["detail"] and refused.get_json()["existing"] == {
        "attendance_records": 1
    }
    assert admin.get(url(demo)).get_json()["status"] == "applied"


def test_only_admins_and_only_their_school(demo, teacher, accountant, hillside_admin, admin):
    for api in (teacher, accountant):
        assert_problem(api.post(url(demo), json={"dry_run": True}), 403)
        assert_problem(api.get(url(demo)), 403)
        assert_problem(api.post(url(demo, "/undo")), 403)
    assert_problem(hillside_admin.post(url(demo), json={"dry_run": True}), 404)
    assert_problem(hillside_admin.get(url(demo)), 404)
    assert_problem(hillside_admin.post(url(demo, "/undo")), 404)
    apply(admin, demo)
    assert_problem(hillside_admin.get(url(demo)), 404)  # even once it exists
    assert_problem(hillside_admin.post(url(demo, "/undo")), 404)


# --- a real worker -----------------------------------------------------------------------------------


def test_rollover_through_a_real_worker(committed_school, worker_app, committing, broker, tmp_path):
    """API -> Redis -> a separate `celery worker` process -> rollover applied, progress on the job."""
    app2, client = worker_app
    api = committed_school["login"](client)
    year = api.get("/academic-years").get_json()["data"][0]["id"]
    with Worker(broker, app2.config["EXPORT_DIR"], tmp_path) as worker:
        resp = api.post(
            f"/academic-years/{year}/rollover",
            json={
                "new_year": {"name": "Worker year 2"},
                "overrides": [{"student_id": committed_school["students"][0], "action": "repeat"}],
            },
        )
        assert resp.status_code == 202, resp.get_data(as_text=True)
        assert resp.get_json()["rollover"]["status"] == "queued"
        ro = poll(
            lambda: api.get(resp.headers["Location"]).get_json(),
            lambda r: r["status"] in ("applied", "failed") or (r["job"] or {}).get("status") == "failed",
            timeout=60,
            what="the worker to apply the rollover",
            worker=worker,
        )
    assert ro["status"] == "applied", ro
    assert ro["job"]["status"] == "done" and ro["job"]["progress"]["percent"] == 100
    # one class, grade 5, no grade 6: the repeater stays in grade 5, the two others graduate
    assert ro["summary"]["repeating"] == 1 and ro["summary"]["graduated"] == 2
    # leave the committed school as it was for the module's other tests
    undone = api.post(f"/academic-years/{year}/rollover/undo")
    assert undone.status_code == 200, undone.get_data(as_text=True)


EMBEDDED = """
import json
from flask_migrate import upgrade
from app import create_app
from app.seed import seed_demo
app = create_app()
with app.app_context():
    upgrade()
    ids = seed_demo("embedded-pass-1")
c = app.test_client()
token = c.post("/api/v1/auth/login", json={"email": "admin@demo-academy.test",
                                           "password": "embedded-pass-1"}).get_json()["access_token"]
h = {"Authorization": "Bearer " + token}
url = f"/api/v1/academic-years/{ids['demo_academic_year_id']}/rollover"
out = {}
preview = c.post(url, json={"dry_run": True}, headers=h).get_json()["preview"]
out["preview"] = [preview["students"], preview["graduating"], preview["carried_balances"]["students"]]
first = c.post(url, json={}, headers=h)
out["apply"] = first.status_code
ro = c.get(url, headers=h).get_json()
out["status"] = [ro["status"], ro["job"]["status"], ro["summary"]["promoted"], ro["summary"]["graduated"],
                 ro["summary"]["carried_balances"]["students"]]
out["again"] = c.post(url, json={}, headers=h).get_json()["created"]
undo = c.post(url + "/undo", headers=h)
out["undo"] = [undo.status_code, undo.get_json()["status"]]
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_the_embedded_default_rolls_over_and_back(tmp_path):
    out = run_embedded(EMBEDDED, tmp_path)
    students, graduating, owing = out["preview"]
    assert out["apply"] == 202 and out["again"] is False, out
    assert out["status"] == ["applied", "done", students - graduating, graduating, owing], out
    assert out["undo"] == [200, "undone"], out
