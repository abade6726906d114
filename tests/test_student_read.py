"""GET /students/{id} from one statement (app/people/services.py student_detail): the answer is byte for
byte the one the ORM read gave (the student's fields in StudentDetailOut's order, then the live
guardians, primary first, then by id), and the access rule it asks of one id (student_in_reach) agrees
with the statement scope it stands for (scope_students)."""

import pytest
from sqlalchemy import select

from app.access.rules import scope_students, student_in_reach
from app.core.auth import Principal
from app.core.caching import etag_for
from app.core.schemas import dump, dumps, fields_of
from app.core.tenancy import set_current_institution
from app.extensions import db
from app.people.models import Guardian, Student, StudentGuardian
from app.people.schemas import StudentDetailOut, StudentOut
from tests.conftest import assert_problem


def _orm_answer(student_id) -> bytes:
    """The answer as the ORM read built it before the one-statement read: the reference."""
    student = db.session.execute(
        select(Student).where(Student.id == student_id, Student.deleted_at.is_(None))
    ).scalar_one()
    rows = db.session.execute(
        select(Guardian, StudentGuardian.relationship_type, StudentGuardian.is_primary)
        .join(StudentGuardian, StudentGuardian.guardian_id == Guardian.id)
        .where(StudentGuardian.student_id == student_id, Guardian.deleted_at.is_(None))
        .order_by(StudentGuardian.is_primary.desc(), Guardian.id)
    ).all()
    guardians = [
        {
            "id": g.id,
            "first_name": g.first_name,
            "last_name": g.last_name,
            "email": g.email,
            "phone": g.phone,
            "relationship": rel,
            "is_primary": primary,
        }
        for g, rel, primary in rows
    ]
    return dumps({**dump(student, fields_of(StudentOut)), "guardians": guardians})


@pytest.fixture(params=[True, False], ids=["cache", "no-cache"])
def cache_on(request, app):
    rc = app.extensions["response_cache"]
    before, rc.enabled = rc.enabled, request.param
    yield request.param
    rc.enabled = before


def _same_answer(api, student_id):
    resp = api.get(f"/students/{student_id}")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.data == _orm_answer(student_id)
    assert list(resp.get_json()) == list(StudentDetailOut.model_fields)
    assert resp.headers["ETag"] == f'"{etag_for(resp.data)}"'
    return resp.get_json()


def test_every_role_gets_the_orm_answer_byte_for_byte(
    admin, accountant, teacher, guardian, student, demo, cache_on
):
    sid = demo["demo_student_id"]
    bodies = [_same_answer(api, sid) for api in (admin, accountant, teacher, guardian, student)]
    assert bodies[0]["guardians"] and all(b == bodies[0] for b in bodies)
    assert _same_answer(guardian, demo["demo_sibling_student_id"])["id"] == demo["demo_sibling_student_id"]


def test_every_demo_student_reads_as_before(admin, demo):
    ids = db.session.execute(
        select(Student.id).where(
            Student.institution_id == demo["demo_institution_id"], Student.deleted_at.is_(None)
        )
    ).scalars()
    for sid in ids:
        _same_answer(admin, sid)


def test_guardians_primary_first_then_by_id_deleted_ones_left_out(admin):
    sid = admin.post(
        "/students", json={"admission_number": "READ-1", "first_name": "Wanjiru", "last_name": "Kamau"}
    ).get_json()["id"]
    # A student without guardians still reads, with an empty list.
    assert _same_answer(admin, sid)["guardians"] == []
    gids = [
        admin.post("/guardians", json={"first_name": f"G{i}", "last_name": "Kamau"}).get_json()["id"]
        for i in range(3)
    ]
    for gid, primary in zip(gids, (False, True, False)):
        link = {"guardian_id": gid, "relationship": "aunt", "is_primary": primary}
        assert admin.post(f"/students/{sid}/guardians", json=link).status_code == 204
    assert [g["id"] for g in _same_answer(admin, sid)["guardians"]] == [gids[1], gids[0], gids[2]]
    # A deleted guardian's link stays in the table and out of the answer; the student stays readable.
    for gid in gids:
        assert admin.delete(f"/guardians/{gid}").status_code == 204
        body = _same_answer(admin, sid)
        assert gid not in [g["id"] for g in body["guardians"]]
    assert body["guardians"] == []


