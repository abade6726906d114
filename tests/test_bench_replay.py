"""`make bench`'s bare psycopg2 references for search, term attendance and roll call replay the statements
the API ran (bench/plans.py --replay-sql captures them, bench/refapps.py's /replay runs them): the
reference answers from the same rows, and a replayed roll writes what the API's PUT wrote."""

import json
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from app.attendance.models import AttendanceRecord
from app.extensions import db
from bench import plans, refapps


@pytest.fixture
def reference(tmp_path, monkeypatch):
    """The reference app on the test database, replaying `captured` ({set: [[statement, ...], ...]})."""

    def serve(captured):
        path = tmp_path / "replay.json"
        path.write_text(json.dumps(captured))
        monkeypatch.setenv("REF_REPLAY_FILE", str(path))
        refapps._state.clear()
        return refapps.app.test_client()

    monkeypatch.setenv("DATABASE_URL", db.engine.url.render_as_string(hide_password=False))
    yield serve
    if "tx" in refapps._state:
        refapps._state["tx"].close()
    refapps._state.clear()


def test_the_search_replay_answers_with_the_apis_rows(admin, client, reference):
    path = "/api/v1/students?q=a&limit=20"
    status, statements = plans.capture(client, admin.tokens["access_token"], path)
    assert status == 200 and any("students" in s for s in statements)
    ref = reference({"search": [statements]})
    resp = ref.get("/replay/search/0")
    assert resp.status_code == 200
    api_ids = [s["id"] for s in admin.get(path.removeprefix("/api/v1")).get_json()["data"]]
    replayed = resp.get_json()["results"]
    assert api_ids and any([r.get("id") for r in rows][: len(api_ids)] == api_ids for rows in replayed)


def test_a_replayed_roll_writes_what_the_api_wrote(admin, client, demo):
    cid = demo["demo_class_id"]
    roster = admin.get(f"/classes/{cid}/students?limit=200").get_json()["data"]
    day = date.today() - timedelta(days=1)  # a past school day, as bench/run.py's rolls
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    path = f"/api/v1/classes/{cid}/attendance/{day.isoformat()}"

    def roll(status):
        return {"records": [{"student_id": s["id"], "status": status} for s in roster]}

    def marks():
        db.session.expire_all()
        return dict(
            db.session.execute(
                select(AttendanceRecord.student_id, AttendanceRecord.status).where(
                    AttendanceRecord.class_id == cid, AttendanceRecord.date == day
                )
            ).all()
        )

    status, statements = plans.capture(client, admin.tokens["access_token"], path, "PUT", roll("late"))
    assert status == 200 and any("attendance_records" in s for s in statements)
    late = {s["id"]: "late" for s in roster}
    assert marks() == late
    assert admin.put(path.removeprefix("/api/v1"), json=roll("present")).status_code == 200
    assert set(marks().values()) == {"present"}
    for sql in statements:  # the captured statements alone write the late roll again
        db.session.connection().exec_driver_sql(sql)
    assert marks() == late
