"""A roll reads its class's marks through the unique index even when the statistics predate the day's
marks (every school morning: ANALYZE ran overnight, then the whole school's rolls come in, and autovacuum
does not re-analyze a table of millions of marks for a few thousand new ones).

Before app/attendance/services.py probed each student's mark (LATERAL), the planner read the whole
school's marks of the day by date (ix_attendance_institution_date_status, estimated at one row) for
every roll PUT: 70 ms instead of 0.3 ms on the soak's school (bench/soak.py), most of the database's CPU.
"""

from datetime import timedelta

from sqlalchemy import event, text

from app.extensions import db
from tests.test_attendance import LAST_SATURDAY, roll_url

STUDENTS = 3000
PAST_DAYS = 20


def _stale_statistics(demo):
    """Marks of many students on past days, ANALYZEd; then everyone's mark of LAST_SATURDAY, not."""
    iid = demo["demo_institution_id"]
    params = {"iid": iid, "n": STUDENTS, "cid": demo["demo_class_id"]}
    db.session.execute(
        text(
            "INSERT INTO students (institution_id, admission_number, first_name, last_name, status,"
            " created_at, updated_at) SELECT :iid, 'PLAN-' || g, 'Given' || g, 'Family' || g, 'active',"
            " now(), now() FROM generate_series(1, :n) g"
        ),
        params,
    )
    marks = (
        "INSERT INTO attendance_records (institution_id, student_id, class_id, period, date, status, source,"
        " created_at, updated_at) SELECT :iid, s.id, :cid, 0, d, 'present', 'manual', now(), now()"
        " FROM students s, unnest(CAST(:days AS date[])) d"
        " WHERE s.institution_id = :iid AND s.admission_number LIKE 'PLAN-%'"
    )
    past = [LAST_SATURDAY - timedelta(days=n) for n in range(1, PAST_DAYS + 1)]
    db.session.execute(text(marks), {**params, "days": past})
    for table in ("students", "enrolments", "attendance_records"):
        db.session.execute(text(f"ANALYZE {table}"))
    db.session.execute(text(marks), {**params, "days": [LAST_SATURDAY]})


def _plans_of_roll_put(api, class_id, records):
    seen = []

    def on_exec(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "attendance_records" in statement:
            seen.append(cursor.mogrify(statement, params).decode())

    event.listen(db.engine, "before_cursor_execute", on_exec)
    try:
        resp = api.put(roll_url(class_id, LAST_SATURDAY), json={"records": records})
    finally:
        event.remove(db.engine, "before_cursor_execute", on_exec)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json(), ["\n".join(r[0] for r in db.session.execute(text("EXPLAIN " + s))) for s in seen]


def test_a_roll_probes_each_students_mark_even_on_stale_statistics(teacher, demo):
    _stale_statistics(demo)
    class_id = demo["demo_class_id"]
    ids = [s["student_id"] for s in teacher.get(roll_url(class_id, LAST_SATURDAY)).get_json()["students"]]
    records = [{"student_id": sid, "status": "late"} for sid in ids]
    answer, plans = _plans_of_roll_put(teacher, class_id, records)
    assert {s["status"] for s in answer["students"]} == {"late"} and answer["totals"]["late"] == len(ids)
    assert len(plans) == 2  # the before-images (locked) and the roll answer
    for plan in plans:
        assert "ix_attendance_institution_date_status" not in plan, plan
        assert "uq_attendance_student_date_period_subject" in plan, plan
