"""Roll call, history, summaries, chronic absentees and QR check-in.

Dates: the seed marks every past weekday of the current term (period 0), so tests that need a clean
slate use a period the seed never uses, or a weekend day inside the current term (never marked).
"""

import textwrap
import time
from datetime import UTC, date, datetime, timedelta

import itsdangerous.timed
import pytest
from sqlalchemy import event, func, insert, select

from app.academics.models import Enrolment
from app.attendance import services
from app.attendance.models import AttendanceCheckin, AttendanceRecord, AttendanceSession
from app.audit.models import AuditEntry
from app.extensions import db
from app.people.models import Student
from tests.conftest import assert_problem
from tests.embedded import run_embedded

TODAY = date.today()
LAST_SATURDAY = TODAY - timedelta(
    days=TODAY.weekday() + 2
)  # inside the current term, never marked by the seed


def roll_url(class_id, day):
    return f"/classes/{class_id}/attendance/{day}"


def roster(api, class_id, day, period=7):
    body = api.get(roll_url(class_id, day) + f"?period={period}").get_json()
    return [s["student_id"] for s in body["students"]]


def stored(class_id, day, period=None):
    stmt = select(AttendanceRecord).where(AttendanceRecord.class_id == class_id, AttendanceRecord.date == day)
    if period is not None:
        stmt = stmt.where(AttendanceRecord.period == period)
    db.session.expire_all()
    return {r.student_id: r for r in db.session.execute(stmt).scalars()}


def audit_entries(action=None):
    stmt = select(AuditEntry).where(AuditEntry.entity_type == "attendance").order_by(AuditEntry.id)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    return db.session.execute(stmt).scalars().all()


def mixed(ids):
    statuses = ["present", "absent", "late", "excused"]
    return [
        {"student_id": sid, "status": statuses[i % 4], "note": "Bus was late" if i % 4 == 2 else None}
        for i, sid in enumerate(ids)
    ]


def other_class_student(demo):
    return db.session.execute(
        select(Enrolment.student_id)
        .where(Enrolment.class_id == demo["other_class_id"], Enrolment.end_date.is_(None))
        .limit(1)
    ).scalar_one()


# --- PUT roll: idempotent, set-based, audited ------------------------------------------------------------


def test_resending_a_roll_keeps_the_same_state_and_answer(teacher, demo):
    cid, day = demo["demo_class_id"], LAST_SATURDAY
    ids = roster(teacher, cid, day, period=3)
    assert len(ids) >= 20
    audit_before = len(audit_entries())
    body = {"period": 3, "records": mixed(ids)}

    first = teacher.put(roll_url(cid, day), json=body)
    assert first.status_code == 200, first.get_json()
    one = first.get_json()
    assert one["counts"] == {"created": len(ids), "updated": 0, "unchanged": 0}
    assert one["totals"]["unmarked"] == 0 and one["totals"]["enrolled"] == len(ids)
    row = next(s for s in one["students"] if s["student_id"] == ids[2])
    assert row["status"] == "late" and row["note"] == "Bus was late" and row["source"] == "manual"
    assert row["marked_by"]["id"] == teacher.user["id"]
    state = {sid: (r.status, r.note, r.updated_at, r.marked_by_id) for sid, r in stored(cid, day, 3).items()}
    assert len(state) == len(ids)
    created = audit_entries("create")
    assert len(audit_entries()) - audit_before == len(ids)
    assert created[-1].changes["status"][0] is None and created[-1].changes["status"][1] in (
        "present",
        "absent",
        "late",
        "excused",
    )

    second = teacher.put(roll_url(cid, day), json=body)
    assert second.status_code == 200
    two = second.get_json()
    assert two["counts"] == {"created": 0, "updated": 0, "unchanged": len(ids)}
    assert {k: v for k, v in two.items() if k != "counts"} == {k: v for k, v in one.items() if k != "counts"}
    assert {
        sid: (r.status, r.note, r.updated_at, r.marked_by_id) for sid, r in stored(cid, day, 3).items()
    } == state
    assert len(audit_entries()) - audit_before == len(ids)  # the resend appended nothing
    # and GET returns exactly the roll the PUT answered
    got = teacher.get(roll_url(cid, day) + "?period=3").get_json()
    assert got == {k: v for k, v in one.items() if k != "counts"}


