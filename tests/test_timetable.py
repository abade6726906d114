"""The timetable: periods, rooms and lessons (CRUD), double bookings (409 naming both lessons, in the
service and, on PostgreSQL, in the database under concurrent writers), /me/timetable, the check a
period roll makes, and the timetable exports.

The seed gives both demo schools a bell schedule Monday to Friday (Demo Academy: periods 1-9) and a
clash-free week of lessons for the whole year. Tests that need a free slot make a Saturday or Sunday
period (the seed has none there).
"""

import base64
import io
import re
import textwrap
import threading
import zlib
from datetime import date, timedelta

import openpyxl
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from app.academics.models import AcademicYear, ClassSubject, Enrolment
from app.extensions import db
from app.timetable.models import Lesson, Period
from tests.conftest import assert_problem
from tests.embedded import run_embedded

UNSCOPED = {"skip_tenant": True}
TODAY = date.today()


@pytest.fixture(autouse=True)
def in_process(app, tmp_path):
    """Exports run in-process (Celery eager) into a per-test directory."""
    celery = app.extensions["celery"]
    saved = celery.conf.task_always_eager, app.config["EXPORT_DIR"]
    celery.conf.task_always_eager = True
    app.config["EXPORT_DIR"] = str(tmp_path / "exports")
    yield
    celery.conf.task_always_eager, app.config["EXPORT_DIR"] = saved


def past_weekday(demo, weekday=None):
    """A school day of the current term before today (a Monday-Friday, or the given weekday)."""
    start = demo["current_term"]["start"]
    for n in range(1, 15):
        day = TODAY - timedelta(days=n)
        if day >= start and (day.weekday() == weekday if weekday is not None else day.weekday() < 5):
            return day
    raise AssertionError("no such day in the current term")


def last_saturday():
    return TODAY - timedelta(days=TODAY.weekday() + 2)


def year_of(demo):
    return db.session.get(AcademicYear, demo["demo_academic_year_id"])


def seeded_lesson(class_id, weekday, number):
    return db.session.execute(
        select(Lesson)
        .join(Period, Period.id == Lesson.period_id)
        .where(Lesson.class_id == class_id, Period.weekday == weekday, Period.number == number)
    ).scalar_one()


def new_period(admin, weekday=5, number=1, starts="09:00", ends="09:40", name=None):
    resp = admin.post(
        "/periods",
        json={
            "weekday": weekday,
            "number": number,
            "name": name or f"Extra {number}",
            "starts_at": starts,
            "ends_at": ends,
        },
    )
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def class_subject(class_id, subject_id=None):
    stmt = select(ClassSubject).where(ClassSubject.class_id == class_id)
    if subject_id is not None:
        stmt = stmt.where(ClassSubject.subject_id == subject_id)
    return db.session.execute(stmt.order_by(ClassSubject.id).limit(1)).scalar_one()


def add_lesson(admin, expect=201, **body):
    resp = admin.post("/lessons", json=body)
    assert resp.status_code == expect, resp.get_data(as_text=True)
    return resp.get_json()


def lessons_of(class_subject_id):
    return db.session.execute(
        select(func.count()).select_from(Lesson).where(Lesson.class_subject_id == class_subject_id)
    ).scalar_one()


# --- the seeded timetable ---------------------------------------------------------------------------------