def test_missing_deleted_and_other_schools_students_are_404(admin, hillside_admin, demo, cache_on):
    assert_problem(admin.get(f"/students/{demo['hillside_student_id']}"), 404)
    assert_problem(hillside_admin.get(f"/students/{demo['demo_student_id']}"), 404)
    assert hillside_admin.get(f"/students/{demo['hillside_student_id']}").status_code == 200
    assert_problem(admin.get("/students/999999999"), 404)
    assert_problem(admin.get("/students/99999999999999999999"), 404)
    sid = demo["demo_student_id"]
    assert admin.delete(f"/students/{sid}").status_code == 204
    assert_problem(admin.get(f"/students/{sid}"), 404)


def test_family_and_teachers_only_reach_their_own(teacher, guardian, student, demo):
    outsider = demo["hillside_student_id"]
    other = db.session.execute(
        select(Student.id).where(
            Student.institution_id == demo["demo_institution_id"],
            Student.id.not_in([demo["demo_student_id"], demo["demo_sibling_student_id"]]),
        )
    ).scalars()
    stranger = next(iter(other))
    for api in (teacher, guardian, student):
        assert_problem(api.get(f"/students/{outsider}"), 404)
    assert_problem(guardian.get(f"/students/{stranger}"), 404)
    assert_problem(student.get(f"/students/{stranger}"), 404)
    assert_problem(student.get(f"/students/{demo['demo_sibling_student_id']}"), 404)


@pytest.mark.parametrize("role", ["admin", "accountant", "teacher", "guardian", "student", "caretaker"])
def test_student_in_reach_agrees_with_scope_students(demo, role):
    iid = demo["demo_institution_id"]
    p = Principal(
        demo["demo_user_ids"].get(role, demo["demo_user_ids"]["guardian"]),
        iid,
        role,
        "x",
        student_id=demo["demo_student_id"],
        teacher_id=demo["demo_teacher_id"],
        guardian_id=demo["demo_guardian_id"],
    )
    set_current_institution(iid)
    every = set(db.session.execute(select(Student.id)).scalars())
    scoped = set(db.session.execute(scope_students(select(Student.id), p)).scalars())
    assert {sid for sid in every if student_in_reach(sid, p)} == scoped
    assert scoped or role == "caretaker"


# --- the student list and a student's attendance history from plain rows ------------------------------


@pytest.fixture
def no_cache(app):
    rc = app.extensions["response_cache"]
    before, rc.enabled = rc.enabled, False
    yield
    rc.enabled = before


def _list_paths(demo):
    return [
        "/students",
        "/students?limit=5",
        "/students?q=ma&limit=20",
        "/students?q=MA&limit=3&sort=last_name",
        "/students?sort=last_name&limit=7",
        "/students?sort=-last_name&limit=7",
        "/students?sort=-created_at&limit=4",
        "/students?sort=admission_number&limit=4&offset=3",
        "/students?status=active&grade_level=1&limit=6",
        f"/students?class_id={demo['demo_class_id']}&limit=200",
        "/students?admission_number=DA-2026-0001",
        "/students?q=zzzzzz",
    ]


def test_the_student_list_answers_as_the_orm_list_did(
    admin, accountant, teacher, guardian, student, demo, no_cache, monkeypatch
):
    from app.people.routes import students

    columns = students.list_columns
    for api in (admin, accountant, teacher, guardian, student):
        paths = _list_paths(demo)
        for path in paths:
            monkeypatch.setattr(students, "list_columns", columns)
            rows = api.get(path)
            monkeypatch.setattr(students, "list_columns", ())
            orm = api.get(path)
            assert rows.status_code == orm.status_code == 200, path
            assert rows.data == orm.data and rows.headers.get("Link") == orm.headers.get("Link"), path
            cursor = rows.get_json()["next_cursor"]
            if cursor and len(paths) < 30:  # the next page too, by its cursor
                paths.append(f"{path}{'&' if '?' in path else '?'}cursor={cursor}".replace("offset=3&", ""))
        assert api is not admin or len(paths) > len(_list_paths(demo))  # the admin's lists had next pages