def test_a_roll_is_written_by_one_statement_not_one_per_student(teacher, demo):
    cid, day = demo["demo_class_id"], LAST_SATURDAY
    ids = roster(teacher, cid, day)
    seen = []
    conn = db.session.connection()

    def spy(_conn, _cursor, statement, *_):
        seen.append(statement)

    event.listen(conn, "before_cursor_execute", spy)
    try:
        assert teacher.put(roll_url(cid, day), json={"period": 4, "records": mixed(ids)}).status_code == 200
    finally:
        event.remove(conn, "before_cursor_execute", spy)
    writes = [s for s in seen if s.lstrip().upper().startswith("INSERT INTO ATTENDANCE_RECORDS")]
    assert len(writes) == 1 and "ON CONFLICT" in writes[0]
    assert sum("attendance_records" in s for s in seen) <= 3  # before-images, upsert, the roll read back


def test_a_changed_roll_updates_only_what_changed(teacher, admin, demo):
    cid, day = demo["demo_class_id"], LAST_SATURDAY
    ids = roster(teacher, cid, day)
    records = [{"student_id": sid, "status": "present", "note": None} for sid in ids]
    assert teacher.put(roll_url(cid, day), json={"period": 5, "records": records}).status_code == 200
    before = {sid: (r.updated_at, r.marked_by_id) for sid, r in stored(cid, day, 5).items()}
    audit_before = len(audit_entries())

    records[0] = {"student_id": ids[0], "status": "absent", "note": None}
    records[1] = {"student_id": ids[1], "status": "present", "note": "Left at noon"}
    resp = admin.put(roll_url(cid, day), json={"period": 5, "records": records})
    assert resp.status_code == 200
    assert resp.get_json()["counts"] == {"created": 0, "updated": 2, "unchanged": len(ids) - 2}

    after = stored(cid, day, 5)
    assert after[ids[0]].status == "absent" and after[ids[1]].note == "Left at noon"
    for sid in (ids[0], ids[1]):  # changed: new timestamp and marker
        assert after[sid].marked_by_id == admin.user["id"] and after[sid].updated_at > before[sid][0]
    for sid in ids[2:]:  # unchanged: untouched
        assert (after[sid].updated_at, after[sid].marked_by_id) == before[sid]
    new = audit_entries()[audit_before:]
    assert [e.action for e in new] == ["update", "update"]
    by_id = {e.entity_id: e.changes for e in new}
    assert by_id[str(after[ids[0]].id)] == {"status": ["present", "absent"]}
    assert by_id[str(after[ids[1]].id)] == {"note": [None, "Left at noon"]}
    assert all(e.actor_id == admin.user["id"] for e in new)


def test_get_lists_unmarked_students_with_status_null(teacher, demo):
    cid, day = demo["demo_class_id"], LAST_SATURDAY
    ids = roster(teacher, cid, day)
    marked = ids[:5]
    assert (
        teacher.put(
            roll_url(cid, day),
            json={"period": 6, "records": [{"student_id": sid, "status": "absent"} for sid in marked]},
        ).status_code
        == 200
    )
    body = teacher.get(roll_url(cid, day) + "?period=6").get_json()
    assert sorted(s["student_id"] for s in body["students"]) == sorted(ids)
    for s in body["students"]:
        if s["student_id"] in marked:
            assert s["status"] == "absent" and s["marked_by"] and s["marked_at"]
        else:
            assert s["status"] is None and s["source"] is None and s["marked_by"] is None
    assert body["totals"] == {
        "present": 0,
        "absent": 5,
        "late": 0,
        "excused": 0,
        "unmarked": len(ids) - 5,
        "enrolled": len(ids),
    }


def test_the_seeded_day_roll_is_fully_marked(teacher, demo):
    school_day = max(d for d in (TODAY - timedelta(days=n) for n in range(3, 10)) if d.weekday() < 5)
    body = teacher.get(roll_url(demo["demo_class_id"], school_day)).get_json()
    assert body["totals"]["unmarked"] == 0 and body["totals"]["enrolled"] == len(body["students"]) >= 20


def test_a_subject_roll_is_separate_from_the_day_roll(teacher, demo):
    cid, day, subject = demo["demo_class_id"], LAST_SATURDAY, demo["demo_subject_id"]
    ids = roster(teacher, cid, day, period=0)
    resp = teacher.put(
        roll_url(cid, day),
        json={"subject_id": subject, "records": [{"student_id": ids[0], "status": "late"}]},
    )
    assert resp.status_code == 200 and resp.get_json()["subject_id"] == subject
    assert teacher.get(roll_url(cid, day) + f"?subject_id={subject}").get_json()["totals"]["late"] == 1
    day_roll = teacher.get(roll_url(cid, day)).get_json()
    assert day_roll["totals"]["unmarked"] == len(ids)  # the whole-day roll (no subject) is untouched


