from sqlalchemy import select

from app.academics.models import Enrolment
from app.core.cursor import encode_cursor
from app.extensions import db
from tests.conftest import assert_problem


def test_students_page_and_cursor_do_not_overlap(admin):
    first = admin.get("/students?limit=5")
    assert first.status_code == 200
    page1 = first.get_json()
    assert len(page1["data"]) == 5 and page1["next_cursor"]
    assert 'rel="next"' in first.headers["Link"]
    page2 = admin.get(f"/students?limit=5&cursor={page1['next_cursor']}").get_json()
    ids1, ids2 = [s["id"] for s in page1["data"]], [s["id"] for s in page2["data"]]
    assert len(ids2) == 5 and not set(ids1) & set(ids2) and max(ids1) < min(ids2)


def test_cursor_pages_walk_a_sorted_list_completely(admin):
    seen, url = [], "/students?limit=200&sort=last_name"
    while url:
        body = admin.get(url).get_json()
        seen += body["data"]
        url = (
            f"/students?limit=200&sort=last_name&cursor={body['next_cursor']}"
            if body["next_cursor"]
            else None
        )
    keys = [(s["last_name"], s["id"]) for s in seen]
    assert keys == sorted(keys) and len({s["id"] for s in seen}) == len(seen) >= 500


def test_limit_bounds_and_unknown_params(admin):
    assert_problem(admin.get("/students?limit=201"), 422, "limit")
    assert_problem(admin.get("/students?limit=0"), 422, "limit")
    assert_problem(admin.get("/students?colour=red"), 422, "colour")
    assert_problem(admin.get("/students?sort=password"), 422, "sort")
    assert_problem(admin.get("/students?cursor=garbage"), 422, "cursor")
    assert len(admin.get("/students").get_json()["data"]) == 50


def test_search_is_case_insensitive_prefix(admin):
    some = admin.get("/students?limit=1").get_json()["data"][0]
    q = some["last_name"][:3].upper()
    found = admin.get(f"/students?q={q}&limit=200").get_json()["data"]
    assert some["id"] in [s["id"] for s in found]
    assert all(
        s["last_name"].lower().startswith(q.lower()) or s["first_name"].lower().startswith(q.lower())
        for s in found
    )


def test_filters(admin, demo):
    rows = admin.get(f"/students?class_id={demo['demo_class_id']}&limit=200").get_json()["data"]
    assert demo["demo_student_id"] in [s["id"] for s in rows]
    assert all(s["status"] == "active" for s in admin.get("/students?status=active").get_json()["data"])
    assert_problem(admin.get("/students?grade_level=abc"), 422, "grade_level")


def test_student_detail_has_guardians(admin, demo):
    body = admin.get(f"/students/{demo['demo_student_id']}").get_json()
    assert any(g["id"] == demo["demo_guardian_id"] for g in body["guardians"])


def test_teacher_sees_only_their_classes_students(teacher, demo):
    assert teacher.get(f"/students/{demo['demo_student_id']}").status_code == 200
    outsider = db.session.execute(
        select(Enrolment.student_id)
        .where(Enrolment.class_id == demo["other_class_id"], Enrolment.end_date.is_(None))
        .limit(1)
    ).scalar_one()
    assert_problem(teacher.get(f"/students/{outsider}"), 404)
    assert_problem(teacher.get(f"/classes/{demo['other_class_id']}/students"), 404)
    assert_problem(teacher.get(f"/classes/{demo['other_class_id']}"), 404)
    listed = {s["id"] for s in teacher.get("/students?limit=200").get_json()["data"]}
    assert outsider not in listed and demo["demo_student_id"] in listed


def test_guardian_and_student_see_only_their_own(guardian, student, demo):
    kids = guardian.get("/students").get_json()["data"]
    assert demo["demo_student_id"] in [k["id"] for k in kids] and len(kids) <= 4
    me = student.get("/students").get_json()["data"]
    assert [s["id"] for s in me] == [demo["demo_student_id"]]
    other = next(
        i
        for i in (demo["demo_student_id"] + 1, demo["demo_student_id"] - 1)
        if i not in [k["id"] for k in kids]
    )
    assert_problem(student.get(f"/students/{other}"), 404)
    assert_problem(guardian.get(f"/students/{other}"), 404)


def test_accountant_reads_rosters_but_cannot_write(accountant):
    assert accountant.get("/students").status_code == 200
    assert_problem(
        accountant.post("/students", json={"admission_number": "Z", "first_name": "a", "last_name": "b"}), 403
    )


def test_roles_that_may_not_write_get_403(teacher, guardian):
    assert_problem(teacher.post("/subjects", json={"code": "X1", "name": "X"}), 403)
    assert_problem(guardian.get("/users"), 403)


