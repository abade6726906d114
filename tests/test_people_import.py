"""Teacher and guardian CSV imports (with their logins), and what the student import gained with them:
the ids it created, a start date for its enrolments, and one request against every limit per import."""

import io
import os
from datetime import date, timedelta

import pytest
import redis as redis_lib
from sqlalchemy import func, select

from app.academics.models import Enrolment
from app.audit.models import AuditEntry
from app.core.redisconn import LIMITER_DB
from app.extensions import db
from app.jobs import people_import
from app.people.models import Guardian, Student, StudentGuardian, Teacher, User
from config import redis_db_url
from tests.conftest import assert_problem, demo_today
from tests.embedded import run_embedded

TODAY = date.today()
LAST_SATURDAY = TODAY - timedelta(days=TODAY.weekday() + 2)  # inside the current term, never marked


@pytest.fixture(autouse=True)
def in_process(app, tmp_path):
    """Tasks run in-process; uploads go to a per-test directory."""
    celery = app.extensions["celery"]
    saved = celery.conf.task_always_eager, app.config["EXPORT_DIR"]
    celery.conf.task_always_eager = True
    app.config["EXPORT_DIR"] = str(tmp_path / "exports")
    yield
    celery.conf.task_always_eager, app.config["EXPORT_DIR"] = saved


@pytest.fixture
def invited(monkeypatch):
    """The user ids handed to the invitation call point, one list per call."""
    calls = []
    monkeypatch.setattr(people_import, "invite_new_users", calls.append)
    return calls


def upload(api, kind, text, query=""):
    data = {"file": (io.BytesIO(text.encode()), f"{kind}.csv")}
    return api.post(f"/imports/{kind}{query}", data=data, content_type="multipart/form-data")


def run(api, kind, text, query=""):
    resp = upload(api, kind, text, query)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    job = api.get(resp.headers["Location"]).get_json()
    assert job["status"] == "done", job
    return job["result"]


def count(model):
    # Unscoped: a request in the test's app context leaves its school set for the queries after it.
    return db.session.scalar(select(func.count()).select_from(model), execution_options={"skip_tenant": True})


def errors_by_row(result):
    return {e["row"]: e["errors"] for e in result["errors"]}


def other_teacher(demo):
    return db.session.execute(
        select(Teacher).where(Teacher.id != demo["demo_teacher_id"], Teacher.deleted_at.is_(None)).limit(1)
    ).scalar_one()


def admission(student_id):
    return db.session.get(Student, student_id).admission_number


# --- templates ----------------------------------------------------------------------------------------


def test_templates_list_the_columns(admin):
    for kind, columns in (
        ("teachers", people_import.TEACHER_COLUMNS),
        ("guardians", people_import.GUARDIAN_COLUMNS),
    ):
        resp = admin.get(f"/imports/{kind}/template.csv")
        assert resp.status_code == 200 and resp.mimetype == "text/csv"
        assert f'filename="{kind}-template.csv"' in resp.headers["Content-Disposition"]
        assert resp.data.decode().strip().split(",") == list(columns)
    assert people_import.TEACHER_COLUMNS[:4] == ("email", "first_name", "last_name", "employee_number")
    assert "admission_numbers" in people_import.GUARDIAN_COLUMNS
    assert {"relationship", "is_primary"} <= set(people_import.GUARDIAN_COLUMNS)


def test_only_admins_import_people(teacher, accountant):
    for api in (teacher, accountant):
        for kind in ("teachers", "guardians"):
            assert_problem(upload(api, kind, "email,first_name,last_name\na@x.test,A,B\n"), 403)
            assert_problem(api.get(f"/imports/{kind}/template.csv"), 403)


def test_bad_people_files_are_refused(admin):
    assert_problem(upload(admin, "teachers", "first_name,last_name\nA,B\n"), 422, "file")  # no email
    assert_problem(upload(admin, "guardians", "email,first_name,last_name,class_id\na@x.test,A,B,1\n"), 422)
    # a start date is the student import's (it makes enrolments)
    assert_problem(
        upload(admin, "teachers", "email,first_name,last_name\na@x.test,A,B\n", "?start_date=2020-01-01"),
        422,
        "start_date",
    )


# --- teachers -----------------------------------------------------------------------------------------