# --- PUT roll: bad input is rejected whole ---------------------------------------------------------------


def _new_student(demo, adm, start, end=None):
    student = Student(
        institution_id=demo["demo_institution_id"], admission_number=adm, first_name="Test", last_name="Pupil"
    )
    db.session.add(student)
    db.session.flush()
    db.session.add(
        Enrolment(
            institution_id=demo["demo_institution_id"],
            student_id=student.id,
            class_id=demo["demo_class_id"],
            start_date=start,
            end_date=end,
        )
    )
    db.session.flush()
    return student.id


@pytest.mark.parametrize(
    "case",
    [
        "other_class",
        "joined_later",
        "left_before",
        "duplicate",
        "bad_status",
        "future",
        "outside_terms",
        "subject_not_taught",
        "unknown_field",
        "bad_period",
        "bad_date",
        "empty",
    ],
)
def test_a_bad_roll_is_rejected_whole_and_nothing_is_written(teacher, demo, case):
    cid = demo["demo_class_id"]
    day = LAST_SATURDAY
    ids = roster(teacher, cid, day, period=2)
    records = [{"student_id": sid, "status": "present"} for sid in ids[:4]]
    body = {"period": 2, "records": records}
    if case == "other_class":
        records.append({"student_id": other_class_student(demo), "status": "present"})
        field, words = "records[4].student_id", f"not enrolled in this class on {day}"
    elif case == "joined_later":
        records.append(
            {"student_id": _new_student(demo, "ATT-LATE", day + timedelta(days=1)), "status": "late"}
        )
        field, words = "records[4].student_id", "not enrolled"
    elif case == "left_before":
        sid = _new_student(demo, "ATT-LEFT", day - timedelta(days=30), day - timedelta(days=1))
        records.insert(0, {"student_id": sid, "status": "absent"})
        field, words = "records[0].student_id", "not enrolled"
    elif case == "duplicate":
        records.append({"student_id": ids[1], "status": "absent"})
        field, words = "records[4].student_id", "already in records[1]"
    elif case == "bad_status":
        records[3]["status"] = "sleeping"
        field, words = "records[3].status", "present"
    elif case == "future":
        day = TODAY + timedelta(days=2)
        field, words = "date", "future"
    elif case == "outside_terms":
        day = demo["current_term"]["start"] - timedelta(days=7)  # the break before the current term
        field, words = "date", "outside every term"
    elif case == "subject_not_taught":
        body["subject_id"] = 999999
        field, words = "subject_id", "not taught in this class"
    elif case == "unknown_field":
        records[0]["mood"] = "happy"
        field, words = "records[0].mood", "not a known field"
    elif case == "bad_period":
        body["period"] = 99
        field, words = "period", "20"
    elif case == "bad_date":
        day = "2026-02-30"
        field, words = "date", "YYYY-MM-DD"
    else:
        body["records"] = []
        field, words = "records", "at least 1"
    audit_before = len(audit_entries())
    problem = assert_problem(teacher.put(roll_url(cid, day), json=body), 422, field)
    assert words in problem["errors"][field]
    if case != "bad_date":
        assert stored(cid, day) == {}  # not even the valid rows of the roll
    assert len(audit_entries()) == audit_before


def test_every_problem_in_a_roll_is_reported_at_once(teacher, demo):
    cid, day = demo["demo_class_id"], LAST_SATURDAY
    ids = roster(teacher, cid, day)
    resp = teacher.put(
        roll_url(cid, day),
        json={
            "subject_id": 999999,
            "records": [
                {"student_id": ids[0], "status": "present"},
                {"student_id": other_class_student(demo), "status": "absent"},
                {"student_id": ids[0], "status": "late"},
            ],
        },
    )
    assert_problem(resp, 422, "subject_id", "records[1].student_id", "records[2].student_id")


# --- who may take and read a roll ------------------------------------------------------------------------


def test_roll_permissions(teacher, admin, guardian, student, accountant, demo):
    cid, other, day = demo["demo_class_id"], demo["other_class_id"], LAST_SATURDAY
    body = {"period": 2, "records": [{"student_id": other_class_student(demo), "status": "present"}]}
    assert_problem(teacher.get(roll_url(other, day)), 404)
    assert_problem(teacher.put(roll_url(other, day), json=body), 404)
    assert stored(other, day) == {}
    for api in (guardian, student, accountant):
        assert_problem(api.get(roll_url(cid, day)), 403)
        assert_problem(
            api.put(
                roll_url(cid, day),
                json={"records": [{"student_id": demo["demo_student_id"], "status": "present"}]},
            ),
            403,
        )
    assert stored(cid, day) == {}
    assert admin.put(roll_url(other, day), json=body).status_code == 200  # admins take any class's roll
    assert_problem(admin.get(roll_url(999999, day)), 404)


