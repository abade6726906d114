"""OneRoster enrollments and classes as rows (migration 0016_oneroster_rows): on PostgreSQL the tables
`oneroster_enrollments` and `oneroster_classes` that /enrollments and /classes read, so every filter
and sort reads an index, are kept by triggers equal to what the views `<table>_live` compute from
enrolments, students, classes, class subjects and subjects. Each write below goes through the native
API (or a bulk statement, as an import or the rollover runs), then each table must equal its view and
the OneRoster API must show the change."""

import threading
import time
from datetime import timedelta

from sqlalchemy import select, text, update

from app.academics.models import ClassSubject, Enrolment, SchoolClass
from app.extensions import db
from app.people.models import Student, Teacher
from tests.conftest import demo_today
from tests.test_oneroster import R, demo_or  # noqa: F401 - fixture

COLUMNS = {
    "oneroster_enrollments": "institution_id, kind, k, k2, sourced_id, status, dlm, role, is_primary, "
    "begin_date, end_date, user_sid, class_sid, user_id, class_ref, enrolment_id, class_id, section_id",
    "oneroster_classes": "institution_id, kind, k, k2, sourced_id, status, dlm, title, class_code, class_type, "
    "grade, course_sid, year_id, subject, subject_id, class_id, section_id",
}


def _differences(table):
    """Rows of the table its view does not give, and rows of the view missing from the table."""
    cols = COLUMNS[table]
    extra = f"SELECT {cols} FROM {table} EXCEPT SELECT {cols} FROM {table}_live"
    missing = f"SELECT {cols} FROM {table}_live EXCEPT SELECT {cols} FROM {table}"
    return db.session.execute(text(extra)).all(), db.session.execute(text(missing)).all()


def _assert_kept():
    db.session.flush()
    for table in COLUMNS:
        assert _differences(table) == ([], []), table
        assert db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() > 0


def _another_teacher(iid, than):
    return db.session.scalar(
        select(Teacher.id).where(Teacher.institution_id == iid, Teacher.id != than).order_by(Teacher.id)
    )


def _user_of(oneroster, enrollment_sid):
    return oneroster.get(f"{R}/enrollments/{enrollment_sid}").get_json()["enrollment"]["user"]["sourcedId"]


def _of_user(oneroster, user_sid):
    page = oneroster.get(f"{R}/enrollments?filter=user.sourcedId='{user_sid}'&limit=1000").get_json()
    return {e["sourcedId"]: e for e in page["enrollments"]}


def test_the_seeded_schools_rows_equal_the_views():
    _assert_kept()
    for table, kinds in (("oneroster_enrollments", {0, 1, 2, 3}), ("oneroster_classes", {0, 1})):
        by_kind = dict(db.session.execute(text(f"SELECT kind, count(*) FROM {table} GROUP BY kind")).all())
        assert set(by_kind) == kinds, (table, by_kind)


def test_a_changed_student_moves_its_enrollments_in_a_delta(demo_or, admin, demo):  # noqa: F811
    sid = demo["demo_student_id"]
    assert admin.patch(f"/students/{sid}", json={"first_name": "Renamed"}).status_code == 200
    _assert_kept()
    newest = demo_or.get(f"{R}/enrollments?sort=dateLastModified&orderBy=desc&limit=1").get_json()
    assert newest["enrollments"][0]["user"]["sourcedId"] == f"student-{sid}"
    mine = _of_user(demo_or, f"student-{sid}")
    assert len({e["dateLastModified"] for e in mine.values() if e["status"] == "active"}) == 1

    assert admin.delete(f"/students/{sid}").status_code == 204
    _assert_kept()
    assert mine.keys() <= _of_user(demo_or, f"student-{sid}").keys()
    assert {e["status"] for e in _of_user(demo_or, f"student-{sid}").values()} == {"tobedeleted"}