def test_teacher_dry_run_reports_row_errors_and_writes_nothing(admin, demo, invited):
    taken = other_teacher(demo).employee_number
    text = (
        "email,first_name,last_name,employee_number,hired_on\n"
        "new.one@demo-academy.test,New,One,EMP-NEW-1,2024-08-01\n"  # 2: fine
        ",No,Email,EMP-NEW-2,\n"  # 3
        "not-an-address,Bad,Email,EMP-NEW-3,\n"  # 4
        "NEW.ONE@Demo-Academy.test,Same,Again,EMP-NEW-4,\n"  # 5: same address, other case
        "no.number@demo-academy.test,No,Number,,\n"  # 6: a new teacher needs a number
        f"clash@demo-academy.test,Number,Clash,{taken},\n"  # 7: another teacher's number
        "bad.date@demo-academy.test,Bad,Date,EMP-NEW-5,01/08/2024\n"  # 8
        "guardian@demo-academy.test,Is,Guardian,EMP-NEW-6,\n"  # 9: a guardian's login
    )
    before = (count(Teacher), count(User), count(AuditEntry))
    result = run(admin, "teachers", text, "?dry_run=true")
    assert (result["rows"], result["created"], result["failed"], result["logins_created"]) == (8, 1, 7, 1)
    errors = errors_by_row(result)
    assert errors[3] == {"email": "is required"}
    assert set(errors[4]) == {"email"}
    assert "appears more than once in the file (first on row 2)" in errors[5]["email"]
    assert errors[6] == {"employee_number": "is required for a new teacher"}
    assert errors[7] == {"employee_number": "belongs to another teacher"}
    assert errors[8] == {"hired_on": "must be a date, YYYY-MM-DD"}
    assert "guardian login" in errors[9]["email"]
    assert {e["email"] for e in result["errors"] if e["row"] == 9} == {"guardian@demo-academy.test"}
    assert result["created_ids"] == [] and result["created_user_ids"] == []
    db.session.expire_all()
    assert (count(Teacher), count(User), count(AuditEntry)) == (before[0], before[1], before[2] + 1)
    assert invited == []  # a dry run invites nobody


def test_teachers_are_upserted_by_email_case_insensitively_with_logins(admin, demo, invited):
    known = db.session.get(Teacher, demo["demo_teacher_id"])  # teacher@demo-academy.test, has a login
    known_login, known_number = known.user_id, known.employee_number
    without = other_teacher(demo)  # a seeded teacher with no login
    assert without.user_id is None
    spare = User(  # a teacher login that belongs to nobody yet: linked, not duplicated
        institution_id=demo["demo_institution_id"],
        email="spare.login@demo-academy.test",
        password_hash="x",
        role="teacher",
        first_name="Spare",
        last_name="Login",
    )
    db.session.add(spare)
    db.session.commit()
    users_before = count(User)
    text = (
        "email,first_name,last_name,employee_number,phone,specialization\n"
        f"{known.email.upper()},{known.first_name},{known.last_name},,+254 700 000001,\n"
        f"{without.email.title()},{without.first_name},{without.last_name},,,\n"
        "Zawadi.Njeri@Demo-Academy.test,Zawadi,Njeri,EMP-IMP-1,,Chemistry\n"
        "spare.login@demo-academy.test,Spare,Login,EMP-IMP-2,,\n"
    )
    result = run(admin, "teachers", text)
    assert (result["created"], result["updated"], result["unchanged"], result["failed"]) == (2, 2, 0, 0), (
        result
    )
    assert (result["logins_created"], result["logins_linked"]) == (2, 1)
    db.session.expire_all()
    known = db.session.get(Teacher, demo["demo_teacher_id"])
    assert (known.phone, known.user_id, known.employee_number) == (
        "+254 700 000001",
        known_login,
        known_number,
    )
    new = db.session.execute(select(Teacher).where(Teacher.employee_number == "EMP-IMP-1")).scalar_one()
    assert (new.email, new.specialization) == ("zawadi.njeri@demo-academy.test", "Chemistry")
    linked = db.session.execute(select(Teacher).where(Teacher.employee_number == "EMP-IMP-2")).scalar_one()
    assert linked.user_id == spare.id
    assert sorted(result["created_ids"]) == sorted([new.id, linked.id])
    logins = {u.id: u for u in db.session.execute(select(User).where(User.id.in_(result["created_user_ids"])))
              .scalars()}  # fmt: skip
    assert {u.email for u in logins.values()} == {"zawadi.njeri@demo-academy.test", without.email.lower()}
    assert {u.role for u in logins.values()} == {"teacher"}
    assert new.user_id in logins and db.session.get(Teacher, without.id).user_id in logins
    assert count(User) == users_before + 2
    assert invited == [result["created_user_ids"]]  # the call point got exactly the new logins
    # Nobody knows a new login's password until the invitation sets one.
    resp = admin.client.post(
        "/api/v1/auth/login", json={"email": "zawadi.njeri@demo-academy.test", "password": ""}
    )
    assert resp.status_code in (401, 422)
    audited = db.session.execute(
        select(AuditEntry.entity_type, AuditEntry.action).where(
            AuditEntry.entity_id.in_([str(i) for i in result["created_user_ids"]]),
            AuditEntry.entity_type == "user",
        )
    ).all()
    assert len(audited) == 2 and all(a.action == "create" for a in audited)

    again = run(admin, "teachers", text.replace("Zawadi.Njeri", "ZAWADI.NJERI"))
    assert (again["created"], again["updated"], again["unchanged"], again["logins_created"]) == (0, 0, 4, 0)
    assert count(User) == users_before + 2 and len(invited) == 2 and invited[1] == []