def test_idempotency_key_replays_the_first_answer(teacher, demo):
    cid, day = demo["demo_class_id"], LAST_SATURDAY
    ids = roster(teacher, cid, day)
    body = {"period": 8, "records": mixed(ids)}
    headers = {"Idempotency-Key": "roll-abc-1"}
    first = teacher.put(roll_url(cid, day), json=body, headers=headers)
    assert first.status_code == 200
    audit_after_first = len(audit_entries())
    again = teacher.put(roll_url(cid, day), json=body, headers=headers)
    assert again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.get_json() == first.get_json()  # counts included: the first answer, replayed
    assert again.get_json()["counts"]["created"] == len(ids)
    assert len(audit_entries()) == audit_after_first
    body["records"][0]["status"] = "excused" if body["records"][0]["status"] != "excused" else "present"
    assert_problem(teacher.put(roll_url(cid, day), json=body, headers=headers), 409)
    assert_problem(
        teacher.put(roll_url(cid, day), json=body, headers={"Idempotency-Key": "x" * 201}),
        422,
        "Idempotency-Key",
    )


# --- a student's history -----------------------------------------------------------------------------------


def test_history_totals_and_rate_match_hand_computed_values(teacher, admin, demo):
    cid, sid = demo["demo_class_id"], demo["demo_student_id"]
    sat, sun = LAST_SATURDAY, LAST_SATURDAY + timedelta(days=1)
    plan = {
        (sat, 1): "present",
        (sat, 2): "late",
        (sat, 3): "absent",
        (sun, 1): "present",
        (sun, 2): "present",
        (sun, 3): "excused",
        (sun, 4): "absent",
    }
    for (day, period), status in plan.items():
        assert (
            teacher.put(
                roll_url(cid, day),
                json={"period": period, "records": [{"student_id": sid, "status": status}]},
            ).status_code
            == 200
        )

    url = f"/students/{sid}/attendance?from={sat}&to={sun}"
    body = admin.get(url).get_json()
    assert body["totals"] == {"present": 3, "absent": 2, "late": 1, "excused": 1, "marked": 7}
    assert body["rate"] == 57.1  # (3 + 1) / 7 = 57.142...%
    assert body["student_id"] == sid and body["from"] == sat.isoformat() and body["to"] == sun.isoformat()

    seen, page_url = [], url + "&limit=3"
    while page_url:
        page = admin.get(page_url).get_json()
        assert page["totals"]["marked"] == 7  # totals are for the range, on every page
        seen += page["data"]
        page_url = url + f"&limit=3&cursor={page['next_cursor']}" if page["next_cursor"] else None
    assert len(seen) == 7 and len({r["id"] for r in seen}) == 7
    assert [r["date"] for r in seen] == [sun.isoformat()] * 4 + [sat.isoformat()] * 3  # newest first
    assert {(r["date"], r["period"], r["status"]) for r in seen} == {
        (d.isoformat(), p, s) for (d, p), s in plan.items()
    }

    only_sat = admin.get(f"/students/{sid}/attendance?from={sat}&to={sat}").get_json()
    assert only_sat["totals"]["marked"] == 3 and only_sat["rate"] == 66.7  # 2 / 3, half up
    absences = admin.get(url + "&status=absent").get_json()["data"]
    assert len(absences) == 2 and all(r["status"] == "absent" for r in absences)


def test_history_is_cached_and_a_changed_roll_is_seen_at_once(teacher, admin, demo):
    cid, sid = demo["demo_class_id"], demo["demo_student_id"]
    url = f"/students/{sid}/attendance?from={LAST_SATURDAY}&to={LAST_SATURDAY}"
    mark = {"period": 1, "records": [{"student_id": sid, "status": "present"}]}
    assert teacher.put(roll_url(cid, LAST_SATURDAY), json=mark).status_code == 200
    first = admin.get(url)
    assert first.headers["X-Cache"] == "miss" and first.get_json()["totals"]["present"] == 1
    assert admin.get(url).headers["X-Cache"] == "hit"
    mark["records"][0]["status"] = "absent"
    assert teacher.put(roll_url(cid, LAST_SATURDAY), json=mark).status_code == 200
    after = admin.get(url)
    assert after.headers["X-Cache"] == "miss"
    assert after.get_json()["totals"] == {"present": 0, "absent": 1, "late": 0, "excused": 0, "marked": 1}


