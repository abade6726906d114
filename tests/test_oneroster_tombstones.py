"""OneRoster tombstones (app/oneroster/tombstones.py): a record whose rows are deleted outright stays
listed as tobedeleted (dateLastModified = the deletion) in the REST collections and the delta CSV, for
ONEROSTER_TOMBSTONE_DAYS; never to another school; pruned by the nightly job."""

from datetime import timedelta

from sqlalchemy import delete, func, select, update

from app.academics.models import ClassSubject, Enrolment
from app.core.models import utcnow
from app.extensions import db
from app.grading.models import Assessment, Grade
from app.oneroster.models import OneRosterTombstone
from app.people.models import StudentGuardian
from tasks.oneroster import prune_tombstones
from tests.test_oneroster import G, R, demo_or, hill_or  # noqa: F401 - fixtures
from tests.test_oneroster_csv import export_zip, files_of, in_process, records  # noqa: F401 - fixture


def _latest(api, path, key):
    return api.get(f"{path}?sort=dateLastModified&orderBy=desc&limit=1").get_json()[key][0][
        "dateLastModified"
    ]


def _delta(api, path, key, since):
    return {
        r["sourcedId"]: r for r in api.every(f"{path}?filter=dateLastModified>'{since}'", key, limit=1000)
    }


def test_a_deleted_class_subject_leaves_tobedeleted_records_in_a_delta(demo_or, hill_or, admin, demo):
    cs_id = demo["demo_class_subject_id"]
    cs = db.session.get(ClassSubject, cs_id)
    enrolments = set(db.session.scalars(select(Enrolment.id).where(Enrolment.class_id == cs.class_id)))
    assessments = set(db.session.scalars(select(Assessment.id).where(Assessment.class_subject_id == cs_id)))
    grades = set(db.session.scalars(select(Grade.id).where(Grade.assessment_id.in_(assessments))))
    assert enrolments and assessments and grades
    since = {k: _latest(demo_or, p, k) for k, p in (("classes", f"{R}/classes"),
                                                    ("enrollments", f"{R}/enrollments"),
                                                    ("lineItems", f"{G}/lineItems"),
                                                    ("results", f"{G}/results"))}  # fmt: skip

    assert admin.delete(f"/class-subjects/{cs_id}").status_code == 204

    classes = _delta(demo_or, f"{R}/classes", "classes", since["classes"])
    gone = classes[f"section-{cs_id}"]
    assert gone["status"] == "tobedeleted" and gone["dateLastModified"] > since["classes"]
    assert gone["classType"] == "scheduled"
    enrollments = _delta(demo_or, f"{R}/enrollments", "enrollments", since["enrollments"])
    assert {f"enrs-{e}-s-{cs_id}" for e in enrolments} <= set(enrollments)
    assert all(e["status"] == "tobedeleted" for e in enrollments.values())
    teacher = enrollments[f"tenrs-{cs_id}"]
    assert teacher["role"] == "teacher" and teacher["class"]["sourcedId"] == f"section-{cs_id}"
    line_items = _delta(demo_or, f"{G}/lineItems", "lineItems", since["lineItems"])
    assert {f"li-{a}" for a in assessments} == set(line_items)
    results = _delta(demo_or, f"{G}/results", "results", since["results"])
    assert {f"res-{g}" for g in grades} == set(results)
    assert all(
        r["status"] == "tobedeleted" and r["lineItem"]["sourcedId"] in line_items for r in results.values()
    )

    # the plain listing and a GET by sourcedId show it too (the binding allows tobedeleted records)
    one = demo_or.get(f"{R}/classes/section-{cs_id}")
    assert one.status_code == 200 and one.get_json()["class"]["status"] == "tobedeleted"
    assert f"section-{cs_id}" in {
        c["sourcedId"] for c in demo_or.every(f"{R}/classes", "classes", limit=1000)
    }
    # a tombstone's filterable references: its class's enrollments
    by_class = demo_or.get(f"{R}/enrollments?filter=class.sourcedId='section-{cs_id}'").get_json()
    assert {e["sourcedId"] for e in by_class["enrollments"]} >= {f"tenrs-{cs_id}"}

    # never to the other school
    assert hill_or.get(f"{R}/classes/section-{cs_id}").status_code == 404
    assert hill_or.get(f"{G}/lineItems/li-{min(assessments)}").status_code == 404
    theirs = hill_or.get(f"{R}/classes?filter=status='tobedeleted'").get_json()["classes"]
    assert f"section-{cs_id}" not in {c["sourcedId"] for c in theirs}
    theirs = hill_or.every(f"{G}/results?filter=status='tobedeleted'", "results", limit=1000)
    assert not {r["sourcedId"] for r in theirs} & {f"res-{g}" for g in grades}