def test_an_address_held_by_another_schools_login_never_breaks_the_import(admin, demo):
    """Whatever the rule for addresses across schools, the row is either imported with a login of this
    school, or refused on its own; the rest of the file is written."""
    result = run(
        admin,
        "teachers",
        "email,first_name,last_name,employee_number\n"
        "admin@hillside.test,Shared,Address,EMP-X-1\n"
        "fresh.teacher@demo-academy.test,Fresh,Teacher,EMP-X-2\n",
    )
    assert result["created"] >= 1 and result["created"] + result["failed"] == 2
    if result["failed"]:
        assert errors_by_row(result) == {2: {"email": "is already used by another login"}}
        assert db.session.scalar(select(Teacher.id).where(Teacher.employee_number == "EMP-X-1")) is None


# --- guardians ----------------------------------------------------------------------------------------


def test_guardians_are_linked_to_students_by_admission_number(admin, demo, invited):
    student, sibling = admission(demo["demo_student_id"]), admission(demo["demo_sibling_student_id"])
    known = db.session.get(Guardian, demo["demo_guardian_id"])  # guardian@demo-academy.test
    text = (
        "email,first_name,last_name,phone,admission_numbers,relationship,is_primary\n"
        f"amina.new@demo-academy.test,Amina,New,+254 711 000002,{student}; {sibling},mother,true\n"
        f"GUARDIAN@demo-academy.test,{known.first_name},{known.last_name},,{student},,\n"
        f"lost.child@demo-academy.test,Lost,Child,,{student};NO-SUCH-1,,\n"
        "no.children@demo-academy.test,No,Children,,,,maybe\n"
    )
    before = (count(Guardian), count(StudentGuardian), count(User))
    dry = run(admin, "guardians", text, "?dry_run=true")
    assert (dry["created"], dry["unchanged"], dry["failed"], dry["links_created"]) == (1, 1, 2, 2), dry
    db.session.expire_all()
    assert (count(Guardian), count(StudentGuardian), count(User)) == before and invited == []

    result = run(admin, "guardians", text)
    assert (result["created"], result["unchanged"], result["failed"]) == (1, 1, 2), result
    errors = errors_by_row(result)
    assert errors[4] == {"admission_numbers": "no student with admission number NO-SUCH-1"}
    assert errors[5] == {"is_primary": "must be true or false"}
    assert (result["links_created"], result["logins_created"]) == (2, 1)
    db.session.expire_all()
    assert count(Guardian) == before[0] + 1 and count(User) == before[2] + 1
    amina = db.session.execute(
        select(Guardian).where(Guardian.email == "amina.new@demo-academy.test")
    ).scalar_one()
    assert result["created_ids"] == [amina.id] and invited == [result["created_user_ids"]]
    assert db.session.get(User, amina.user_id).role == "guardian"
    links = db.session.execute(
        select(StudentGuardian).where(StudentGuardian.guardian_id == amina.id)
    ).scalars()
    assert {(link.student_id, link.relationship_type, link.is_primary) for link in links} == {
        (demo["demo_student_id"], "mother", True),
        (demo["demo_sibling_student_id"], "mother", True),
    }
    detail = admin.get(f"/students/{demo['demo_student_id']}").get_json()
    assert "amina.new@demo-academy.test" in {g["email"] for g in detail["guardians"]}
    assert (
        db.session.scalar(select(Guardian.id).where(Guardian.email == "lost.child@demo-academy.test")) is None
    )

    # The relationship changes when the file says so; links it does not name stay.
    again = run(
        admin,
        "guardians",
        f"email,first_name,last_name,admission_numbers,relationship\n"
        f"Amina.New@demo-academy.test,Amina,New,{sibling},aunt\n",
    )
    assert (again["unchanged"], again["links_created"], again["links_updated"]) == (1, 0, 1)
    db.session.expire_all()
    assert (
        db.session.get(StudentGuardian, (demo["demo_sibling_student_id"], amina.id)).relationship_type
        == "aunt"
    )
    assert db.session.get(StudentGuardian, (demo["demo_student_id"], amina.id)).relationship_type == "mother"