def test_history_rate_is_null_when_nothing_is_marked(admin, demo):
    body = admin.get(
        f"/students/{demo['demo_student_id']}/attendance?from={LAST_SATURDAY}&to={LAST_SATURDAY}"
    ).get_json()
    assert body["data"] == [] and body["totals"]["marked"] == 0 and body["rate"] is None


def test_history_bad_range_is_422(admin, demo):
    url = f"/students/{demo['demo_student_id']}/attendance"
    assert_problem(admin.get(url + "?from=2026-03-10&to=2026-03-01"), 422, "from")
    assert_problem(admin.get(url + "?from=yesterday"), 422, "from")
    assert_problem(admin.get(url + "?colour=red"), 422, "colour")


def test_history_is_visible_only_within_scope(guardian, student, teacher, accountant, demo):
    mine = f"/students/{demo['demo_student_id']}/attendance?limit=1"
    for api in (guardian, student, teacher, accountant):
        assert api.get(mine).status_code == 200
    outsider = other_class_student(demo)
    for api in (guardian, student, teacher):
        assert_problem(api.get(f"/students/{outsider}/attendance"), 404)
    assert accountant.get(f"/students/{outsider}/attendance").status_code == 200
    assert_problem(accountant.get("/students/999999999/attendance"), 404)


# --- daily summary -----------------------------------------------------------------------------------------


def test_daily_summary_per_class_and_for_the_school(teacher, admin, demo):
    cid, day = demo["demo_class_id"], LAST_SATURDAY - timedelta(days=7)
    ids = roster(teacher, cid, day)
    n = len(ids)
    statuses = ["absent"] * 3 + ["late", "excused"] + ["present"] * (n - 7)  # the last two stay unmarked
    assert (
        teacher.put(
            roll_url(cid, day),
            json={"records": [{"student_id": sid, "status": st} for sid, st in zip(ids, statuses)]},
        ).status_code
        == 200
    )

    body = admin.get(f"/attendance/summary?date={day}").get_json()
    row = next(c for c in body["classes"] if c["class_id"] == cid)
    assert row == {
        "class_id": cid,
        "name": row["name"],
        "present": n - 7,
        "absent": 3,
        "late": 1,
        "excused": 1,
        "marked": n - 2,
        "enrolled": n,
        "unmarked": 2,
        "rate": round((n - 7 + 1) * 100 / (n - 2) + 1e-9, 1),
    }
    school = body["school"]
    assert school["marked"] == n - 2 and school["absent"] == 3
    assert school["enrolled"] == sum(c["enrolled"] for c in body["classes"]) > n
    assert len(body["classes"]) == 20 and all(
        c["marked"] == 0 for c in body["classes"] if c["class_id"] != cid
    )

    only = admin.get(f"/attendance/summary?date={day}&class_id={cid}").get_json()
    assert [c["class_id"] for c in only["classes"]] == [cid] and only["school"]["enrolled"] == n


def test_daily_summary_for_teachers_covers_their_classes_only(teacher, guardian, accountant, demo):
    body = teacher.get(f"/attendance/summary?date={LAST_SATURDAY}").get_json()
    ids = {c["class_id"] for c in body["classes"]}
    assert demo["demo_class_id"] in ids and demo["other_class_id"] not in ids
    assert_problem(teacher.get(f"/attendance/summary?class_id={demo['other_class_id']}"), 404)
    assert_problem(guardian.get("/attendance/summary"), 403)
    assert_problem(accountant.get("/attendance/summary"), 403)
    assert_problem(teacher.get("/attendance/summary?date=soon"), 422, "date")
    assert_problem(teacher.get("/attendance/summary?period=-1"), 422, "period")


def test_daily_summary_of_a_seeded_school_day_is_fully_marked(admin):
    school_day = max(d for d in (TODAY - timedelta(days=n) for n in range(3, 10)) if d.weekday() < 5)
    school = admin.get(f"/attendance/summary?date={school_day}").get_json()["school"]
    assert school["marked"] == school["enrolled"] == 600 and school["unmarked"] == 0
    assert 80 < school["rate"] <= 100


# --- chronic absentees ------------------------------------------------------------------------------------