def test_the_seeded_timetables_have_no_clashes_and_adding_one_is_a_409_naming_both(admin, demo):
    for column in (Lesson.teacher_id, Lesson.room_id, Lesson.class_id):
        doubles = db.session.execute(
            select(column, Lesson.period_id, func.count())
            .group_by(column, Lesson.period_id)
            .having(func.count() > 1),  # every seeded lesson lasts the whole year: same slot = overlap
            execution_options=UNSCOPED,
        ).all()
        assert doubles == [], (column, doubles[:3])
    for iid, periods in ((demo["demo_institution_id"], 45), (demo["hillside_institution_id"], 35)):
        n = db.session.execute(
            select(func.count()).select_from(Lesson).where(Lesson.institution_id == iid),
            execution_options=UNSCOPED,
        ).scalar_one()
        assert n > 0
        assert (
            db.session.execute(
                select(func.count()).select_from(Period).where(Period.institution_id == iid),
                execution_options=UNSCOPED,
            ).scalar_one()
            == periods
        )

    # The demo teacher teaches Mathematics in the demo class on Monday in some period: book them in
    # another class then.
    mine = db.session.execute(
        select(Lesson)
        .where(Lesson.teacher_id == demo["demo_teacher_id"], Lesson.weekday == 0)
        .order_by(Lesson.period_id)
        .limit(1)
    ).scalar_one()
    other = class_subject(demo["other_class_id"])
    before = lessons_of(other.id)
    resp = admin.post(
        "/lessons",
        json={
            "class_subject_id": other.id,
            "teacher_id": demo["demo_teacher_id"],
            "period_id": mine.period_id,
        },
    )
    body = assert_problem(resp, 409, "teacher_id")
    assert f"lesson {mine.id}" in body["detail"] and "the new lesson" in body["detail"]
    assert body["lesson"]["id"] is None and "Grade 1A" in body["lesson"]["description"]
    clash_ids = {c["lesson_id"]: c for c in body["clashes"]}
    assert mine.id in clash_ids and "teacher" in clash_ids[mine.id]["on"]
    assert "Mathematics with" in clash_ids[mine.id]["description"]
    # the other class also has its own lesson in that period: the class is double-booked too
    assert any("class" in c["on"] for c in body["clashes"]) and "class_subject_id" in body["errors"]
    assert lessons_of(other.id) == before  # nothing half-written


# --- CRUD ---------------------------------------------------------------------------------------------------


def test_periods_crud_and_overlap_in_a_day(admin, teacher, student, demo):
    made = new_period(admin, weekday=5, number=1, starts="08:00", ends="08:45", name="Saturday 1")
    assert made["starts_at"] == "08:00" and made["ends_at"] == "08:45" and made["weekday"] == 5
    listed = admin.get("/periods?weekday=5").get_json()["data"]
    assert [p["id"] for p in listed] == [made["id"]]
    assert student.get(f"/periods/{made['id']}").status_code == 200  # the bell schedule is no secret
    assert (
        teacher.post(
            "/periods",
            json={"weekday": 5, "number": 2, "name": "x", "starts_at": "09:00", "ends_at": "09:40"},
        ).status_code
        == 403
    )

    # overlapping times on one weekday: a 409 naming the other period
    body = assert_problem(
        admin.post(
            "/periods",
            json={"weekday": 5, "number": 2, "name": "Clash", "starts_at": "08:30", "ends_at": "09:10"},
        ),
        409,
        "starts_at",
    )
    assert f"period {made['id']}" in body["detail"]
    # the same number twice on a weekday, and times in the wrong order
    assert_problem(
        admin.post(
            "/periods",
            json={"weekday": 5, "number": 1, "name": "Again", "starts_at": "12:00", "ends_at": "12:40"},
        ),
        409,
    )
    assert_problem(
        admin.post(
            "/periods",
            json={"weekday": 5, "number": 3, "name": "Back", "starts_at": "12:00", "ends_at": "11:00"},
        ),
        422,
    )
    assert_problem(
        admin.post(
            "/periods",
            json={"weekday": 7, "number": 3, "name": "Day 8", "starts_at": "10:00", "ends_at": "11:00"},
        ),
        422,
        "weekday",
    )
    assert_problem(
        admin.patch(f"/periods/{made['id']}", json={"weekday": 1}), 422, "weekday"
    )  # stays on its day

    changed = admin.patch(f"/periods/{made['id']}", json={"ends_at": "08:50", "name": "First"})
    assert changed.status_code == 200 and changed.get_json()["ends_at"] == "08:50"
    assert admin.delete(f"/periods/{made['id']}").status_code == 204
    assert admin.get(f"/periods/{made['id']}").status_code == 404

    # a period that lessons use cannot be deleted
    used = seeded_lesson(demo["demo_class_id"], 0, 1).period_id
    assert_problem(admin.delete(f"/periods/{used}"), 409)


def test_rooms_crud(admin, teacher, demo):
    room = admin.post("/rooms", json={"name": "Science lab", "capacity": 30})
    assert room.status_code == 201
    rid = room.get_json()["id"]
    assert_problem(admin.post("/rooms", json={"name": "Science lab"}), 409)
    assert teacher.get("/rooms?q=scien").get_json()["data"][0]["id"] == rid
    assert admin.patch(f"/rooms/{rid}", json={"capacity": 32}).get_json()["capacity"] == 32
    assert admin.delete(f"/rooms/{rid}").status_code == 204
    used = seeded_lesson(demo["demo_class_id"], 0, 1).room_id
    assert_problem(admin.delete(f"/rooms/{used}"), 409)