def test_a_subject_added_to_a_class_enrolls_its_students_and_teacher(demo_or, admin, demo):  # noqa: F811
    cid, iid = demo["demo_class_id"], demo["demo_institution_id"]
    subject = admin.post("/subjects", json={"name": "Astronomy", "code": "AST"}).get_json()
    teacher = db.session.scalar(
        select(Teacher.id).where(Teacher.institution_id == iid).order_by(Teacher.id.desc())
    )
    made = admin.post(
        "/class-subjects", json={"class_id": cid, "subject_id": subject["id"], "teacher_id": teacher}
    )
    assert made.status_code == 201, made.get_json()
    section = made.get_json()["id"]
    _assert_kept()
    students = set(
        db.session.scalars(
            select(Enrolment.student_id).where(Enrolment.class_id == cid, Enrolment.end_date.is_(None))
        )
    )
    page = demo_or.get(f"{R}/enrollments?filter=class.sourcedId='section-{section}'&limit=1000").get_json()
    users = {e["user"]["sourcedId"] for e in page["enrollments"] if e["status"] == "active"}
    assert users == {f"student-{s}" for s in students} | {f"teacher-{teacher}"}

    other = _another_teacher(iid, teacher)
    assert admin.patch(f"/class-subjects/{section}", json={"teacher_id": other}).status_code == 200
    _assert_kept()
    assert _user_of(demo_or, f"tenrs-{section}") == f"teacher-{other}"

    assert admin.delete(f"/class-subjects/{section}").status_code == 204
    _assert_kept()
    assert not db.session.execute(
        text("SELECT 1 FROM oneroster_enrollments WHERE section_id = :s"), {"s": section}
    ).all()


def test_a_new_homeroom_teacher_and_a_transfer_show_in_the_enrollments(demo_or, admin, demo):  # noqa: F811
    cid, iid = demo["demo_class_id"], demo["demo_institution_id"]
    current = db.session.get(SchoolClass, cid).homeroom_teacher_id
    other = _another_teacher(iid, current)
    assert admin.patch(f"/classes/{cid}", json={"homeroom_teacher_id": other}).status_code == 200
    _assert_kept()
    assert _user_of(demo_or, f"tenrc-{cid}") == f"teacher-{other}"

    enrolment = db.session.scalar(
        select(Enrolment).where(Enrolment.student_id == demo["demo_student_id"], Enrolment.end_date.is_(None))
    )
    target = db.session.scalar(
        select(SchoolClass.id).where(
            SchoolClass.institution_id == iid,
            SchoolClass.id != enrolment.class_id,
            SchoolClass.deleted_at.is_(None),
        )
    )
    moved = admin.post(
        f"/enrolments/{enrolment.id}/transfer",
        json={"class_id": target, "date": (demo_today(demo) + timedelta(days=1)).isoformat()},
    )
    assert moved.status_code == 201, moved.get_json()
    _assert_kept()
    mine = _of_user(demo_or, f"student-{demo['demo_student_id']}")
    assert mine[f"enr-{enrolment.id}"]["status"] == "tobedeleted"
    assert mine[f"enr-{enrolment.id}"]["endDate"] is not None
    new = mine[f"enr-{moved.get_json()['started']['id']}"]
    assert (new["status"], new["class"]["sourcedId"]) == ("active", f"class-{target}")
    sections = set(db.session.scalars(select(ClassSubject.id).where(ClassSubject.class_id == target)))
    assert {f"enrs-{moved.get_json()['started']['id']}-s-{s}" for s in sections} <= mine.keys()


def test_bulk_statements_keep_the_rows(demo):
    """An import, the rollover and `flask seed scale` write many rows in one statement: the
    statement-level triggers recompute them in one go."""
    iid = demo["demo_institution_id"]
    db.session.execute(update(Student).where(Student.institution_id == iid).values(updated_at=db.func.now()))
    db.session.execute(
        update(Enrolment)
        .where(Enrolment.institution_id == iid, Enrolment.end_date.is_(None))
        .values(end_date=demo_today(demo))
    )
    _assert_kept()
    statuses = db.session.execute(
        text(
            "SELECT DISTINCT status FROM oneroster_enrollments WHERE institution_id = :i AND kind IN (0, 1)"
        ),
        {"i": iid},
    ).scalars()
    assert set(statuses) == {"tobedeleted"}
    db.session.execute(
        update(SchoolClass).where(SchoolClass.institution_id == iid).values(deleted_at=db.func.now())
    )
    _assert_kept()
    statuses = db.session.execute(
        text("SELECT DISTINCT status FROM oneroster_enrollments WHERE institution_id = :i"), {"i": iid}
    ).scalars()
    assert set(statuses) == {"tobedeleted"}