@pytest.fixture
def absentee_weekend(teacher, demo):
    """A weekend inside the term with only these marks: A absent twice, B present then absent,
    C late then present, everyone else present twice."""
    cid = demo["demo_class_id"]
    sat = LAST_SATURDAY - timedelta(days=14)
    sun = sat + timedelta(days=1)
    ids = roster(teacher, cid, sat)
    a, b, c = ids[:3]
    plan = {sat: {a: "absent", b: "present", c: "late"}, sun: {a: "absent", b: "absent", c: "present"}}
    for day, special in plan.items():
        assert (
            teacher.put(
                roll_url(cid, day),
                json={"records": [{"student_id": sid, "status": special.get(sid, "present")} for sid in ids]},
            ).status_code
            == 200
        )
    return sat, sun, a, b


def test_chronic_absentees_lowest_rate_first(admin, absentee_weekend):
    sat, sun, a, b = absentee_weekend
    body = admin.get(f"/attendance/chronic-absentees?from={sat}&to={sun}").get_json()
    assert body["threshold"] == 90 and body["from"] == sat.isoformat() and body["to"] == sun.isoformat()
    assert [(r["student_id"], r["rate"]) for r in body["data"]] == [(a, 0.0), (b, 50.0)]
    assert {k: body["data"][1][k] for k in ("present", "absent", "late", "excused", "marked")} == {
        "present": 1,
        "absent": 1,
        "late": 0,
        "excused": 0,
        "marked": 2,
    }
    low = admin.get(f"/attendance/chronic-absentees?from={sat}&to={sun}&threshold=40").get_json()["data"]
    assert [r["student_id"] for r in low] == [a]
    everyone_below_full = admin.get(
        f"/attendance/chronic-absentees?from={sat}&to={sun}&threshold=100"
    ).get_json()
    assert [r["student_id"] for r in everyone_below_full["data"]] == [a, b]  # late counts as attended


def test_chronic_absentees_default_threshold_is_the_institutions(admin, absentee_weekend):
    sat, sun, a, _ = absentee_weekend
    assert admin.patch("/institution", json={"absence_threshold": 30}).status_code == 200
    body = admin.get(f"/attendance/chronic-absentees?from={sat}&to={sun}").get_json()
    assert body["threshold"] == 30 and [r["student_id"] for r in body["data"]] == [a]


def test_chronic_absentees_pages_with_a_cursor(admin, absentee_weekend):
    sat, sun, a, b = absentee_weekend
    url = f"/attendance/chronic-absentees?from={sat}&to={sun}&limit=1"
    first = admin.get(url).get_json()
    assert [r["student_id"] for r in first["data"]] == [a] and first["next_cursor"]
    second = admin.get(url + f"&cursor={first['next_cursor']}").get_json()
    assert [r["student_id"] for r in second["data"]] == [b] and second["next_cursor"] is None
    assert_problem(admin.get(url + "&cursor=nonsense"), 422, "cursor")


def test_chronic_absentees_bad_input_and_roles(
    admin, teacher, guardian, student, accountant, absentee_weekend
):
    sat, sun, a, b = absentee_weekend
    base = f"/attendance/chronic-absentees?from={sat}&to={sun}"
    for bad in ("abc", "101", "-1", "90.55"):
        assert_problem(admin.get(base + f"&threshold={bad}"), 422, "threshold")
    assert_problem(admin.get(f"/attendance/chronic-absentees?from={sun}&to={sat}"), 422, "from")
    assert_problem(admin.get(base + "&limit=0"), 422, "limit")
    assert [r["student_id"] for r in teacher.get(base).get_json()["data"]] == [a, b]  # their own class
    for api in (guardian, student, accountant):
        assert_problem(api.get(base), 403)


def test_chronic_absentees_are_cached_until_a_mark_or_a_setting_changes(
    admin, teacher, absentee_weekend, demo
):
    sat, sun, a, b = absentee_weekend
    url = f"/attendance/chronic-absentees?from={sat}&to={sun}"
    for api in (admin, teacher):  # each caller's own answer (a teacher's is scoped to their classes)
        first, again = api.get(url), api.get(url)
        assert (first.headers["X-Cache"], again.headers["X-Cache"]) == ("miss", "hit")
        assert again.get_json() == first.get_json() and [
            r["student_id"] for r in first.get_json()["data"]
        ] == [a, b]
    # B's Sunday absence corrected: B is no longer below 90%
    cid = demo["demo_class_id"]
    records = [
        {"student_id": sid, "status": "absent" if sid == a else "present"}
        for sid in roster(teacher, cid, sun)
    ]
    assert teacher.put(roll_url(cid, sun), json={"records": records}).status_code == 200
    after = admin.get(url)
    assert after.headers["X-Cache"] == "miss" and [r["student_id"] for r in after.get_json()["data"]] == [a]
    # the school's threshold is part of the answer too
    assert admin.patch("/institution", json={"absence_threshold": 100}).status_code == 200
    lowered = admin.get(url)
    assert lowered.headers["X-Cache"] == "miss" and lowered.get_json()["threshold"] == 100