def test_a_delete_statement_leaves_tombstones_too(demo_or, demo):
    """The rollover's undo deletes with statements (delete(Enrolment).where(...)), not the ORM."""
    enrolment = db.session.execute(
        select(Enrolment).where(Enrolment.student_id == demo["demo_student_id"], Enrolment.end_date.is_(None))
    ).scalar_one()
    since = _latest(demo_or, f"{R}/enrollments", "enrollments")
    db.session.execute(delete(Enrolment).where(Enrolment.id == enrolment.id))
    db.session.commit()
    got = demo_or.get(f"{R}/enrollments/enr-{enrolment.id}").get_json()["enrollment"]
    assert got["status"] == "tobedeleted"
    assert got["user"]["sourcedId"] == f"student-{demo['demo_student_id']}"
    assert got["class"]["sourcedId"] == f"class-{enrolment.class_id}"
    delta = _delta(demo_or, f"{R}/enrollments", "enrollments", since)
    assert f"enr-{enrolment.id}" in delta
    assert any(s.startswith(f"enrs-{enrolment.id}-s-") for s in delta)


def test_a_rolled_back_delete_leaves_no_tombstone(demo):
    before = db.session.scalar(select(func.count()).select_from(OneRosterTombstone))
    db.session.execute(delete(Enrolment).where(Enrolment.student_id == demo["demo_student_id"]))
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(OneRosterTombstone)) == before


def test_a_line_item_deleted_through_oneroster_shows_as_tobedeleted(demo_or, demo):
    assessment = db.session.scalars(
        select(Assessment.id).where(Assessment.class_subject_id == demo["demo_class_subject_id"])
    ).first()
    since = _latest(demo_or, f"{G}/lineItems", "lineItems")
    assert demo_or.send("DELETE", f"{G}/lineItems/li-{assessment}").status_code == 204
    got = demo_or.get(f"{G}/lineItems/li-{assessment}").get_json()["lineItem"]
    assert got["status"] == "tobedeleted"
    assert got["class"]["sourcedId"] == f"section-{demo['demo_class_subject_id']}"
    assert set(_delta(demo_or, f"{G}/lineItems", "lineItems", since)) == {f"li-{assessment}"}
    # the record is gone for writes: PUT answers 404
    assert (
        demo_or.send("PUT", f"{G}/lineItems/li-{assessment}", {"lineItem": {"title": "x"}}).status_code == 404
    )


def test_unlinking_a_guardian_sends_both_users_again(demo_or, admin, demo):
    student = demo["demo_student_id"]
    link = (
        db.session.execute(select(StudentGuardian).where(StudentGuardian.student_id == student))
        .scalars()
        .first()
    )
    since = _latest(demo_or, f"{R}/users", "users")
    assert admin.delete(f"/students/{student}/guardians/{link.guardian_id}").status_code == 204
    delta = _delta(demo_or, f"{R}/users", "users", since)
    assert set(delta) == {f"student-{student}", f"guardian-{link.guardian_id}"}
    assert f"guardian-{link.guardian_id}" not in {
        a["sourcedId"] for a in delta[f"student-{student}"]["agents"]
    }


def test_the_delta_csv_carries_tombstones(admin, client, demo):
    since = utcnow()
    cs_id = demo["demo_class_subject_id"]
    assert admin.delete(f"/class-subjects/{cs_id}").status_code == 204
    files = files_of(export_zip(admin, client, "oneroster_delta", since=since.isoformat()))
    classes = {r["sourcedId"]: r for r in records(files, "classes")}
    assert classes[f"section-{cs_id}"]["status"] == "tobedeleted"
    assert classes[f"section-{cs_id}"]["dateLastModified"].endswith("Z")
    assert {r["status"] for r in records(files, "lineItems")} == {"tobedeleted"}
    assert {r["status"] for r in records(files, "enrollments")} == {"tobedeleted"}
    # a bulk file is the school as it is: no tombstones
    bulk = files_of(export_zip(admin, client, "oneroster_bulk"))
    assert f"section-{cs_id}" not in {r["sourcedId"] for r in records(bulk, "classes")}


def test_tombstones_are_pruned_after_the_retention_window(app, demo_or, admin, demo):
    cs_id = demo["demo_class_subject_id"]
    assert admin.delete(f"/class-subjects/{cs_id}").status_code == 204
    days = app.config["ONEROSTER_TOMBSTONE_DAYS"]
    old = f"section-{cs_id}"
    db.session.execute(
        update(OneRosterTombstone)
        .where(OneRosterTombstone.sourced_id == old)
        .values(deleted_at=utcnow() - timedelta(days=days, hours=1))
    )
    db.session.commit()
    kept = db.session.scalar(select(func.count()).select_from(OneRosterTombstone)) - 1
    assert prune_tombstones() == 1
    assert db.session.scalar(select(func.count()).select_from(OneRosterTombstone)) == kept > 0
    assert demo_or.get(f"{R}/classes/{old}").status_code == 404