def test_lessons_crud_with_defaults(admin, teacher, demo):
    period = new_period(admin)
    cs = class_subject(demo["demo_class_id"], demo["demo_subject_id"])
    lesson = add_lesson(admin, class_subject_id=cs.id, period_id=period["id"])
    year = year_of(demo)
    assert lesson["teacher_id"] == cs.teacher_id and lesson["class_id"] == demo["demo_class_id"]
    assert lesson["subject_id"] == demo["demo_subject_id"] and lesson["weekday"] == 5
    assert (
        lesson["start_date"] == year.start_date.isoformat()
        and lesson["end_date"] == year.end_date.isoformat()
    )
    assert lesson["room_id"] is None
    assert teacher.get(f"/lessons/{lesson['id']}").status_code == 200
    assert [x["id"] for x in admin.get(f"/lessons?period_id={period['id']}").get_json()["data"]] == [
        lesson["id"]
    ]

    room = admin.post("/rooms", json={"name": "Hall"}).get_json()
    end = (year.start_date + timedelta(days=60)).isoformat()
    changed = admin.patch(f"/lessons/{lesson['id']}", json={"room_id": room["id"], "end_date": end})
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["room_id"] == room["id"] and changed.get_json()["end_date"] == end
    on = (year.start_date + timedelta(days=90)).isoformat()
    assert admin.get(f"/lessons?period_id={period['id']}&on={on}").get_json()["data"] == []

    # bad input: a 422 naming the field, nothing written
    assert_problem(
        admin.post("/lessons", json={"class_subject_id": cs.id, "period_id": 10**9}), 422, "period_id"
    )
    assert_problem(
        admin.post(
            "/lessons",
            json={"class_subject_id": cs.id, "period_id": period["id"], "start_date": "2099-01-01"},
        ),
        422,
        "start_date",
    )
    assert_problem(
        admin.post(
            "/lessons", json={"class_subject_id": cs.id, "period_id": period["id"], "teacher_id": 10**9}
        ),
        422,
        "teacher_id",
    )
    assert_problem(
        admin.patch(f"/lessons/{lesson['id']}", json={"class_subject_id": cs.id}), 422, "class_subject_id"
    )
    assert (
        teacher.post("/lessons", json={"class_subject_id": cs.id, "period_id": period["id"]}).status_code
        == 403
    )
    assert admin.delete(f"/lessons/{lesson['id']}").status_code == 204
    assert admin.get(f"/lessons/{lesson['id']}").status_code == 404


def test_another_schools_lessons_are_not_found(admin, hillside_admin, demo):
    hillside_lesson = db.session.execute(
        select(Lesson.id).where(Lesson.institution_id == demo["hillside_institution_id"]).limit(1),
        execution_options=UNSCOPED,
    ).scalar_one()
    assert_problem(admin.get(f"/lessons/{hillside_lesson}"), 404)
    assert_problem(admin.patch(f"/lessons/{hillside_lesson}", json={"room_id": None}), 404)
    assert_problem(admin.delete(f"/lessons/{hillside_lesson}"), 404)
    assert hillside_lesson not in {x["id"] for x in admin.get("/lessons?limit=200").get_json()["data"]}
    # another school's class subject, period or room cannot be named in a lesson
    foreign_cs = db.session.execute(
        select(ClassSubject.id)
        .where(ClassSubject.institution_id == demo["hillside_institution_id"])
        .limit(1),
        execution_options=UNSCOPED,
    ).scalar_one()
    period = new_period(admin)
    assert_problem(
        admin.post("/lessons", json={"class_subject_id": foreign_cs, "period_id": period["id"]}),
        422,
        "class_subject_id",
    )
    foreign_period = db.session.execute(
        select(Period.id).where(Period.institution_id == demo["hillside_institution_id"]).limit(1),
        execution_options=UNSCOPED,
    ).scalar_one()
    cs = class_subject(demo["demo_class_id"])
    assert_problem(
        admin.post("/lessons", json={"class_subject_id": cs.id, "period_id": foreign_period}),
        422,
        "period_id",
    )
    # and the hillside admin sees only their own school's periods
    theirs = {p["id"] for p in hillside_admin.get("/periods?limit=200").get_json()["data"]}
    assert period["id"] not in theirs and foreign_period in theirs


# --- double bookings ----------------------------------------------------------------------------------------


