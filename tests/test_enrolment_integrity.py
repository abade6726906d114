"""A student has at most one enrolment on any date: backdating where it overlaps nothing, transfers as
one operation, a 409 naming the clash, the database's exclusion constraint, imports from a given day,
and the migration that refuses to hide overlapping rows that already exist."""

import io
import os
import textwrap
from datetime import date, timedelta

import psycopg2
import pytest
from alembic import command
from flask_migrate import upgrade
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from app import create_app
from app.academics.models import Enrolment
from app.core.conflicts import clash_message
from app.extensions import db
from app.institutions.calendar import school_today
from app.people.models import Student
from config import database_url
from tests.conftest import assert_problem, demo_today
from tests.embedded import run_embedded

BEFORE = "0004_oneroster"  # the revision before migrations/versions/0005_enrolment_calendar.py


@pytest.fixture(autouse=True)
def in_process(app, tmp_path):
    """Imports run in-process (the job is done when POST returns)."""
    celery = app.extensions["celery"]
    saved = celery.conf.task_always_eager, app.config["EXPORT_DIR"]
    celery.conf.task_always_eager = True
    app.config["EXPORT_DIR"] = str(tmp_path / "exports")
    yield
    celery.conf.task_always_eager, app.config["EXPORT_DIR"] = saved


def ok(resp, status=200):
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_json()


def import_students(admin, csv_text, **query):
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    resp = admin.post(
        "/imports/students" + (f"?{qs}" if qs else ""),
        data={"file": (io.BytesIO(csv_text.encode()), "students.csv")},
        content_type="multipart/form-data",
    )
    job = ok(admin.get(ok(resp, 202) and resp.headers["Location"]))
    assert job["status"] == "done", job
    return job["result"]


def history(admin, sid):
    return ok(admin.get(f"/enrolments?student_id={sid}&sort=start_date&limit=100"))["data"]


def roll_ids(admin, class_id, day):
    roll = ok(admin.get(f"/classes/{class_id}/attendance/{day.isoformat()}"))
    ids = [s["student_id"] for s in roll["students"]]
    assert roll["totals"]["enrolled"] == len(ids)
    return ids


def one_per_date(rows):
    """No two enrolments share a day."""
    spans = sorted((date.fromisoformat(r["start_date"]), r["end_date"]) for r in rows)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end is not None and date.fromisoformat(end) < start, spans


def new_student(admin, adm="INT-1", first="Ines", last="Tegu"):
    return ok(
        admin.post("/students", json={"admission_number": adm, "first_name": first, "last_name": last}), 201
    )["id"]


# --- the reproduction of issue 12 ------------------------------------------------------------------------


def test_import_backdate_reenrol_leaves_one_enrolment_per_date(admin, demo):
    cid = demo["demo_class_id"]
    today = demo_today(demo)  # as the import dates the enrolment
    term_start = demo["current_term"]["start"]
    result = import_students(admin, f"admission_number,first_name,last_name,class_id\nREP-1,Rea,Pro,{cid}\n")
    assert result["enrolled"] == 1
    sid = db.session.execute(select(Student.id).where(Student.admission_number == "REP-1")).scalar_one()
    [first] = history(admin, sid)
    assert first["start_date"] == today.isoformat()
    assert sid not in roll_ids(admin, cid, term_start)  # enrolled from today: not on earlier rolls

    # what the issue did: end it and enrol again from an earlier date -> now a 409 naming the clash
    ok(admin.post(f"/enrolments/{first['id']}/end", json={"end_date": today.isoformat()}))
    body = assert_problem(
        admin.post(
            "/enrolments", json={"student_id": sid, "class_id": cid, "start_date": term_start.isoformat()}
        ),
        409,
        "start_date",
    )
    assert body["clashing_enrolment"]["id"] == first["id"]
    assert f"enrolment {first['id']}" in body["detail"]

    # the way to do it: backdate the enrolment (it overlaps nothing), reopen it
    ok(
        admin.patch(
            f"/enrolments/{first['id']}", json={"start_date": term_start.isoformat(), "end_date": None}
        )
    )
    # re-enrolling now clashes, whatever the class
    for klass in (cid, demo["other_class_id"]):
        assert_problem(
            admin.post(
                "/enrolments",
                json={"student_id": sid, "class_id": klass, "start_date": term_start.isoformat()},
            ),
            409,
        )
    rows = history(admin, sid)
    assert len(rows) == 1 and rows[0]["start_date"] == term_start.isoformat()
    one_per_date(rows)
    assert roll_ids(admin, cid, term_start).count(sid) == 1
    assert roll_ids(admin, cid, today).count(sid) == 1

    # re-importing the same row changes nothing; with an earlier enrolled_from it backdates again
    again = import_students(
        admin,
        "admission_number,first_name,last_name,class_id,enrolled_from\n"
        f"REP-1,Rea,Pro,{cid},{(term_start - timedelta(days=7)).isoformat()}\n",
    )
    assert again["failed"] == 0 and again["enrolled"] == 1
    rows = history(admin, sid)
    assert len(rows) == 1 and rows[0]["start_date"] == (term_start - timedelta(days=7)).isoformat()
    summary = ok(admin.get(f"/attendance/summary?date={term_start.isoformat()}&class_id={cid}"))
    assert summary["classes"][0]["enrolled"] == len(roll_ids(admin, cid, term_start))