# --- the student import: ids and start date -----------------------------------------------------------


def test_student_import_returns_the_ids_it_created(admin, demo):
    existing = admission(demo["demo_student_id"])
    text = f"admission_number,first_name,last_name\nID-1,Ida,One\nID-2,Ida,Two\n{existing},Kept,Name\n"
    dry = run(admin, "students", text, "?dry_run=true")
    assert dry["created"] == 2 and dry["created_ids"] == []
    result = run(admin, "students", text)
    made = dict(
        db.session.execute(
            select(Student.admission_number, Student.id).where(Student.admission_number.in_(["ID-1", "ID-2"]))
        ).all()
    )
    assert sorted(result["created_ids"]) == sorted(made.values()) and result["updated"] == 1


def test_student_import_enrols_from_its_start_date(admin, teacher, demo):
    cid = demo["demo_class_id"]
    text = f"admission_number,first_name,last_name,class_id\nSD-1,Early,Starter,{cid}\n"
    job = admin.post(
        "/imports/students",
        data={"file": (io.BytesIO(text.encode()), "s.csv"), "start_date": LAST_SATURDAY.isoformat()},
        content_type="multipart/form-data",
    )
    assert job.status_code == 202, job.get_json()
    result = admin.get(job.headers["Location"]).get_json()["result"]
    assert result["enrolled"] == 1
    sid = result["created_ids"][0]
    assert db.session.scalar(select(Enrolment.start_date).where(Enrolment.student_id == sid)) == LAST_SATURDAY
    roll = {"period": 7, "records": [{"student_id": sid, "status": "present"}]}
    resp = teacher.put(f"/classes/{cid}/attendance/{LAST_SATURDAY}", json=roll)
    assert resp.status_code == 200, resp.get_json()

    # Without a start date the enrolment starts today: the earlier roll refuses the student.
    late = run(
        admin, "students", f"admission_number,first_name,last_name,class_id\nSD-2,Late,Starter,{cid}\n"
    )
    late_id = late["created_ids"][0]
    start = db.session.scalar(select(Enrolment.start_date).where(Enrolment.student_id == late_id))
    assert start == demo_today(demo)
    roll = {"period": 7, "records": [{"student_id": late_id, "status": "present"}]}
    assert_problem(teacher.put(f"/classes/{cid}/attendance/{LAST_SATURDAY}", json=roll), 422)


@pytest.mark.parametrize(
    "value,message",
    [
        ("2024-13-01", "must be a date, YYYY-MM-DD"),
        ("yesterday", "must be a date, YYYY-MM-DD"),
        ((TODAY + timedelta(days=400)).isoformat(), "days after today"),
    ],
)
def test_start_date_is_checked(admin, value, message):
    body = assert_problem(
        upload(admin, "students", "admission_number,first_name,last_name\nA,B,C\n", f"?start_date={value}"),
        422,
        "start_date",
    )
    assert message in body["errors"]["start_date"]