# --- QR check-in -------------------------------------------------------------------------------------------


def open_session(api, class_id, **body):
    resp = api.post(f"/classes/{class_id}/attendance-sessions", json=body)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def test_qr_token_checks_a_student_in_once(teacher, student, admin, demo):
    cid, sid = demo["demo_class_id"], demo["demo_student_id"]
    session = open_session(teacher, cid, period=9, minutes=10)
    assert session["token"] and session["qr_svg"].startswith("<svg") and "</svg>" in session["qr_svg"]
    opened, expires = (
        datetime.fromisoformat(session[k].replace("Z", "+00:00")) for k in ("opened_at", "expires_at")
    )
    assert expires - opened == timedelta(minutes=10) and session["checked_in"] == 0
    day = session["date"]
    # the teacher had marked the student absent for that lesson; scanning the code corrects it
    assert (
        teacher.put(
            roll_url(cid, day), json={"period": 9, "records": [{"student_id": sid, "status": "absent"}]}
        ).status_code
        == 200
    )
    audit_before = len(audit_entries())

    resp = student.post("/attendance/check-in", json={"token": session["token"]})
    assert resp.status_code == 201, resp.get_json()
    out = resp.get_json()
    assert out["student_id"] == sid and out["status"] == "present" and out["source"] == "qr"
    record = stored(cid, date.fromisoformat(day), 9)[sid]
    assert (record.status, record.source, record.marked_by_id) == ("present", "qr", student.user["id"])
    new = audit_entries()[audit_before:]
    assert len(new) == 1 and new[0].changes["status"] == ["absent", "present"]
    assert new[0].changes["source"] == ["manual", "qr"]

    again = assert_problem(student.post("/attendance/check-in", json={"token": session["token"]}), 409)
    assert "already checked in" in again["detail"]
    assert (
        db.session.execute(
            select(func.count()).where(AttendanceCheckin.session_id == session["id"])
        ).scalar_one()
        == 1
    )
    assert len(audit_entries()) == audit_before + 1

    detail = teacher.get(f"/attendance-sessions/{session['id']}").get_json()
    assert detail["checked_in"] == 1 and "token" not in detail and "qr_svg" not in detail
    assert admin.get(f"/attendance-sessions/{session['id']}").status_code == 200


def test_opening_a_session_rules(teacher, admin, guardian, student, demo):
    assert_problem(teacher.post(f"/classes/{demo['other_class_id']}/attendance-sessions", json={}), 404)
    assert_problem(student.post(f"/classes/{demo['demo_class_id']}/attendance-sessions", json={}), 403)
    assert_problem(
        teacher.post(f"/classes/{demo['demo_class_id']}/attendance-sessions", json={"minutes": 61}),
        422,
        "minutes",
    )
    assert_problem(
        teacher.post(f"/classes/{demo['demo_class_id']}/attendance-sessions", json={"subject_id": 999999}),
        422,
        "subject_id",
    )
    session = open_session(teacher, demo["demo_class_id"], subject_id=demo["demo_subject_id"])
    default = datetime.fromisoformat(session["expires_at"].replace("Z", "+00:00")) - datetime.fromisoformat(
        session["opened_at"].replace("Z", "+00:00")
    )
    assert default == timedelta(minutes=5) and session["subject_id"] == demo["demo_subject_id"]
    other = open_session(admin, demo["other_class_id"])
    assert_problem(teacher.get(f"/attendance-sessions/{other['id']}"), 404)
    assert_problem(guardian.get(f"/attendance-sessions/{session['id']}"), 403)


def _session_row(class_id, institution_id, minutes_left=5):
    now = datetime.now(UTC)
    return db.session.execute(
        insert(AttendanceSession)
        .values(
            institution_id=institution_id,
            class_id=class_id,
            period=0,
            date=TODAY,
            opened_at=now - timedelta(minutes=30),
            expires_at=now + timedelta(minutes=minutes_left),
        )
        .returning(AttendanceSession.id)
    ).scalar_one()


