"""The OneRoster 1.2 CSV binding (app/oneroster/csvexport.py, csvimport.py) through the API: the bulk zip
of a demo school imported into an empty school reproduces its roster; a delta after changing one
student holds that student only; nothing of another school; admins only; the import is all or nothing
and a second import updates instead of duplicating.

Tasks run in-process (as in tests/test_jobs.py)."""

import csv
import io
import zipfile
from collections import defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app.academics.models import AcademicYear, ClassSubject, Enrolment, SchoolClass, Subject, Term
from app.core.models import utcnow
from app.core.security import hash_password
from app.extensions import db
from app.grading.models import Assessment, AssessmentType, Grade
from app.institutions.models import Institution
from app.oneroster.csvexport import HEADERS
from app.people.models import Guardian, Student, StudentGuardian, Teacher, User
from tests.conftest import PASSWORD, assert_problem


@pytest.fixture(autouse=True)
def in_process(app, tmp_path):
    celery = app.extensions["celery"]
    saved = celery.conf.task_always_eager, app.config["EXPORT_DIR"]
    celery.conf.task_always_eager = True
    app.config["EXPORT_DIR"] = str(tmp_path / "exports")
    yield
    celery.conf.task_always_eager, app.config["EXPORT_DIR"] = saved


def export_zip(api, client, kind, **params):
    resp = api.post("/exports", json={"kind": kind, "format": "zip", "params": params})
    assert resp.status_code == 202, resp.get_data(as_text=True)
    job = api.get(resp.headers["Location"]).get_json()
    assert job["status"] == "done", job
    file = client.get(job["download_url"])
    assert file.status_code == 200 and file.mimetype == "application/zip"
    return file.data


def files_of(data):
    zf = zipfile.ZipFile(io.BytesIO(data))
    out = {}
    for name in zf.namelist():
        rows = list(csv.reader(io.StringIO(zf.read(name).decode("utf-8"))))
        out[name] = rows
    return out


def records(files, name):
    header, *rows = files[f"{name}.csv"]
    return [dict(zip(header, r, strict=True)) for r in rows]