def test_two_transfers_on_one_day_are_a_clear_409(admin, demo):
    sid, cid, other = demo["demo_student_id"], demo["demo_class_id"], demo["other_class_id"]
    [current] = [e for e in history(admin, sid) if e["end_date"] is None]
    day = school_today() + timedelta(days=3)
    moved = ok(
        admin.post(
            f"/enrolments/{current['id']}/transfer", json={"class_id": other, "date": day.isoformat()}
        ),
        201,
    )
    assert moved["ended"]["id"] == current["id"]
    assert moved["ended"]["end_date"] == (day - timedelta(days=1)).isoformat()
    assert moved["started"]["class_id"] == other and moved["started"]["start_date"] == day.isoformat()

    # the second transfer of the day, from the new enrolment: it starts that very day
    body = assert_problem(
        admin.post(
            f"/enrolments/{moved['started']['id']}/transfer", json={"class_id": cid, "date": day.isoformat()}
        ),
        409,
        "date",
    )
    assert body["clashing_enrolment"]["id"] == moved["started"]["id"]
    # ... or again from the old one, which has ended
    body = assert_problem(
        admin.post(
            f"/enrolments/{current['id']}/transfer", json={"class_id": other, "date": day.isoformat()}
        ),
        409,
        "date",
    )
    assert body["clashing_enrolment"]["id"] == current["id"]
    # ... or as a plain enrolment on that day
    body = assert_problem(
        admin.post("/enrolments", json={"student_id": sid, "class_id": cid, "start_date": day.isoformat()}),
        409,
    )
    assert body["clashing_enrolment"]["id"] == moved["started"]["id"]
    rows = history(admin, sid)
    assert len(rows) == 2
    one_per_date(rows)


def test_transfer_checks_its_input(admin, demo, hillside_admin):
    sid = demo["demo_student_id"]
    [current] = [e for e in history(admin, sid) if e["end_date"] is None]
    url = f"/enrolments/{current['id']}/transfer"
    day = (school_today() + timedelta(days=2)).isoformat()
    assert_problem(admin.post(url, json={"class_id": demo["demo_class_id"], "date": day}), 422, "class_id")
    assert_problem(admin.post(url, json={"class_id": 999999, "date": day}), 422, "class_id")
    assert_problem(admin.post(url, json={"class_id": demo["other_class_id"]}), 422, "date")
    assert_problem(hillside_admin.post(url, json={"class_id": demo["hillside_class_id"], "date": day}), 404)
    assert len(history(admin, sid)) == 1  # nothing half-written