@pytest.fixture
def slot(admin, demo):
    """A free Saturday period, a lesson in it (demo class, Mathematics, demo teacher, a room) and the
    class subjects of another class to clash with."""
    period = new_period(admin)
    room = admin.post("/rooms", json={"name": "Lab 1"}).get_json()
    cs = class_subject(demo["demo_class_id"], demo["demo_subject_id"])
    lesson = add_lesson(admin, class_subject_id=cs.id, period_id=period["id"], room_id=room["id"])
    others = (
        db.session.execute(
            select(ClassSubject)
            .where(ClassSubject.class_id == demo["other_class_id"])
            .order_by(ClassSubject.id)
        )
        .scalars()
        .all()
    )
    return {"period": period, "room": room, "lesson": lesson, "cs": cs, "others": others}


@pytest.mark.parametrize("what", ["teacher", "room", "class"])
def test_a_double_booking_is_a_409_naming_both_lessons(admin, demo, slot, what):
    body = {"period_id": slot["period"]["id"]}
    if what == "teacher":
        body.update(class_subject_id=slot["others"][0].id, teacher_id=demo["demo_teacher_id"])
        field = "teacher_id"
    elif what == "room":
        body.update(class_subject_id=slot["others"][0].id, room_id=slot["room"]["id"])
        field = "room_id"
    else:  # another subject of the same class, by another teacher, in another room
        other_subject = db.session.execute(
            select(ClassSubject)
            .where(
                ClassSubject.class_id == demo["demo_class_id"],
                ClassSubject.teacher_id != demo["demo_teacher_id"],
            )
            .limit(1)
        ).scalar_one()
        body.update(class_subject_id=other_subject.id)
        field = "class_subject_id"
    before = db.session.execute(select(func.count()).select_from(Lesson)).scalar_one()
    problem = assert_problem(admin.post("/lessons", json=body), 409, field)
    assert [c["lesson_id"] for c in problem["clashes"]] == [slot["lesson"]["id"]]
    assert problem["clashes"][0]["on"] == [what]
    assert f"lesson {slot['lesson']['id']}" in problem["detail"] and "the new lesson" in problem["detail"]
    assert "Saturday period 1" in problem["detail"]
    assert db.session.execute(select(func.count()).select_from(Lesson)).scalar_one() == before

    # moving another lesson into the slot names both ids
    moved = add_lesson(admin, **{**body, "period_id": new_period(admin, weekday=6)["id"]})
    problem = assert_problem(
        admin.patch(f"/lessons/{moved['id']}", json={"period_id": slot["period"]["id"]}), 409, field
    )
    assert (
        problem["lesson"]["id"] == moved["id"] and problem["clashes"][0]["lesson_id"] == slot["lesson"]["id"]
    )
    assert (
        f"lesson {moved['id']}" in problem["detail"] and f"lesson {slot['lesson']['id']}" in problem["detail"]
    )


def test_the_same_slot_in_dates_that_do_not_overlap_is_allowed(admin, demo, slot):
    year = year_of(demo)
    middle = year.start_date + timedelta(days=100)
    lid = slot["lesson"]["id"]
    assert admin.patch(f"/lessons/{lid}", json={"end_date": middle.isoformat()}).status_code == 200
    # the teacher takes another class in that period from the next day: no overlap, no clash
    after = {
        "class_subject_id": slot["others"][0].id,
        "teacher_id": demo["demo_teacher_id"],
        "room_id": slot["room"]["id"],
        "period_id": slot["period"]["id"],
        "start_date": (middle + timedelta(days=1)).isoformat(),
    }
    later = add_lesson(admin, **after)
    assert later["end_date"] == year.end_date.isoformat()
    # one day of overlap is a clash
    problem = assert_problem(admin.post("/lessons", json={**after, "start_date": middle.isoformat()}), 409)
    assert {c["lesson_id"] for c in problem["clashes"]} == {lid, later["id"]}
    # and stretching the first lesson back over the second is one too
    assert_problem(
        admin.patch(f"/lessons/{lid}", json={"end_date": year.end_date.isoformat()}), 409, "teacher_id"
    )