def import_zip(api, data, dry_run=False):
    resp = api.post(
        f"/imports/oneroster?dry_run={'true' if dry_run else 'false'}",
        data={"file": (io.BytesIO(data), "roster.zip")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 202, resp.get_data(as_text=True)
    job = api.get(resp.headers["Location"]).get_json()
    assert job["status"] == "done", job
    return job["result"]


@pytest.fixture
def empty_school(as_user):
    now = utcnow()
    school = Institution(name="New School", slug="new-school", timezone="Africa/Nairobi", currency="KES")
    db.session.add(school)
    db.session.flush()
    db.session.add(
        User(
            institution_id=school.id,
            email="admin@new-school.test",
            password_hash=hash_password(PASSWORD),
            role="admin",
            first_name="New",
            last_name="Admin",
            is_active=True,
            created_at=now,
            updated_at=now,
        )
    )
    db.session.commit()
    return school.id, as_user("admin@new-school.test")


def roster(iid):
    """A school's roster by natural keys: what an import must reproduce."""

    def q(stmt):
        return db.session.execute(stmt, execution_options={"skip_tenant": True}).all()

    teachers = {
        r[0].id: r[0].employee_number for r in q(select(Teacher).where(Teacher.institution_id == iid))
    }
    students = {
        r[0].id: r[0]
        for r in q(select(Student).where(Student.institution_id == iid, Student.deleted_at.is_(None)))
    }
    classes = {
        r[0].id: r[0]
        for r in q(
            select(SchoolClass).where(SchoolClass.institution_id == iid, SchoolClass.deleted_at.is_(None))
        )
    }
    years = {r[0].id: r[0].name for r in q(select(AcademicYear).where(AcademicYear.institution_id == iid))}
    subjects = {r[0].id: r[0].code for r in q(select(Subject).where(Subject.institution_id == iid))}
    per_class = defaultdict(set)
    for (e,) in q(select(Enrolment).where(Enrolment.institution_id == iid, Enrolment.end_date.is_(None))):
        if e.student_id in students and e.class_id in classes:
            per_class[classes[e.class_id].name].add(students[e.student_id].admission_number)
    guardians = {r[0].id: r[0] for r in q(select(Guardian).where(Guardian.institution_id == iid,
                                                                  Guardian.deleted_at.is_(None)))}  # fmt: skip
    per_student = defaultdict(set)
    for (link,) in q(select(StudentGuardian).where(StudentGuardian.institution_id == iid)):
        if link.student_id in students and link.guardian_id in guardians:
            g = guardians[link.guardian_id]
            per_student[students[link.student_id].admission_number].add((g.first_name, g.last_name, g.email))
    sections = {
        (classes[cs.class_id].name, subjects[cs.subject_id], teachers.get(cs.teacher_id))
        for (cs,) in q(select(ClassSubject).where(ClassSubject.institution_id == iid))
        if cs.class_id in classes
    }
    return {
        "years": sorted(years.values()),
        "terms": sorted(
            (years[t.academic_year_id], t.name, t.start_date, t.end_date)
            for (t,) in q(select(Term).where(Term.institution_id == iid))
        ),  # fmt: skip
        "students": sorted(
            (s.admission_number, s.first_name, s.last_name, s.grade_level, s.date_of_birth, s.gender, s.email)
            for s in students.values()
        ),  # fmt: skip
        "teachers": sorted(
            (t.employee_number, t.first_name, t.last_name, t.email)
            for (t,) in q(select(Teacher).where(Teacher.institution_id == iid, Teacher.deleted_at.is_(None)))
        ),
        "classes": sorted(
            (c.name, years[c.academic_year_id], c.grade_level, teachers.get(c.homeroom_teacher_id))
            for c in classes.values()
        ),  # fmt: skip
        "sections": sorted(sections),
        "enrolments per class": {k: sorted(v) for k, v in per_class.items()},
        "guardians per student": {k: sorted(v) for k, v in per_student.items()},
        "guardians": len(guardians),
    }


def gradebook(iid):
    """A school's gradebook by natural keys: assessment types, assessments (class, subject, term) and
    their grades by admission number."""

    def q(stmt):
        return db.session.execute(stmt, execution_options={"skip_tenant": True}).all()

    types = {
        t.id: (t.name, t.weight)
        for (t,) in q(select(AssessmentType).where(AssessmentType.institution_id == iid))
    }
    rows = q(
        select(Assessment, SchoolClass.name, Subject.code, Term.name)
        .join(ClassSubject, ClassSubject.id == Assessment.class_subject_id)
        .join(SchoolClass, SchoolClass.id == ClassSubject.class_id)
        .join(Subject, Subject.id == ClassSubject.subject_id)
        .join(Term, Term.id == Assessment.term_id)
        .where(Assessment.institution_id == iid)
    )
    key = {a.id: (cls, code, term, a.title, a.date, a.max_score, types[a.assessment_type_id][0])
           for a, cls, code, term in rows}  # fmt: skip
    grades = defaultdict(list)
    for g, number in q(select(Grade, Student.admission_number).join(Student, Student.id == Grade.student_id)
                       .where(Grade.institution_id == iid)):  # fmt: skip
        grades[key[g.assessment_id]].append((number, g.score, g.comment))
    return {
        "types": sorted(types.values()),
        "assessments": sorted(key.values()),
        "grades": {k: sorted(v) for k, v in grades.items()},
    }


def test_bulk_zip_of_a_demo_school_imported_into_an_empty_school_reproduces_its_roster(
    admin, client, demo, empty_school
):
    data = export_zip(admin, client, "oneroster_bulk")
    files = files_of(data)
    assert set(files) == {"manifest.csv"} | {f"{n}.csv" for n in HEADERS}
    manifest = dict(r for r in files["manifest.csv"][1:])
    assert manifest["manifest.version"] == "1.0" and manifest["oneroster.version"] == "1.2"
    assert manifest["file.users"] == "bulk" and manifest["file.resources"] == "absent"
    assert manifest["source.systemName"] == "Schoolhouse"
    for name, header in HEADERS.items():
        assert tuple(files[f"{name}.csv"][0]) == header
    users = records(files, "users")
    assert users and all(u["status"] == "" and u["dateLastModified"] == "" for u in users)  # bulk: blank
    assert f"student-{demo['demo_student_id']}" in {u["sourcedId"] for u in users}
    assert f"student-{demo['hillside_student_id']}" not in {u["sourcedId"] for u in users}

    new_id, new_admin = empty_school
    dry = import_zip(new_admin, data, dry_run=True)
    assert dry["errors"] == [] and dry["written"] is False and dry["created"]["student"] > 0
    assert (
        db.session.scalar(select(func.count()).select_from(Student).where(Student.institution_id == new_id))
        == 0
    )

    result = import_zip(new_admin, data)
    assert result["errors"] == [] and result["written"] is True, result
    expected = roster(demo["demo_institution_id"])
    assert all(expected.values()) and len(expected["students"]) > 100
    assert roster(new_id) == expected
    # and its gradebook, through the grading services (their audit rows name the importing admin)
    expected_gradebook = gradebook(demo["demo_institution_id"])
    assert expected_gradebook["grades"] and gradebook(new_id) == expected_gradebook
    assert result["created"]["result"] == sum(len(v) for v in expected_gradebook["grades"].values())

    # the same file again: updates (nothing changed), never a second copy
    again = import_zip(new_admin, data)
    assert again["written"] is True and again["created"] == {}, again
    assert roster(new_id) == roster(demo["demo_institution_id"])


def test_grades_of_a_student_who_left_the_class_move_with_a_history_bulk_zip(
    admin, client, demo, empty_school
):
    """A student moved to another class after being graded in the old one. The default bulk zip lists
    current enrollments only (a learning platform may ignore endDate), so the import refuses those results
    and says how to fix it; a zip exported with params.history carries the ended enrollment and the
    grades move with it."""
    student = demo["demo_student_id"]
    old = db.session.execute(
        select(Enrolment).where(Enrolment.student_id == student, Enrolment.end_date.is_(None))
    ).scalar_one()
    graded = db.session.execute(
        select(Assessment.date)
        .join(Grade, Grade.assessment_id == Assessment.id)
        .join(ClassSubject, ClassSubject.id == Assessment.class_subject_id)
        .where(Grade.student_id == student, ClassSubject.class_id == old.class_id)
    ).scalars().all()  # fmt: skip
    assert graded, "the demo student has grades in their class"
    other = db.session.scalar(
        select(SchoolClass.id).where(
            SchoolClass.institution_id == demo["demo_institution_id"],
            SchoolClass.id != old.class_id,
            SchoolClass.deleted_at.is_(None),
        )
    )
    moved_on = max(graded) + timedelta(days=1)
    resp = admin.post(
        f"/enrolments/{old.id}/transfer", json={"class_id": other, "date": moved_on.isoformat()}
    )
    assert resp.status_code == 201, resp.get_json()
    new_id, new_admin = empty_school

    plain = export_zip(admin, client, "oneroster_bulk")
    assert f"enr-{old.id}" not in {r["sourcedId"] for r in records(files_of(plain), "enrollments")}
    refused = import_zip(new_admin, plain)
    assert refused["written"] is False
    errors = {(e["file"], e["field"]) for e in refused["errors"]}
    assert errors == {("results.csv", "studentSourcedId")}, refused["errors"]
    assert len(refused["errors"]) == len(graded)
    assert all("params.history" in e["error"] for e in refused["errors"])

    history = export_zip(admin, client, "oneroster_bulk", history=True)
    ended = {r["sourcedId"]: r for r in records(files_of(history), "enrollments")}[f"enr-{old.id}"]
    assert (ended["status"], ended["endDate"]) == ("", (moved_on - timedelta(days=1)).isoformat())
    result = import_zip(new_admin, history)
    assert result["errors"] == [] and result["written"] is True, result
    assert roster(new_id) == roster(demo["demo_institution_id"])
    assert gradebook(new_id) == gradebook(demo["demo_institution_id"])
    number = db.session.execute(
        select(Student.admission_number).where(Student.id == student), execution_options={"skip_tenant": True}
    ).scalar_one()
    kept = db.session.execute(
        select(Enrolment.start_date, Enrolment.end_date)
        .join(Student, Student.id == Enrolment.student_id)
        .where(Student.institution_id == new_id, Student.admission_number == number)
        .order_by(Enrolment.start_date),
        execution_options={"skip_tenant": True},
    ).all()  # fmt: skip
    assert kept == [(old.start_date, moved_on - timedelta(days=1)), (moved_on, None)]


def test_delta_after_changing_one_student_holds_that_student_only(admin, client, demo):
    since = utcnow()
    student = demo["demo_student_id"]
    assert admin.patch(f"/students/{student}", json={"first_name": "Changed"}).status_code == 200
    files = files_of(export_zip(admin, client, "oneroster_delta", since=since.isoformat()))
    manifest = dict(r for r in files["manifest.csv"][1:])
    assert manifest["file.users"] == "delta" and manifest["file.enrollments"] == "delta"
    users = records(files, "users")
    assert [(u["sourcedId"], u["givenName"], u["status"]) for u in users] == [
        (f"student-{student}", "Changed", "active")
    ]
    assert users[0]["dateLastModified"].endswith("Z")
    # what else moved: the records made of that student's row, nothing else
    assert {r["userSourcedId"] for r in records(files, "enrollments")} == {f"student-{student}"}
    assert [r["sourcedId"] for r in records(files, "demographics")] == [f"student-{student}"]
    for name in ("orgs", "academicSessions", "courses", "classes", "categories", "lineItems", "results"):
        assert records(files, name) == [], name


def test_delta_carries_an_ended_enrolment_as_tobedeleted(admin, client, demo):
    since = utcnow()
    enrolment = db.session.execute(
        select(Enrolment).where(Enrolment.student_id == demo["demo_student_id"], Enrolment.end_date.is_(None))
    ).scalar_one()
    resp = admin.post(f"/enrolments/{enrolment.id}/end", json={"end_date": enrolment.start_date.isoformat()})
    assert resp.status_code in (200, 204), resp.get_json()
    rows = {r["sourcedId"]: r for r in records(files_of(export_zip(admin, client, "oneroster_delta",
                                                                  since=since.isoformat())), "enrollments")}  # fmt: skip
    assert rows[f"enr-{enrolment.id}"]["status"] == "tobedeleted"


@pytest.mark.parametrize("who", ["teacher", "guardian", "accountant"])
def test_only_admins_export_oneroster(request, who):
    api = request.getfixturevalue(who)
    resp = api.post("/exports", json={"kind": "oneroster_bulk", "format": "zip", "params": {}})
    assert_problem(resp, 403)


def test_bad_oneroster_export_requests_name_the_field(admin):
    assert_problem(admin.post("/exports", json={"kind": "oneroster_delta", "format": "zip", "params": {}}),
                   422, "params.since")  # fmt: skip
    assert_problem(admin.post("/exports", json={"kind": "oneroster_bulk", "format": "csv", "params": {}}),
                   422, "format")  # fmt: skip


def _zip(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.csv", "propertyName,value\nmanifest.version,1.0\noneroster.version,1.2\n")
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


BAD = {
    "academicSessions.csv": "sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,"
    "schoolYear\ny1,,,2026/27,schoolYear,2026-01-05,2026-11-30,,2026\n"
    "t1,,,Term 1,term,2026-01-05,04/04/2026,y1,2026\n",
    "users.csv": "sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,"
    "middleName,identifier,email,sms,phone,agentSourcedIds,grades,password\n"
    "s1,,,true,s1,,Amina,,,A-1,,,,g9,05,\n"
    "s2,,,true,s2,,Baraka,Otieno,,A-2,not-an-email,,,,05,\n",
    "roles.csv": "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,"
    "orgSourcedId,userProfileSourcedId\nr1,,,s1,primary,student,,,o,\nr2,,,s2,primary,student,,,o,\n",
}


def test_an_import_with_errors_reports_each_and_writes_nothing(empty_school):
    iid, api = empty_school
    result = import_zip(api, _zip(BAD))
    assert result["written"] is False and result["created"] == {}
    got = {(e["file"], e["line"], e["field"]) for e in result["errors"]}
    assert got == {
        ("academicSessions.csv", 3, "endDate"),
        ("users.csv", 2, "familyName"),
        ("users.csv", 2, "agentSourcedIds"),
        ("users.csv", 3, "email"),
    }, result["errors"]
    count = db.session.scalar(
        select(func.count()).select_from(AcademicYear).where(AcademicYear.institution_id == iid)
    )
    assert count == 0


def test_the_upload_must_be_a_oneroster_zip(admin):
    def send(data):
        return admin.post("/imports/oneroster", data={"file": (io.BytesIO(data), "x.zip")},
                          content_type="multipart/form-data")  # fmt: skip

    assert_problem(send(b"sourcedId,status\n"), 422, "file")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("users.csv", "sourcedId\n")
    assert_problem(send(buf.getvalue()), 422, "file")


@pytest.mark.parametrize("who", ["teacher", "guardian"])
def test_only_admins_import_oneroster(request, who):
    api = request.getfixturevalue(who)
    resp = api.post("/imports/oneroster", data={"file": (io.BytesIO(_zip({})), "x.zip")},
                    content_type="multipart/form-data")  # fmt: skip
    assert_problem(resp, 403)


def test_bench_plans_cover_every_filter_and_the_paging_check_reads_every_user(app, demo, monkeypatch):
    """bench/oneroster_plans.py on a demo school (the lead runs it on the scale data)."""
    from bench import oneroster_plans  # noqa: PLC0415 - a bench script, loaded for this test only

    monkeypatch.setattr(oneroster_plans, "SCALE_SLUG", "demo-academy")
    markdown = oneroster_plans.plans_markdown(app)
    assert "filter=dateLastModified%3E" in markdown and "sort=familyName" in markdown
    assert "→ 200" in markdown and "→ 400" not in markdown
    paged = oneroster_plans.page_users(limit=100, app=app)
    users = db.session.scalar(
        select(func.count()).select_from(Student).where(Student.institution_id == demo["demo_institution_id"])
    )
    assert paged["users"] > users and paged["pages"] == -(-paged["users"] // 100)