def test_create_update_delete_student_with_conflict(admin):
    body = {"admission_number": "T-0001", "first_name": "Ada", "last_name": "Lovelace", "grade_level": 3}
    created = admin.post("/students", json=body)
    assert created.status_code == 201
    sid = created.get_json()["id"]
    assert_problem(admin.post("/students", json=body), 409)
    resp = admin.patch(f"/students/{sid}", json={"first_name": "Augusta"})
    assert resp.get_json()["first_name"] == "Augusta"
    assert admin.delete(f"/students/{sid}").status_code == 204
    assert_problem(admin.get(f"/students/{sid}"), 404)
    log = admin.get(f"/audit-log?entity_type=student&entity_id={sid}").get_json()["data"]
    assert [e["action"] for e in log] == ["delete", "update", "create"]
    assert log[1]["changes"] == {"first_name": ["Ada", "Augusta"]}


def test_moving_a_student_keeps_history(admin, demo):
    sid, other = demo["demo_student_id"], demo["other_class_id"]
    resp = admin.post("/enrolments", json={"student_id": sid, "class_id": other, "start_date": "2099-01-10"})
    assert resp.status_code == 201, resp.get_json()
    history = admin.get(f"/enrolments?student_id={sid}&sort=start_date").get_json()["data"]
    assert len(history) == 2
    assert history[0]["class_id"] == demo["demo_class_id"] and history[0]["end_date"] == "2099-01-09"
    assert history[1]["class_id"] == other and history[1]["end_date"] is None
    roster = admin.get(f"/classes/{other}/students?limit=200").get_json()["data"]
    assert sid in [r["id"] for r in roster]
    assert sid not in [
        r["id"] for r in admin.get(f"/classes/{demo['demo_class_id']}/students?limit=200").get_json()["data"]
    ]


def test_class_roster_is_sorted_and_paged(admin, demo):
    body = admin.get(f"/classes/{demo['demo_class_id']}/students?limit=10").get_json()
    names = [(r["last_name"], r["id"]) for r in body["data"]]
    assert names == sorted(names) and len(names) == 10 and body["next_cursor"]
    nxt = admin.get(
        f"/classes/{demo['demo_class_id']}/students?limit=10&cursor={body['next_cursor']}"
    ).get_json()
    assert not {r["id"] for r in nxt["data"]} & {r["id"] for r in body["data"]}


def test_institution_get_and_patch(admin, teacher):
    assert admin.get("/institution").get_json()["slug"] == "demo-academy"
    resp = admin.patch("/institution", json={"phone": "+254 700 000000"})
    assert resp.status_code == 200 and resp.get_json()["phone"] == "+254 700 000000"
    assert_problem(admin.patch("/institution", json={"slug": "x"}), 422, "slug")
    assert_problem(admin.patch("/institution", json={"currency": "dollars"}), 422, "currency")
    assert_problem(teacher.patch("/institution", json={"phone": "1"}), 403)


def test_user_creation_links_person(admin, demo):
    resp = admin.post(
        "/users",
        json={
            "email": "new.teacher@demo-academy.test",
            "password": "long-enough-pw",
            "role": "teacher",
            "first_name": "N",
            "last_name": "T",
        },
    )
    assert_problem(resp, 422, "teacher_id")
    teachers = admin.get("/teachers?limit=200").get_json()["data"]
    free = next(t for t in teachers if t["user_id"] is None)
    resp = admin.post(
        "/users",
        json={
            "email": "new.teacher@demo-academy.test",
            "password": "long-enough-pw",
            "role": "teacher",
            "first_name": "N",
            "last_name": "T",
            "teacher_id": free["id"],
        },
    )
    assert resp.status_code == 201
    assert admin.get(f"/teachers/{free['id']}").get_json()["user_id"] == resp.get_json()["id"]


def test_deleting_a_referenced_record_is_409_not_500(admin):
    subject = admin.get("/class-subjects?limit=1").get_json()["data"][0]["subject_id"]
    resp = admin.delete(f"/subjects/{subject}")
    assert_problem(resp, 409)
    assert admin.get(f"/subjects/{subject}").status_code == 200


def test_search_only_where_the_list_searches_and_forged_cursors_are_422(admin):
    assert_problem(admin.get("/subjects?q=ma"), 422, "q")
    assert_problem(admin.get("/subjects?q=ma&colour=red"), 422, "colour")
    number_for_a_name = encode_cursor(["last_name", 3, 5])
    assert_problem(admin.get(f"/students?sort=last_name&cursor={number_for_a_name}"), 422, "cursor")
    assert_problem(admin.get(f"/students?cursor={encode_cursor(['id', None])}"), 422, "cursor")
    assert_problem(admin.get(f"/students?cursor={encode_cursor(['id', None, 5])}&sort=-id"), 422, "cursor")