def test_postgresql_refuses_a_double_booking_from_concurrent_writers(app, demo):
    """Two transactions each insert a lesson for the same teacher in the same period: the second waits
    for the first and fails on the exclusion constraint, so both can never be committed (the service's
    check alone could not see an uncommitted row)."""
    iid = demo["demo_institution_id"]
    engine = db.engine
    with engine.begin() as conn:
        pid = conn.execute(
            text(
                "INSERT INTO periods (institution_id, weekday, number, name, starts_at, ends_at, created_at, updated_at) "
                "VALUES (:iid, 6, 20, 'Race', '20:00', '20:40', now(), now()) RETURNING id"
            ),
            {"iid": iid},
        ).scalar_one()
        cs_rows = conn.execute(
            text(
                "SELECT id, class_id, subject_id FROM class_subjects WHERE class_id IN (:a, :b) ORDER BY id"
            ),
            {"a": demo["demo_class_id"], "b": demo["other_class_id"]},
        ).all()
    first = next(r for r in cs_rows if r.class_id == demo["demo_class_id"])
    second = next(r for r in cs_rows if r.class_id == demo["other_class_id"])
    insert = text(
        "INSERT INTO lessons (institution_id, class_subject_id, class_id, subject_id, teacher_id, period_id, "
        "weekday, start_date, end_date, created_at, updated_at) "
        "VALUES (:iid, :cs, :cid, :sid, :tid, :pid, 6, :start, :end, now(), now())"
    )
    start = demo["current_term"]["start"]

    def values(row, days):
        return {
            "iid": iid,
            "cs": row.id,
            "cid": row.class_id,
            "sid": row.subject_id,
            "tid": demo["demo_teacher_id"],
            "pid": pid,
            "start": start,
            "end": start + timedelta(days=days),
        }

    outcome = {}
    try:
        a = engine.connect()
        tx = a.begin()
        a.execute(insert, values(first, 30))

        def racer():
            with engine.connect() as b:
                try:
                    with b.begin():
                        b.execute(insert, values(second, 10))
                    outcome["second"] = "committed"
                except IntegrityError as exc:
                    outcome["second"] = exc.orig.diag.constraint_name

        thread = threading.Thread(target=racer)
        thread.start()
        thread.join(timeout=1)  # it waits on the first transaction's row...
        tx.commit()  # ...until that commits
        a.close()
        thread.join(timeout=30)
        assert outcome == {"second": "ex_lessons_teacher_slot"}
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM lessons WHERE period_id = :pid"), {"pid": pid})
            conn.execute(text("DELETE FROM periods WHERE id = :pid"), {"pid": pid})


# --- /me/timetable -----------------------------------------------------------------------------------------


def test_my_timetable_for_a_teacher_a_student_and_a_guardian(teacher, student, guardian, admin, demo):
    day = past_weekday(demo)
    mine = teacher.get(f"/me/timetable?date={day}")
    assert mine.status_code == 200, mine.get_json()
    body = mine.get_json()
    assert body["date"] == day.isoformat() and body["weekday"] == day.weekday()
    (day_of,) = body["timetables"]
    assert day_of["role"] == "teacher" and day_of["person_id"] == demo["demo_teacher_id"]
    lessons = day_of["lessons"]
    assert lessons and all(x["teacher_id"] == demo["demo_teacher_id"] for x in lessons)
    assert [x["starts_at"] for x in lessons] == sorted(x["starts_at"] for x in lessons)
    assert {x["subject_name"] for x in lessons} == {"Mathematics"}

    (own,) = student.get(f"/me/timetable?date={day}").get_json()["timetables"]
    assert own["role"] == "student" and own["person_id"] == demo["demo_student_id"]
    assert own["class_id"] == demo["demo_class_id"] and len(own["lessons"]) == 9
    assert [x["period_number"] for x in own["lessons"]] == list(range(1, 10))
    assert own["lessons"][0]["starts_at"] == "08:00" and own["lessons"][0]["room_name"] == "Room 7A"

    children = guardian.get(f"/me/timetable?date={day}").get_json()["timetables"]
    assert {c["person_id"] for c in children} == {demo["demo_student_id"], demo["demo_sibling_student_id"]}
    classes = {c["person_id"]: c["class_id"] for c in children}
    assert classes[demo["demo_sibling_student_id"]] == demo["demo_sibling_class_id"]
    assert all(len(c["lessons"]) == 9 for c in children)

    # a Saturday has no lessons; staff without a timetable of their own are refused
    assert student.get(f"/me/timetable?date={last_saturday()}").get_json()["timetables"][0]["lessons"] == []
    assert admin.get("/me/timetable").status_code == 403
    assert_problem(student.get("/me/timetable?date=2024-02-30"), 422, "date")


