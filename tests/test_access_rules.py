"""The access rules (app/access/rules.py) as a user meets them: what teachers, guardians and students
reach inside their own school."""

from datetime import timedelta

from sqlalchemy import select

from app.academics.models import Enrolment, SchoolClass
from app.access.rules import (
    scope_classes,
    scope_enrolments,
    scope_guardians,
    scope_students,
    scope_teachers,
)
from app.core.auth import Principal
from app.core.tenancy import set_current_institution
from app.extensions import db
from app.institutions.calendar import school_today
from app.institutions.models import Institution
from app.people.models import Guardian, Student, Teacher
from tests.conftest import assert_problem


def _all_pages(api, path):
    rows, url = [], f"{path}{'&' if '?' in path else '?'}limit=200"
    while True:
        body = api.get(url).get_json()
        rows += body["data"]
        if not body.get("next_cursor"):
            return rows
        url = f"{path}{'&' if '?' in path else '?'}limit=200&cursor={body['next_cursor']}"


def _teacher_classes(teacher):
    return {c["id"] for c in _all_pages(teacher, "/classes")}


def _current_enrolment(class_id):
    return db.session.execute(
        select(Enrolment).where(Enrolment.class_id == class_id, Enrolment.end_date.is_(None)).limit(1)
    ).scalar_one()


def _today(demo):
    return school_today(db.session.get(Institution, demo["demo_institution_id"]))


# --- enrolments ------------------------------------------------------------------------------------------


def test_a_teacher_lists_the_enrolments_of_the_classes_they_teach_only(teacher, demo):
    mine = _teacher_classes(teacher)
    rows = _all_pages(teacher, "/enrolments")
    assert rows and {r["class_id"] for r in rows} <= mine
    elsewhere = _current_enrolment(demo["other_class_id"])
    assert elsewhere.id not in {r["id"] for r in rows}
    assert_problem(teacher.get(f"/enrolments/{elsewhere.id}"), 404)


def test_a_teacher_does_not_see_a_students_enrolments_in_other_classes(admin, teacher, guardian, demo):
    sid = demo["demo_student_id"]
    current = db.session.execute(
        select(Enrolment).where(Enrolment.student_id == sid, Enrolment.end_date.is_(None))
    ).scalar_one()
    past = Enrolment(
        student_id=sid,
        class_id=demo["other_class_id"],
        start_date=current.start_date - timedelta(days=200),
        end_date=current.start_date - timedelta(days=1),
        institution_id=demo["demo_institution_id"],
    )
    db.session.add(past)
    db.session.commit()
    seen = {r["id"] for r in teacher.get(f"/enrolments?student_id={sid}").get_json()["data"]}
    assert seen == {current.id}
    assert_problem(teacher.get(f"/enrolments/{past.id}"), 404)
    # The family sees the child's whole history.
    assert {current.id, past.id} <= {
        r["id"] for r in guardian.get(f"/enrolments?student_id={sid}").json["data"]
    }


def test_an_enrolment_counts_from_its_start_date_not_from_when_it_was_entered(admin, teacher, guardian, demo):
    # The demo student moves to another class from next month: until then they are still in the demo
    # class (their teacher keeps them, the family sees that class), and not yet in the other one.
    sid, cid, other = demo["demo_student_id"], demo["demo_class_id"], demo["other_class_id"]
    start = _today(demo) + timedelta(days=30)
    resp = admin.post("/enrolments", json={"student_id": sid, "class_id": other, "start_date": str(start)})
    assert resp.status_code == 201, resp.get_json()
    assert teacher.get(f"/students/{sid}").status_code == 200
    assert sid in {s["id"] for s in _all_pages(teacher, "/students")}
    assert guardian.get(f"/classes/{cid}").status_code == 200
    assert_problem(guardian.get(f"/classes/{other}"), 404)


# --- deleted classes and people --------------------------------------------------------------------------


def test_a_deleted_class_leaves_its_teachers_reach(admin, teacher, demo):
    cid, sid = demo["demo_class_id"], demo["demo_student_id"]
    assert admin.delete(f"/classes/{cid}").status_code == 204
    assert cid not in _teacher_classes(teacher)
    assert_problem(teacher.get(f"/classes/{cid}/attendance/{_today(demo)}"), 404)
    assert_problem(teacher.get(f"/students/{sid}"), 404)  # reached only through that class
    assert cid not in {r["class_id"] for r in _all_pages(teacher, "/enrolments")}


def test_a_deleted_child_leaves_the_guardians_reach(admin, guardian, demo):
    sid = demo["demo_student_id"]
    assert any(i["student_id"] == sid for i in guardian.get("/invoices").get_json()["data"])
    assert admin.delete(f"/students/{sid}").status_code == 204
    assert not any(i["student_id"] == sid for i in guardian.get("/invoices").get_json()["data"])
    assert not any(p["student_id"] == sid for p in guardian.get("/payments").get_json()["data"])
    assert not any(e["student_id"] == sid for e in guardian.get("/enrolments").get_json()["data"])
    # ... while the sibling stays in reach
    assert guardian.get(f"/students/{demo['demo_sibling_student_id']}").status_code == 200


def test_a_role_the_rules_do_not_know_reaches_nothing(app, demo):
    # Even carrying a guardian's or teacher's id, an unknown role gets no row from any rule.
    p = Principal(
        demo["demo_user_ids"]["guardian"],
        demo["demo_institution_id"],
        "caretaker",
        "x",
        demo["demo_student_id"],
        demo["demo_teacher_id"],
        demo["demo_guardian_id"],
    )
    set_current_institution(demo["demo_institution_id"])
    for scope, model in (
        (scope_students, Student),
        (scope_classes, SchoolClass),
        (scope_enrolments, Enrolment),
        (scope_guardians, Guardian),
        (scope_teachers, Teacher),
    ):
        assert db.session.execute(scope(select(model.id), p)).all() == [], scope.__name__


# --- what the family sees of teachers --------------------------------------------------------------------


STAFF_ONLY = ("email", "phone", "employee_number", "hired_on", "user_id")


def _counsellor_id():
    # The demo's extra teacher teaches no class and leads none.
    return db.session.execute(
        select(Teacher.id).where(Teacher.specialization == "School Counselling")
    ).scalar_one()


def test_guardians_and_students_see_their_teachers_names_without_contact_details(guardian, student, demo):
    for api in (guardian, student):
        rows = _all_pages(api, "/teachers")
        ids = {t["id"] for t in rows}
        assert demo["demo_teacher_id"] in ids and _counsellor_id() not in ids
        for t in rows:
            assert t["first_name"] and t["last_name"]
            assert all(t[f] is None for f in STAFF_ONLY), t
        one = api.get(f"/teachers/{demo['demo_teacher_id']}").get_json()
        assert one["last_name"] and all(one[f] is None for f in STAFF_ONLY)
        assert_problem(api.get(f"/teachers/{_counsellor_id()}"), 404)
    # the guardian's second child is in another class: that class's teachers are theirs too
    sibling_class = demo["demo_sibling_class_id"]
    homeroom = db.session.get(SchoolClass, sibling_class).homeroom_teacher_id
    assert homeroom in {t["id"] for t in _all_pages(guardian, "/teachers")}
    assert homeroom not in {t["id"] for t in _all_pages(student, "/teachers")}


def test_staff_still_see_teachers_contact_details(admin, teacher, accountant, demo):
    for api in (admin, teacher, accountant):
        one = api.get(f"/teachers/{_counsellor_id()}").get_json()
        assert one["email"] and one["phone"] and one["employee_number"]