def _history_orm_data(student_id, query: dict) -> list:
    """The page's records as the ORM read built them before the plain-row read: the reference."""
    from werkzeug.datastructures import MultiDict

    from app.attendance.models import AttendanceRecord
    from app.attendance.routes import HISTORY_SPEC
    from app.core.pagination import apply_list

    la = HISTORY_SPEC.parse(MultiDict(query))
    stmt = select(AttendanceRecord).where(AttendanceRecord.student_id == student_id)
    if la.extra["from"] is not None:
        stmt = stmt.where(AttendanceRecord.date >= la.extra["from"])
    if la.extra["to"] is not None:
        stmt = stmt.where(AttendanceRecord.date <= la.extra["to"])
    stmt, limit, _, _ = apply_list(stmt, HISTORY_SPEC, la)
    rows = db.session.execute(stmt).scalars().all()[:limit]
    return [
        {
            "id": r.id,
            "date": r.date,
            "class_id": r.class_id,
            "subject_id": r.subject_id,
            "period": r.period,
            "status": r.status,
            "note": r.note,
            "code_id": r.code_id,
            "source": r.source,
            "marked_by_id": r.marked_by_id,
            "marked_at": r.updated_at,
        }
        for r in rows
    ]


def _history_totals_per_request(student_id, frm, to) -> dict:
    """The totals as the statement built on every request computed them: the reference."""
    from sqlalchemy import case, func

    from app.attendance.models import STATUSES, AttendanceRecord
    from app.institutions.calendar import open_days_only

    rec = AttendanceRecord
    sums = [func.coalesce(func.sum(case((rec.status == s, 1), else_=0)), 0) for s in STATUSES]
    stmt = select(*sums, func.count(rec.id)).where(rec.student_id == student_id)
    if frm is not None:
        stmt = stmt.where(rec.date >= frm)
    if to is not None:
        stmt = stmt.where(rec.date <= to)
    row = db.session.execute(open_days_only(stmt, rec.date, rec.class_id, rec.institution_id, frm, to)).one()
    return {**{s: int(row[i]) for i, s in enumerate(STATUSES)}, "marked": int(row[-1])}


@pytest.mark.parametrize("closed", [False, True], ids=["open", "a-closed-day"])
def test_attendance_history_answers_as_the_orm_read_did(admin, guardian, demo, no_cache, closed):
    from datetime import date
    from urllib.parse import urlencode

    sid = demo["demo_student_id"]
    start, end = demo["current_term"]["start"], demo["current_term"]["end"]
    if closed:  # a closure on the first marked day: its marks stay in the page, out of the totals
        from sqlalchemy import func

        from app.attendance.models import AttendanceRecord

        day = db.session.execute(
            select(func.min(AttendanceRecord.date)).where(AttendanceRecord.student_id == sid)
        ).scalar_one()
        closure = {"start_date": str(day), "end_date": str(day), "kind": "strike", "name": "Strike"}
        assert admin.post("/closures", json=closure).status_code == 201
    queries = [
        {},
        {"limit": "5"},
        {"from": str(start), "to": str(end)},
        {"from": str(start), "limit": "3", "sort": "date"},
        {"to": str(end), "limit": "4", "status": "present"},
        {"from": str(start), "to": str(end), "sort": "-id", "limit": "2", "offset": "1"},
    ]
    paged = 0
    for api in (admin, guardian):
        for query in queries:
            for _ in range(3):  # the page and the next two by their cursors
                resp = api.get(f"/students/{sid}/attendance?{urlencode(query)}")
                assert resp.status_code == 200, (query, resp.get_data(as_text=True))
                body = resp.get_json()
                assert body["data"], query
                assert resp.data == dumps({**body, "data": _history_orm_data(sid, query)}), query
                frm, to = (date.fromisoformat(query[k]) if k in query else None for k in ("from", "to"))
                assert body["totals"] == _history_totals_per_request(sid, frm, to), query
                if not body["next_cursor"]:
                    break
                query = {**{k: v for k, v in query.items() if k != "offset"}, "cursor": body["next_cursor"]}
                paged += 1
    assert paged