def test_a_student_not_yet_enrolled_on_the_date_has_no_lessons(student, demo):
    start = db.session.execute(
        select(Enrolment.start_date).where(
            Enrolment.student_id == demo["demo_student_id"], Enrolment.end_date.is_(None)
        )
    ).scalar_one()
    before = start - timedelta(days=7)
    (own,) = student.get(f"/me/timetable?date={before}").get_json()["timetables"]
    assert own["class_id"] is None and own["lessons"] == []


# --- the roll of a period ----------------------------------------------------------------------------------


def roll(api, class_id, day, period, records, subject_id=None):
    body = {"period": period, "records": records}
    if subject_id is not None:
        body["subject_id"] = subject_id
    return api.put(f"/classes/{class_id}/attendance/{day}", json=body)


def test_a_period_roll_is_checked_against_the_lesson(teacher, admin, demo):
    cid, sid = demo["demo_class_id"], demo["demo_student_id"]
    day = past_weekday(demo)
    records = [{"student_id": sid, "status": "present"}]
    lesson = seeded_lesson(cid, day.weekday(), 3)
    assert roll(teacher, cid, day, 3, records).status_code == 200
    assert roll(teacher, cid, day, 3, records, subject_id=lesson.subject_id).status_code == 200

    # a period the day's bell schedule does not have
    body = assert_problem(roll(teacher, cid, day, 12, records), 422, "period")
    assert "no period 12" in body["errors"]["period"]
    # the subject of another lesson
    other_subject = seeded_lesson(cid, day.weekday(), 4).subject_id
    if other_subject != lesson.subject_id:
        assert_problem(roll(teacher, cid, day, 3, records, subject_id=other_subject), 422, "subject_id")
    # a period in which the class has no lesson on that date (the lesson ended the day before)
    assert (
        admin.patch(
            f"/lessons/{lesson.id}", json={"end_date": (day - timedelta(days=1)).isoformat()}
        ).status_code
        == 200
    )
    body = assert_problem(roll(teacher, cid, day, 3, records), 422, "period")
    assert "no lesson in period 3" in body["errors"]["period"]

    # a day without a bell schedule (Saturday) and the whole day's roll are as before
    assert roll(teacher, cid, last_saturday(), 3, records).status_code == 200
    assert roll(teacher, cid, day, 0, records).status_code == 200


# --- exports -----------------------------------------------------------------------------------------------


def export(api, kind, fmt, expect=202, **params):
    resp = api.post("/exports", json={"kind": kind, "format": fmt, "params": params})
    assert resp.status_code == expect, resp.get_data(as_text=True)
    return resp


def downloaded(api, client, resp):
    job = api.get(resp.headers["Location"]).get_json()
    assert job["status"] == "done", job
    got = client.get(job["download_url"])
    assert got.status_code == 200
    return got.data


def pdf_text(data: bytes) -> str:
    """The text drawn on the pages (reportlab compresses each content stream with zlib, and may write it
    in ASCII85)."""
    out = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\n?endstream", data, re.S):
        for decode in (
            zlib.decompress,
            lambda b: zlib.decompress(base64.a85decode(b"<~" + b.strip(), adobe=True)),
        ):
            try:
                out.append(decode(stream).decode("latin-1"))
                break
            except (zlib.error, ValueError):
                continue
    return "".join(re.findall(r"\((.*?)\) Tj", "".join(out)))


