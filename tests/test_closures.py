"""The school calendar: closures (holidays, strike days, exam weeks) for the school or one class refuse a
roll and drop out of the attendance statistics; attendance codes per school map to a status."""

from datetime import timedelta

from sqlalchemy import func, select

from app.attendance.models import AttendanceRecord
from app.extensions import db
from tests.conftest import assert_problem


def ok(resp, status=200):
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_json()


def term_day(demo, n):
    """A past school day of the current term with seeded marks (the term starts on a Monday)."""
    return (demo["current_term"]["start"] + timedelta(days=n)).isoformat()


def roll(api, class_id, day, records):
    return api.put(f"/classes/{class_id}/attendance/{day}", json={"records": records})


def marks_on(student_id, day):
    return db.session.scalar(
        select(func.count())
        .select_from(AttendanceRecord)
        .where(AttendanceRecord.student_id == student_id, AttendanceRecord.date == day)
    )


def test_a_roll_on_a_closed_day_is_refused_and_the_rate_counts_open_days_only(admin, teacher, demo):
    sid, cid, term = demo["demo_student_id"], demo["demo_class_id"], demo["demo_current_term_id"]
    day = term_day(demo, 1)
    span = f"from={demo['current_term']['start'].isoformat()}"
    before = ok(teacher.get(f"/students/{sid}/attendance?{span}"))["totals"]
    card_before = ok(teacher.get(f"/students/{sid}/report-card?term_id={term}"))["attendance"]
    on_day = marks_on(sid, day)
    assert on_day == 1  # the seeded whole-day mark

    closure = ok(
        admin.post(
            "/closures",
            json={"start_date": day, "end_date": day, "kind": "strike", "name": "Teachers' strike"},
        ),
        201,
    )
    body = assert_problem(roll(teacher, cid, day, [{"student_id": sid, "status": "present"}]), 422, "date")
    assert "Teachers' strike" in body["errors"]["date"] and "closed day" in body["errors"]["date"]
    assert "Teachers' strike" in ok(teacher.get(f"/classes/{cid}/attendance/{day}"))["closure"]

    after = ok(teacher.get(f"/students/{sid}/attendance?{span}"))["totals"]
    assert after["marked"] == before["marked"] - on_day
    card_after = ok(teacher.get(f"/students/{sid}/report-card?term_id={term}"))["attendance"]
    assert card_after["total"] == card_before["total"] - on_day
    summary = ok(admin.get(f"/attendance/summary?date={day}"))
    assert summary["school"]["marked"] == 0 and summary["school"]["rate"] is None
    assert marks_on(sid, day) == on_day  # kept, just not counted

    ok(admin.delete(f"/closures/{closure['id']}"), 204)
    ok(roll(teacher, cid, day, [{"student_id": sid, "status": "present"}]))
    assert ok(teacher.get(f"/students/{sid}/attendance?{span}"))["totals"]["marked"] == before["marked"]


def test_a_class_closure_closes_that_class_only(admin, demo):
    cid, other = demo["demo_class_id"], demo["other_class_id"]
    day = term_day(demo, 2)
    ok(
        admin.post(
            "/closures",
            json={
                "class_id": other,
                "start_date": day,
                "end_date": day,
                "kind": "exam",
                "name": "Mock exams",
            },
        ),
        201,
    )
    other_student = ok(admin.get(f"/classes/{other}/students?limit=1"))["data"][0]["id"]
    assert_problem(roll(admin, other, day, [{"student_id": other_student, "status": "present"}]), 422, "date")
    ok(roll(admin, cid, day, [{"student_id": demo["demo_student_id"], "status": "present"}]))