def test_expired_tampered_and_foreign_tokens_get_clear_problems(student, teacher, demo, monkeypatch):
    sid, cid = demo["demo_student_id"], demo["demo_class_id"]

    past = _session_row(cid, demo["demo_institution_id"], minutes_left=-10)
    token = services._serializer().dumps({"s": past, "i": demo["demo_institution_id"]})
    body = assert_problem(student.post("/attendance/check-in", json={"token": token}), 410)
    assert "expired" in body["detail"]

    live = open_session(teacher, cid)
    now = time.time()
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: int(now) - 2 * 3600)
    old_signature = services._serializer().dumps({"s": live["id"], "i": demo["demo_institution_id"]})
    monkeypatch.undo()
    assert (
        "expired"
        in assert_problem(student.post("/attendance/check-in", json={"token": old_signature}), 410)["detail"]
    )

    tampered = live["token"][:-2] + ("AA" if not live["token"].endswith("AA") else "BB")
    assert_problem(student.post("/attendance/check-in", json={"token": tampered}), 422, "token")
    forged = services.URLSafeTimedSerializer("not-our-key", salt="attendance-qr").dumps(
        {"s": live["id"], "i": demo["demo_institution_id"]}
    )
    assert_problem(student.post("/attendance/check-in", json={"token": forged}), 422, "token")
    assert_problem(student.post("/attendance/check-in", json={"token": ""}), 422, "token")

    hill = _session_row(demo["hillside_class_id"], demo["hillside_institution_id"])
    for payload in (
        {"s": hill, "i": demo["hillside_institution_id"]},
        {"s": hill, "i": demo["demo_institution_id"]},
    ):
        foreign = services._serializer().dumps(payload)
        assert_problem(student.post("/attendance/check-in", json={"token": foreign}), 404)

    other = _session_row(demo["other_class_id"], demo["demo_institution_id"])
    other_token = services._serializer().dumps({"s": other, "i": demo["demo_institution_id"]})
    body = assert_problem(student.post("/attendance/check-in", json={"token": other_token}), 403)
    assert "not enrolled" in body["detail"]

    assert_problem(teacher.post("/attendance/check-in", json={"token": live["token"]}), 403)
    assert (
        db.session.execute(select(func.count()).where(AttendanceCheckin.student_id == sid)).scalar_one() == 0
    )


# --- the embedded default (SQLite) runs the same upsert ----------------------------------------------------

SQLITE_SCRIPT = textwrap.dedent("""
    import json
    from datetime import date, timedelta
    from flask_migrate import upgrade
    from app import create_app
    from app.seed import seed_demo

    app = create_app()
    with app.app_context():
        upgrade()
        ids = seed_demo("embedded-pass-1")
    c = app.test_client()
    def login(email):
        t = c.post("/api/v1/auth/login", json={"email": email, "password": "embedded-pass-1"}).get_json()
        return {"Authorization": "Bearer " + t["access_token"]}
    teacher, student = login("teacher@demo-academy.test"), login("student@demo-academy.test")
    today = date.today()
    day = today - timedelta(days=today.weekday() + 2)
    url = f"/api/v1/classes/{ids['demo_class_id']}/attendance/{day}?period=3"
    roll = c.get(url, headers=teacher).get_json()
    records = [{"student_id": s["student_id"], "status": "present"} for s in roll["students"]]
    put = f"/api/v1/classes/{ids['demo_class_id']}/attendance/{day}"
    first = c.put(put, json={"period": 3, "records": records}, headers=teacher).get_json()
    second = c.put(put, json={"period": 3, "records": records}, headers=teacher).get_json()
    records[0]["status"] = "absent"
    third = c.put(put, json={"period": 3, "records": records}, headers=teacher).get_json()
    session = c.post(f"/api/v1/classes/{ids['demo_class_id']}/attendance-sessions", json={"period": 9},
                     headers=teacher).get_json()
    checkin = c.post("/api/v1/attendance/check-in", json={"token": session["token"]}, headers=student)
    twice = c.post("/api/v1/attendance/check-in", json={"token": session["token"]}, headers=student)
    print("RESULT " + json.dumps({"counts": [first["counts"], second["counts"], third["counts"]],
                                  "same": first["students"] == second["students"],
                                  "checkin": [checkin.status_code, twice.status_code]}))
""")


@pytest.mark.slow  # starts a subprocess
def test_roll_and_check_in_work_on_the_embedded_sqlite_default(tmp_path):
    out = run_embedded(SQLITE_SCRIPT, tmp_path)
    n = out["counts"][0]["created"]
    assert n >= 20 and out["same"]
    assert out["counts"][1] == {"created": 0, "updated": 0, "unchanged": n}
    assert out["counts"][2] == {"created": 0, "updated": 1, "unchanged": n - 1}
    assert out["checkin"] == [201, 409]