def test_timetable_exports_per_class_and_teacher(admin, teacher, client, demo):
    day = past_weekday(demo)
    data = downloaded(
        admin,
        client,
        export(admin, "timetable_class", "xlsx", class_id=demo["demo_class_id"], week_of=str(day)),
    )
    rows = list(openpyxl.load_workbook(io.BytesIO(data)).active.iter_rows(values_only=True))
    assert rows[0] == ("Period", "Time", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
    assert len(rows) == 1 + 9 and rows[1][:2] == ("1", "08:00-08:40")
    lesson = seeded_lesson(demo["demo_class_id"], 0, 1)
    subject = db.session.execute(
        text("SELECT name FROM subjects WHERE id = :id"), {"id": lesson.subject_id}
    ).scalar_one()
    assert rows[1][2].startswith(subject) and "Room 7A" in rows[1][2]
    assert all(cell for row in rows[1:] for cell in row)  # every period of every weekday has a lesson

    pdf = downloaded(
        teacher, client, export(teacher, "timetable_class", "pdf", class_id=demo["demo_class_id"])
    )
    assert pdf.startswith(b"%PDF")
    words = pdf_text(pdf)
    assert "Timetable Grade 7A" in words and "Mathematics" in words and "Monday" in words

    data = downloaded(
        teacher, client, export(teacher, "timetable_teacher", "xlsx", teacher_id=demo["demo_teacher_id"])
    )
    cells = [
        c
        for row in openpyxl.load_workbook(io.BytesIO(data)).active.iter_rows(min_row=2, values_only=True)
        for c in row[2:]
        if c
    ]
    assert cells and all("Mathematics" in c for c in cells)
    pdf = downloaded(
        admin, client, export(admin, "timetable_teacher", "pdf", teacher_id=demo["demo_teacher_id"])
    )
    assert "Mathematics" in pdf_text(pdf)

    # a teacher exports their own timetable and their classes' only; nobody another school's
    another = db.session.execute(
        select(Lesson.teacher_id).where(Lesson.class_id == demo["other_class_id"]).limit(1)
    ).scalar_one()
    assert_problem(export(teacher, "timetable_teacher", "xlsx", expect=404, teacher_id=another), 404)
    assert_problem(
        export(teacher, "timetable_class", "xlsx", expect=404, class_id=demo["other_class_id"]), 404
    )
    assert_problem(
        export(admin, "timetable_teacher", "pdf", expect=404, teacher_id=demo["hillside_teacher_id"]), 404
    )
    assert_problem(
        export(admin, "timetable_class", "csv", expect=422, class_id=demo["demo_class_id"]), 422, "format"
    )


# --- the embedded default (SQLite) -------------------------------------------------------------------------

SQLITE_SCRIPT = textwrap.dedent("""
    import json
    from datetime import date, timedelta
    from flask_migrate import upgrade
    from app import create_app
    from app.seed import seed_demo

    app = create_app()
    app.extensions["celery"].conf.task_always_eager = True
    with app.app_context():
        upgrade()
        ids = seed_demo("embedded-pass-1")
    c = app.test_client()
    def login(email):
        t = c.post("/api/v1/auth/login", json={"email": email, "password": "embedded-pass-1"}).get_json()
        return {"Authorization": "Bearer " + t["access_token"]}
    admin, teacher = login("admin@demo-academy.test"), login("teacher@demo-academy.test")
    period = c.post("/api/v1/periods", headers=admin, json={"weekday": 6, "number": 1, "name": "Sunday 1",
                                                            "starts_at": "09:00", "ends_at": "09:40"}).get_json()
    cs = c.get(f"/api/v1/class-subjects?class_id={ids['demo_class_id']}&teacher_id={ids['demo_teacher_id']}",
               headers=admin).get_json()["data"][0]
    other = c.get(f"/api/v1/class-subjects?class_id={ids['other_class_id']}", headers=admin).get_json()["data"][0]
    first = c.post("/api/v1/lessons", headers=admin, json={"class_subject_id": cs["id"], "period_id": period["id"]})
    clash = c.post("/api/v1/lessons", headers=admin, json={"class_subject_id": other["id"], "period_id": period["id"],
                                                            "teacher_id": ids["demo_teacher_id"]})
    today = date.today()
    monday = today - timedelta(days=today.weekday() + 7)
    day = c.get(f"/api/v1/me/timetable?date={monday}", headers=teacher).get_json()
    export = c.post("/api/v1/exports", headers=admin, json={"kind": "timetable_class", "format": "xlsx",
                                                            "params": {"class_id": ids["demo_class_id"]}})
    job = c.get(export.headers["Location"], headers=admin).get_json()
    print("RESULT " + json.dumps({"first": first.status_code, "clash": clash.status_code,
                                  "clash_ids": [x["lesson_id"] for x in clash.get_json()["clashes"]],
                                  "first_id": first.get_json()["id"],
                                  "lessons": len(day["timetables"][0]["lessons"]), "export": job["status"]}))
""")


@pytest.mark.slow  # starts a subprocess
def test_the_timetable_works_on_the_embedded_sqlite_default(tmp_path):
    out = run_embedded(SQLITE_SCRIPT, tmp_path)
    assert out["first"] == 201 and out["clash"] == 409 and out["clash_ids"] == [out["first_id"]]
    assert out["lessons"] > 0 and out["export"] == "done"