def test_closures_crud_and_their_rules(admin, teacher, hillside_admin, demo):
    day = term_day(demo, 3)
    base = {"start_date": day, "end_date": day, "name": "Founders' day"}
    assert_problem(teacher.post("/closures", json=base), 403)
    assert_problem(admin.post("/closures", json={**base, "end_date": term_day(demo, 0)}), 422)
    assert_problem(
        admin.post("/closures", json={**base, "class_id": demo["hillside_class_id"]}), 422, "class_id"
    )
    assert_problem(admin.post("/closures", json={**base, "kind": "party"}), 422, "kind")
    made = ok(admin.post("/closures", json=base), 201)
    assert made["kind"] == "holiday" and made["class_id"] is None
    listed = ok(teacher.get("/closures?kind=holiday&limit=100"))["data"]
    assert made["id"] in [c["id"] for c in listed]
    assert [c["start_date"] for c in listed] == sorted(c["start_date"] for c in listed)
    assert_problem(hillside_admin.get(f"/closures/{made['id']}"), 404)
    assert_problem(
        admin.patch(f"/closures/{made['id']}", json={"start_date": term_day(demo, 5)}), 422, "end_date"
    )
    changed = ok(
        admin.patch(f"/closures/{made['id']}", json={"end_date": term_day(demo, 4), "kind": "other"})
    )
    assert (changed["end_date"], changed["kind"]) == (term_day(demo, 4), "other")
    assert ok(admin.get(f"/closures/{made['id']}"))["end_date"] == term_day(demo, 4)


def test_the_demo_school_has_a_calendar(admin):
    closures = ok(admin.get("/closures?limit=100"))["data"]
    assert {"holiday", "exam"} <= {c["kind"] for c in closures}
    codes = {c["code"]: c["status"] for c in ok(admin.get("/attendance-codes?limit=100"))["data"]}
    assert codes["SICK"] == "excused" and codes["SUSP"] == "absent" and codes["TRIP"] == "present"


def test_attendance_codes_map_to_a_status(admin, teacher, hillside_admin, demo):
    sid, cid = demo["demo_student_id"], demo["demo_class_id"]
    day = term_day(demo, 3)
    saved = ok(roll(teacher, cid, day, [{"student_id": sid, "code": "SICK", "note": "Flu"}]))
    row = next(s for s in saved["students"] if s["student_id"] == sid)
    assert (row["status"], row["code"], row["note"]) == ("excused", "SICK", "Flu")
    # the same roll again changes nothing; the code dropped is a change
    assert (
        ok(roll(teacher, cid, day, [{"student_id": sid, "code": "SICK", "note": "Flu"}]))["counts"][
            "unchanged"
        ]
        == 1
    )
    history = ok(teacher.get(f"/students/{sid}/attendance?from={day}&to={day}"))
    assert history["totals"]["excused"] == 1 and history["data"][0]["code_id"] is not None

    assert_problem(
        roll(teacher, cid, day, [{"student_id": sid, "code": "SICK", "status": "present"}]),
        422,
        "records[0].status",
    )
    assert_problem(roll(teacher, cid, day, [{"student_id": sid, "code": "NOPE"}]), 422, "records[0].code")
    assert_problem(roll(teacher, cid, day, [{"student_id": sid}]), 422)
    hill = ok(
        hillside_admin.post(
            "/attendance-codes", json={"code": "HILL", "label": "Hill walk", "status": "present"}
        ),
        201,
    )
    assert_problem(roll(teacher, cid, day, [{"student_id": sid, "code": "HILL"}]), 422, "records[0].code")
    assert_problem(admin.get(f"/attendance-codes/{hill['id']}"), 404)

    # codes are the admin's; the status a code counts as is fixed; a code in use is not deleted
    assert_problem(teacher.post("/attendance-codes", json={"code": "X", "label": "X", "status": "late"}), 403)
    assert_problem(
        admin.post("/attendance-codes", json={"code": "SICK", "label": "Again", "status": "absent"}), 409
    )
    choir = ok(
        admin.post("/attendance-codes", json={"code": "CHOIR", "label": "Choir tour", "status": "present"}),
        201,
    )
    assert_problem(admin.patch(f"/attendance-codes/{choir['id']}", json={"status": "absent"}), 422, "status")
    assert ok(admin.patch(f"/attendance-codes/{choir['id']}", json={"label": "Choir"}))["label"] == "Choir"
    sick = next(c for c in ok(admin.get("/attendance-codes?code=SICK"))["data"])
    assert_problem(admin.delete(f"/attendance-codes/{sick['id']}"), 409)
    ok(admin.delete(f"/attendance-codes/{choir['id']}"), 204)