def test_backdating_into_a_gap_is_allowed_and_an_overlap_is_not(admin, demo):
    sid = new_student(admin)
    a, b = demo["demo_class_id"], demo["other_class_id"]
    ok(
        admin.post(
            "/enrolments",
            json={"student_id": sid, "class_id": a, "start_date": "2020-01-06", "end_date": "2020-06-30"},
        ),
        201,
    )
    ok(admin.post("/enrolments", json={"student_id": sid, "class_id": a, "start_date": "2020-09-01"}), 201)
    # the summer between them is free
    ok(
        admin.post(
            "/enrolments",
            json={"student_id": sid, "class_id": b, "start_date": "2020-07-01", "end_date": "2020-08-31"},
        ),
        201,
    )
    # one day too many on either side
    for start, end in (("2020-06-30", "2020-06-30"), ("2020-08-31", "2020-09-01")):
        assert_problem(
            admin.post(
                "/enrolments",
                json={"student_id": sid, "class_id": b, "start_date": start, "end_date": end},
            ),
            409,
            "start_date",
        )
    rows = history(admin, sid)
    assert len(rows) == 3
    one_per_date(rows)
    # moving the first one's end into the next: 409; an end before the start: 422
    assert_problem(
        admin.patch(f"/enrolments/{rows[0]['id']}", json={"end_date": "2020-07-01"}), 409, "end_date"
    )
    assert_problem(admin.patch(f"/enrolments/{rows[0]['id']}", json={"end_date": "2019-01-01"}), 422)
    assert_problem(
        admin.post(
            "/enrolments",
            json={"student_id": sid, "class_id": b, "start_date": "2021-01-02", "end_date": "2021-01-01"},
        ),
        422,
    )


def test_the_database_refuses_an_overlap_the_service_did_not_see(demo):
    """PostgreSQL's exclusion constraint, for writers that bypass the service (a race, a script)."""
    sid, cid = demo["demo_student_id"], demo["demo_class_id"]
    with pytest.raises(IntegrityError) as caught, db.session.begin_nested():
        db.session.execute(
            insert(Enrolment).values(
                institution_id=demo["demo_institution_id"],
                student_id=sid,
                class_id=cid,
                start_date=demo["current_term"]["start"],
                end_date=demo["current_term"]["start"],  # closed: only the exclusion can refuse it
            )
        )
    assert "one enrolment on any date" in clash_message(caught.value)


def test_import_enrolled_from_lets_earlier_rolls_be_taken(admin, demo):
    cid, term_start = demo["demo_class_id"], demo["current_term"]["start"]
    result = import_students(
        admin,
        "admission_number,first_name,last_name,class_id,enrolled_from\n"
        f"EF-1,Zoë,Łukasiewicz,{cid},{term_start.isoformat()}\n"
        f"EF-2,Bad,Date,{cid},03/02/2024\n"
        "EF-3,No,Class,,2024-01-01\n",
    )
    assert (result["created"], result["enrolled"], result["failed"]) == (1, 1, 2)
    errors = {e["row"]: e["errors"] for e in result["errors"]}
    assert set(errors[3]) == {"enrolled_from"} and set(errors[4]) == {"enrolled_from"}
    sid = db.session.execute(select(Student.id).where(Student.admission_number == "EF-1")).scalar_one()
    assert roll_ids(admin, cid, term_start).count(sid) == 1
    # into another class from an earlier day than the current one: it would overlap -> the row is refused
    other = import_students(
        admin,
        "admission_number,first_name,last_name,class_id,enrolled_from\n"
        f"EF-1,Zoë,Łukasiewicz,{demo['other_class_id']},{(term_start - timedelta(days=1)).isoformat()}\n",
    )
    assert other["failed"] == 1 and "already enrolled" in other["errors"][0]["errors"]["class_id"]
    assert len(history(admin, sid)) == 1


# --- the migration ---------------------------------------------------------------------------------------