def test_a_renamed_subject_and_class_retitle_their_classes(demo_or, admin, demo):  # noqa: F811
    cs = db.session.get(ClassSubject, demo["demo_class_subject_id"])
    assert (
        admin.patch(f"/subjects/{cs.subject_id}", json={"name": "Renamed Subject", "code": "RNM"}).status_code
        == 200
    )
    _assert_kept()
    record = demo_or.get(f"{R}/classes/section-{cs.id}").get_json()["class"]
    assert record["title"].startswith("Renamed Subject ") and record["classCode"].startswith("RNM-")

    assert admin.patch(f"/classes/{cs.class_id}", json={"name": "Renamed Class"}).status_code == 200
    _assert_kept()
    record = demo_or.get(f"{R}/classes/section-{cs.id}").get_json()["class"]
    assert (record["title"], record["classCode"]) == ("Renamed Subject Renamed Class", "RNM-Renamed Class")
    assert demo_or.get(f"{R}/classes/class-{cs.class_id}").get_json()["class"]["title"] == "Renamed Class"
    newest = demo_or.get(f"{R}/classes?sort=dateLastModified&orderBy=desc&limit=1").get_json()["classes"][0]
    sections = db.session.scalars(select(ClassSubject.id).where(ClassSubject.class_id == cs.class_id))
    assert newest["sourcedId"] in {f"class-{cs.class_id}"} | {f"section-{s}" for s in sections}
    titled = demo_or.get(f"{R}/classes?filter=title~'renamed class'&limit=100").get_json()["classes"]
    assert {c["sourcedId"] for c in titled} >= {f"class-{cs.class_id}", f"section-{cs.id}"}


def test_concurrent_writes_to_one_class_leave_the_rows_equal_to_the_view(app, demo):
    """A subject removed from a class in one transaction while another renames the class: the second
    waits for the first (the refresh locks the class) and computes from what it committed, so it does
    not write back the removed subject's rows. Real commits on two connections, undone at the end."""
    iid, year = demo["demo_institution_id"], demo["demo_academic_year_id"]
    subject = db.session.get(ClassSubject, demo["demo_class_subject_id"]).subject_id
    engine = db.engine
    made = {}
    with engine.begin() as conn:
        made["class"] = conn.execute(
            text(
                "INSERT INTO classes (institution_id, academic_year_id, name, grade_level, section, created_at,"
                " updated_at) VALUES (:i, :y, 'Race 9', 9, 'RACE', now(), now()) RETURNING id"
            ),
            {"i": iid, "y": year},
        ).scalar_one()
        made["section"] = conn.execute(
            text(
                "INSERT INTO class_subjects (institution_id, class_id, subject_id, created_at, updated_at)"
                " VALUES (:i, :c, :s, now(), now()) RETURNING id"
            ),
            {"i": iid, "c": made["class"], "s": subject},
        ).scalar_one()
        made["student"] = conn.execute(
            text(
                "INSERT INTO students (institution_id, admission_number, first_name, last_name, status,"
                " created_at, updated_at) VALUES (:i, 'RACE-1', 'Race', 'Runner', 'active', now(), now())"
                " RETURNING id"
            ),
            {"i": iid},
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO enrolments (institution_id, student_id, class_id, start_date, created_at, updated_at)"
                " VALUES (:i, :s, :c, CURRENT_DATE, now(), now())"
            ),
            {"i": iid, "s": made["student"], "c": made["class"]},
        )
    try:
        first = engine.connect()
        removing = first.begin()
        first.execute(text("DELETE FROM class_subjects WHERE id = :s"), {"s": made["section"]})

        def rename():
            with engine.begin() as second:
                second.execute(
                    text("UPDATE classes SET name = 'Race 9 renamed', updated_at = now() WHERE id = :c"),
                    {"c": made["class"]},
                )

        renaming = threading.Thread(target=rename)
        renaming.start()
        with engine.connect() as watch:  # the rename waits on a lock the removal holds
            for _ in range(200):
                waiting = watch.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE classes%'"
                    )
                ).scalar_one()
                if waiting:
                    break
                time.sleep(0.05)
        assert waiting, "the rename did not wait for the removal"
        removing.commit()
        first.close()
        renaming.join(timeout=30)
        assert not renaming.is_alive()
        with engine.connect() as check:
            rows = check.execute(
                text("SELECT sourced_id FROM oneroster_enrollments WHERE section_id = :s"),
                {"s": made["section"]},
            ).all()
            assert rows == []
            for table in COLUMNS:
                cols = COLUMNS[table]
                diff = check.execute(
                    text(
                        f"SELECT count(*) FROM ((SELECT {cols} FROM {table} EXCEPT SELECT {cols} FROM {table}_live)"
                        f" UNION ALL (SELECT {cols} FROM {table}_live EXCEPT SELECT {cols} FROM {table})) d"
                    )
                ).scalar_one()
                assert diff == 0, table
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM enrolments WHERE student_id = :s"), {"s": made["student"]})
            conn.execute(text("DELETE FROM students WHERE id = :s"), {"s": made["student"]})
            conn.execute(text("DELETE FROM class_subjects WHERE class_id = :c"), {"c": made["class"]})
            conn.execute(text("DELETE FROM classes WHERE id = :c"), {"c": made["class"]})