def test_a_start_date_ahead_is_accepted_within_the_bound(admin, demo):
    ahead = TODAY + timedelta(days=30)
    text = f"admission_number,first_name,last_name,class_id\nSD-9,Next,Term,{demo['demo_class_id']}\n"
    result = run(admin, "students", text, f"?start_date={ahead}")
    sid = result["created_ids"][0]
    assert db.session.scalar(select(Enrolment.start_date).where(Enrolment.student_id == sid)) == ahead


# --- one import, one request ----------------------------------------------------------------------------


def _counters(limiter):
    out = {}
    for key in limiter.scan_iter():
        if limiter.type(key) == b"string":
            value = limiter.get(key)
            if value is not None and value.isdigit():
                out[key] = int(value)
    return out


def test_one_import_counts_once_against_every_limit(admin, demo):
    """However many rows (and logins) an import or a dry run has, each limit counts its request once."""
    limiter = redis_lib.Redis.from_url(redis_db_url(os.environ["TEST_REDIS_URL"], LIMITER_DB))
    student = admission(demo["demo_student_id"])
    rows = "".join(f"bulk.{i}@demo-academy.test,Bulk,Parent{i},,{student},,\n" for i in range(120))
    text = "email,first_name,last_name,phone,admission_numbers,relationship,is_primary\n" + rows
    for query in ("?dry_run=true", ""):
        before = _counters(limiter)
        resp = upload(admin, "guardians", text, query)
        assert resp.status_code == 202
        after = _counters(limiter)
        grown = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        assert grown and set(grown.values()) == {1}, grown
        assert any(k.startswith(b"sh-rl:api:") for k in grown)  # the API tier, once
        result = admin.get(resp.headers["Location"]).get_json()["result"]
        assert result["created"] == 120 and result["logins_created"] == 120


# --- the embedded default (SQLite) ------------------------------------------------------------------------

EMBEDDED = """
import io, json
from flask_migrate import upgrade
from app import create_app
from app.seed import seed_demo
app = create_app()
with app.app_context():
    upgrade()
    ids = seed_demo("embedded-pass-1")
    from app.extensions import db
    from app.people.models import Student
    adm = db.session.get(Student, ids["demo_student_id"]).admission_number
c = app.test_client()
h = {"Authorization": "Bearer " + c.post("/api/v1/auth/login", json={"email": "admin@demo-academy.test",
                                                                     "password": "embedded-pass-1"}).get_json()["access_token"]}
def imp(kind, text):
    r = c.post("/api/v1/imports/" + kind, headers=h, content_type="multipart/form-data",
               data={"file": (io.BytesIO(text.encode()), kind + ".csv")})
    return c.get(r.headers["Location"], headers=h).get_json()["result"]
out = {
    "teachers": imp("teachers", "email,first_name,last_name,employee_number\\nE.T@demo-academy.test,Eve,T,ET-1\\n"
                                "admin@hillside.test,Other,School,ET-2\\n"),
    "guardians": imp("guardians", "email,first_name,last_name,admission_numbers\\ne.g@demo-academy.test,Eve,G," + adm + "\\n"),
}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow  # starts a subprocess
def test_people_imports_work_in_the_embedded_default(tmp_path):
    out = run_embedded(EMBEDDED, tmp_path)
    teachers, guardians = out["teachers"], out["guardians"]
    assert teachers["created"] >= 1 and teachers["logins_created"] == teachers["created"]
    assert teachers["created"] + teachers["failed"] == 2
    assert (guardians["created"], guardians["logins_created"], guardians["links_created"]) == (1, 1, 1)


def test_imported_logins_are_invited_by_email(admin, demo):
    """Each login a teacher or guardian import creates gets its invitation in the outbox, in the batch's
    transaction; a dry run and an existing login get none."""
    from app.notifications.models import OutboxEmail

    def invitations():
        return set(
            db.session.execute(
                select(OutboxEmail.to_address).where(OutboxEmail.template == "account_invitation")
            ).scalars()
        )

    before = invitations()
    text = "email,first_name,last_name,employee_number\nNew.Teacher@demo-academy.test,New,Teacher,EMP-INV-1\n"
    run(admin, "teachers", text, "?dry_run=true")
    assert invitations() == before
    run(admin, "teachers", text)
    assert invitations() == before | {"new.teacher@demo-academy.test"}
    run(admin, "teachers", text)  # the login exists now: no second invitation
    assert len(invitations()) == len(before) + 1