def test_migration_lists_overlapping_rows_and_refuses():
    base = os.environ["TEST_DATABASE_URL"]
    server = base.rpartition("/")[0]
    name = f"schoolhouse_overlaps_{os.getpid()}"
    admin = psycopg2.connect(base)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name}")
    url = database_url(f"{server}/{name}")
    try:
        application = create_app("testing", SQLALCHEMY_DATABASE_URI=url)
        engine = create_engine(url)
        with application.app_context():
            upgrade(revision=BEFORE)
            with engine.begin() as conn:
                for sql in (
                    "INSERT INTO institutions (id, name, slug, currency, timezone, grading_scale, "
                    "absence_threshold, created_at, updated_at) VALUES (1, 'Old School', 'old', 'USD', "
                    "'UTC', '[]', 90, now(), now())",
                    "INSERT INTO academic_years (id, institution_id, name, start_date, end_date, is_current, "
                    "created_at, updated_at) VALUES (1, 1, '2024', '2024-01-01', '2024-12-31', true, now(), now())",
                    "INSERT INTO classes (id, institution_id, academic_year_id, name, grade_level, section, "
                    "created_at, updated_at) VALUES (1, 1, 1, '7A', 7, 'A', now(), now()), "
                    "(2, 1, 1, '7B', 7, 'B', now(), now())",
                    "INSERT INTO students (id, institution_id, admission_number, first_name, last_name, status, "
                    "created_at, updated_at) VALUES (1, 1, 'A1', 'Twice', 'Listed', 'active', now(), now())",
                    "INSERT INTO enrolments (id, institution_id, student_id, class_id, start_date, end_date, "
                    "created_at, updated_at) VALUES "
                    "(10, 1, 1, 1, '2024-01-08', '2024-03-01', now(), now()), "
                    "(11, 1, 1, 2, '2024-02-01', NULL, now(), now())",
                ):
                    conn.execute(text(sql))
            config = application.extensions["migrate"].migrate.get_config()
            with pytest.raises(RuntimeError) as refused:
                command.upgrade(config, "head")  # alembic's own: Flask-Migrate's turns errors into exit(1)
            message = str(refused.value)
            assert "1 pair(s) of overlapping enrolments" in message
            assert "enrolment 10 (class 1, 2024-01-08 to 2024-03-01) overlaps enrolment 11" in message
            assert "Nothing was changed" in message
            with engine.connect() as conn:
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == BEFORE
                assert conn.execute(text("SELECT count(*) FROM enrolments")).scalar() == 2  # nothing hidden
            with engine.begin() as conn:  # the school corrects its data; the upgrade then goes through
                conn.execute(text("UPDATE enrolments SET end_date = '2024-01-31' WHERE id = 10"))
            upgrade()
            with engine.connect() as conn:
                names = conn.execute(
                    text("SELECT conname FROM pg_constraint WHERE conrelid = 'enrolments'::regclass")
                ).scalars()
                assert "ex_enrolments_student_dates" in set(names)
            db.engine.dispose()
        engine.dispose()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


# --- the embedded default (SQLite: no exclusion constraint, the service keeps the rule) ------------------

EMBEDDED = textwrap.dedent("""
    import json
    from flask_migrate import upgrade
    from app import create_app
    from app.seed import seed_demo

    app = create_app()
    with app.app_context():
        upgrade()
        ids = seed_demo("embedded-pass-1")
    c = app.test_client()
    tokens = c.post("/api/v1/auth/login", json={"email": "admin@demo-academy.test",
                                                "password": "embedded-pass-1"}).get_json()
    h = {"Authorization": "Bearer " + tokens["access_token"]}
    sid, start = ids["demo_student_id"], ids["current_term"]["start"].isoformat()
    clash = c.post("/api/v1/enrolments", headers=h, json={
        "student_id": sid, "class_id": ids["other_class_id"], "start_date": start, "end_date": start})
    closed = c.post("/api/v1/closures", headers=h, json={"start_date": start, "end_date": start,
                                                          "name": "Snow day"})
    roll = c.put(f"/api/v1/classes/{ids['demo_class_id']}/attendance/{start}", headers=h,
                 json={"records": [{"student_id": sid, "code": "SICK"}]})
    print("RESULT " + json.dumps({"clash": clash.status_code, "clash_body": clash.get_json(),
                                  "closure": closed.status_code, "roll": roll.status_code,
                                  "roll_body": roll.get_json()}))
""")


@pytest.mark.slow
def test_the_embedded_default_keeps_the_rules(tmp_path):
    out = run_embedded(EMBEDDED, tmp_path)
    assert out["clash"] == 409 and out["clash_body"]["clashing_enrolment"]["start_date"], out
    assert out["closure"] == 201
    assert out["roll"] == 422 and "Snow day" in out["roll_body"]["errors"]["date"], out
