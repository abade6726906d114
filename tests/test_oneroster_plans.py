"""The OneRoster list pages are index-served (issue 15): over a school of a few thousand students and
enrolments, freshly ANALYZEd, the planned page query of each collection/filter/sort below reads
students and enrolments through indexes, never by a sequential scan. Before app/oneroster/query.py
pushed ORDER BY ... LIMIT into each branch of a collection's UNION ALL (and migration 0013 added the
per-school indexes), every one of these pages sorted the whole branch read by a Seq Scan.

The X-Total-Count statement is not checked: counting every row of a school reads every row of it.
class_subjects is not checked: a test school has too few sections for the planner to prefer an index.
"""

import pytest
from sqlalchemy import event, text

from app.extensions import db
from tests.test_oneroster import R, demo_or  # noqa: F401  (the fixture)

STUDENTS = 4000

PAGES = (
    "/users?limit=100",
    "/users?limit=100&offset=300",
    "/users?limit=100&sort=sourcedId",
    "/users?limit=100&sort=givenName",
    "/users?limit=100&sort=familyName&orderBy=desc",
    "/users?limit=100&sort=dateLastModified",
    "/users?limit=100&sort=identifier",
    "/users?limit=100&sort=roles.role",
    "/users?limit=100&sort=status",
    "/users?limit=100&sort=enabledUser",
    "/users?limit=100&filter=givenName~'iven7'",
    "/users?limit=100&filter=sourcedId%3D'student-{sid}'",
    "/users?limit=100&filter=givenName%3D'Given7'",
    "/users?limit=100&filter=dateLastModified%3E'2000-01-01T00:00:00Z'",
    "/students?limit=100",
    "/demographics?limit=100",
    "/demographics?limit=100&sort=sourcedId",
    "/demographics?limit=100&sort=birthDate",
    "/demographics?limit=100&sort=sex",
    "/demographics?limit=100&filter=sourcedId%3D'student-{sid}'",
    "/enrollments?limit=100",
    "/enrollments?limit=100&sort=beginDate",
    "/enrollments?limit=100&filter=user.sourcedId%3D'student-{sid}'",
    "/enrollments?limit=100&filter=sourcedId%3D'enr-{eid}'",
    # values computed from several tables, served by migration 0016's rows and their indexes
    "/enrollments?limit=100&sort=sourcedId",
    "/enrollments?limit=100&sort=status",
    "/enrollments?limit=100&sort=dateLastModified&orderBy=desc",
    "/enrollments?limit=100&sort=user.sourcedId",
    "/enrollments?limit=100&sort=class.sourcedId",
    "/enrollments?limit=100&sort=role",
    "/enrollments?limit=100&sort=endDate",
    "/enrollments?limit=100&filter=status%3D'active'",
    "/enrollments?limit=100&filter=dateLastModified%3E'2000-01-01T00:00:00Z'",
    "/enrollments?limit=100&filter=class.sourcedId%3D'class-{cid}'",
)


@pytest.fixture
def big_school(demo_or):  # noqa: F811
    iid = int(demo_or.get(f"{R}/orgs").get_json()["orgs"][0]["sourcedId"].split("-")[1])
    db.session.execute(
        text(
            "INSERT INTO students (institution_id, admission_number, first_name, last_name, date_of_birth,"
            " status, created_at, updated_at) SELECT :iid, 'PLAN-' || g, 'Given' || (g % 97),"
            " 'Family' || (g % 89), DATE '2015-01-01' + g % 900, 'active', now(), now()"
            " FROM generate_series(1, :n) g"
        ),
        {"iid": iid, "n": STUDENTS},
    )
    db.session.execute(
        text(
            "INSERT INTO enrolments (institution_id, student_id, class_id, start_date, created_at, updated_at)"
            " SELECT s.institution_id, s.id, c.id, CURRENT_DATE, now(), now() FROM students s,"
            " (SELECT id FROM classes WHERE institution_id = :iid ORDER BY id LIMIT 1) c"
            " WHERE s.institution_id = :iid AND s.admission_number LIKE 'PLAN-%'"
        ),
        {"iid": iid},
    )
    tables = (
        "students",
        "enrolments",
        "class_subjects",
        "classes",
        "teachers",
        "guardians",
        "oneroster_enrollments",
    )
    for table in tables:
        db.session.execute(text(f"ANALYZE {table}"))
    sid, eid, cid = db.session.execute(
        text("SELECT max(student_id), max(id), min(class_id) FROM enrolments WHERE institution_id = :iid"),
        {"iid": iid},
    ).one()
    return demo_or, {"sid": sid, "eid": eid, "cid": cid}


def _page_plans(oneroster, path):
    """The plans of the page statement(s) a request runs (not the count, not the page's lookups)."""
    seen = []

    def on_exec(conn, cursor, statement, params, context, executemany):
        if (
            statement.lstrip().upper().startswith("SELECT")
            and "LIMIT" in statement
            and "count(" not in statement
        ):
            seen.append(cursor.mogrify(statement, params).decode())

    event.listen(db.engine, "before_cursor_execute", on_exec)
    try:
        resp = oneroster.get(path)
    finally:
        event.remove(db.engine, "before_cursor_execute", on_exec)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()
    return ["\n".join(r[0] for r in db.session.execute(text("EXPLAIN " + sql))) for sql in seen]


@pytest.mark.parametrize("page", PAGES)
def test_page_reads_students_and_enrollments_through_indexes(big_school, page):
    oneroster, ids = big_school
    plans = _page_plans(oneroster, R + page.format(**ids))
    assert plans
    for plan in plans:
        for table in ("students", "enrolments", "oneroster_enrollments"):
            assert f"Seq Scan on {table} " not in plan + " ", plan


def test_sourced_id_probes_answer_as_the_text_would(big_school):
    """An id probe names exactly the record whose sourcedId is the text: "student-0N" is none."""
    oneroster, ids = big_school
    sid = ids["sid"]
    one = oneroster.get(f"{R}/users?filter=sourcedId%3D'student-{sid}'").get_json()["users"]
    assert [u["sourcedId"] for u in one] == [f"student-{sid}"]
    assert oneroster.get(f"{R}/users?filter=sourcedId%3D'student-0{sid}'").get_json()["users"] == []
    mine = oneroster.get(f"{R}/enrollments?filter=user.sourcedId%3D'student-{sid}'&limit=1000").get_json()
    assert mine["enrollments"] and {e["user"]["sourcedId"] for e in mine["enrollments"]} == {f"student-{sid}"}
    # the same records by the text (a contains-filter compares the computed sourcedId)
    text = oneroster.get(f"{R}/enrollments?filter=user.sourcedId~'student-{sid}'&limit=1000").get_json()
    exact = [e for e in text["enrollments"] if e["user"]["sourcedId"] == f"student-{sid}"]
    assert exact == mine["enrollments"]
