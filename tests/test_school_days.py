"""Three scripted school days on the DEFAULT limits (config.py), without a single 429, while a
password-guessing run from one address is still stopped.

(a) A new school's first day: a year, 3 terms, 12 subjects, 20 classes; 600 students and 800 guardians
    imported, each with a dry run first, students enrolled by the import; 30 teachers imported; 5 class
    rosters exported; the admin's reads in between.
(b) A teacher's day through a web client: 6 rolls, 3 gradebook saves, 300 reads.
(c) 8 am: 400 people log in from one address (a school behind one NAT) within minutes.

The scripts run without pauses, so every request of a day falls into one rate-limit window: stricter
than the day itself. Each script counts its requests; the defaults are chosen from those counts
(README.md, "Rate limits")."""

import io
import itertools
from datetime import date, timedelta

import pytest
from sqlalchemy import insert, select

from app.core.security import hash_password
from app.extensions import db
from app.people.models import User
from tests.conftest import PASSWORD, Api, login

pytestmark = pytest.mark.slow  # about half a minute: 400 argon2 logins


@pytest.fixture
def default_app(app, tmp_path):
    """The application with every limit at its default (the suite's own app raises the API tier); its
    imports and exports run in-process, as they finish in seconds on a worker."""
    from app import create_app

    application = create_app("testing", EXPORT_DIR=str(tmp_path / "exports"))
    application.extensions["celery"].conf.task_always_eager = True
    return application


class Counting(Api):
    """An Api that counts its requests and fails at the first 429."""

    def __init__(self, client, tokens):
        super().__init__(client, tokens)
        self.calls = 0

    def _call(self, method, path, **kw):
        self.calls += 1
        resp = super()._call(method, path, **kw)
        assert resp.status_code != 429, (method, path, resp.get_json())
        assert resp.status_code < 500, (method, path, resp.get_data(as_text=True)[:500])
        return resp


def ok(resp, status=200):
    assert resp.status_code == status, resp.get_data(as_text=True)[:1000]
    return resp.get_json()


def csv_file(header, rows, name):
    text = header + "\n" + "\n".join(rows) + "\n"
    return {"file": (io.BytesIO(text.encode()), name)}


def upload(api, kind, header, rows, dry_run):
    resp = api.post(
        f"/imports/{kind}?dry_run={'true' if dry_run else 'false'}",
        data=csv_file(header, rows, f"{kind}.csv"),
        content_type="multipart/form-data",
    )
    job = ok(resp, 202)
    for _ in range(3):  # a client polls the job
        api.get(f"/imports/{job['id']}")
    return job


def test_a_new_schools_first_day(default_app, demo):
    client = default_app.test_client()
    admin = Counting(client, login(client, "admin@demo-academy.test"))
    year = ok(
        admin.post(
            "/academic-years", json={"name": "2031/32", "start_date": "2031-09-01", "end_date": "2032-07-15"}
        ),
        201,
    )["id"]
    starts = [date(2031, 9, 1), date(2032, 1, 5), date(2032, 4, 12)]
    for n, start in enumerate(starts, 1):
        ok(
            admin.post(
                "/terms",
                json={
                    "academic_year_id": year,
                    "name": f"Term {n}",
                    "start_date": start.isoformat(),
                    "end_date": (start + timedelta(days=80)).isoformat(),
                },
            ),
            201,
        )
    for n in range(12):
        ok(admin.post("/subjects", json={"code": f"D{n:02}", "name": f"Day-one subject {n}"}), 201)
        admin.get("/subjects?limit=50")
    classes = []
    for n in range(20):
        body = {"academic_year_id": year, "name": f"Year {7 + n // 4} {'ABCD'[n % 4]}"}
        body |= {"grade_level": 7 + n // 4, "section": f"D{'ABCD'[n % 4]}"}
        classes.append(ok(admin.post("/classes", json=body), 201)["id"])
        admin.get("/classes?limit=50")

    students = [
        f"D1-{n:04},Pupil{n},Family{n // 2},2015-03-0{1 + n % 9},,{7 + (n % 20) // 4},active,,{classes[n % 20]}"
        for n in range(600)
    ]
    header = "admission_number,first_name,last_name,date_of_birth,gender,grade_level,status,email,class_id"
    for dry_run in (True, False):
        upload(admin, "students", header, students, dry_run)
    assert len(ok(admin.get(f"/classes/{classes[0]}/students?limit=200"))["data"]) == 30  # enrolled
    guardians = [
        f"parent{n}@day-one.test,Parent{n},Family{n % 300},+254700{n:06},D1-{n % 600:04},mother,true"
        for n in range(800)
    ]
    g_header = "email,first_name,last_name,phone,admission_numbers,relationship,is_primary"
    for dry_run in (True, False):
        upload(admin, "guardians", g_header, guardians, dry_run)
    teachers = [f"teacher{n}@day-one.test,Teacher{n},Staff{n},D1-T{n:03},,," for n in range(30)]
    t_header = "email,first_name,last_name,employee_number,phone,specialization,hired_on"
    for dry_run in (True, False):
        upload(admin, "teachers", t_header, teachers, dry_run)

    for class_id in classes[:5]:
        job = ok(
            admin.post(
                "/exports", json={"kind": "class_roster", "format": "csv", "params": {"class_id": class_id}}
            ),
            202,
        )
        for _ in range(3):
            admin.get(f"/exports/{job['id']}")
        assert admin.get(f"/exports/{job['id']}").get_json()["status"] == "done"
    for _ in range(40):  # looking around between the steps
        admin.get("/students?limit=50")
    assert admin.calls >= 150  # the day happened, in one window, with no 429 (Counting checks each call)


def test_a_teachers_day_through_a_web_client(default_app, demo):
    client = default_app.test_client()
    teacher = Counting(client, login(client, "teacher@demo-academy.test"))
    cid = demo["demo_class_id"]
    roster = [s["id"] for s in ok(teacher.get(f"/classes/{cid}/students?limit=200"))["data"]]
    days = [d for d in (date.today() - timedelta(days=n) for n in range(1, 15)) if d.weekday() < 5][:6]
    for day in days:
        records = [
            {"student_id": sid, "status": "present" if i % 7 else "absent"} for i, sid in enumerate(roster)
        ]
        ok(teacher.put(f"/classes/{cid}/attendance/{day}", json={"period": 1, "records": records}))
    types = ok(teacher.get("/assessment-types?limit=50"))["data"]
    assessment = ok(
        teacher.post(
            "/assessments",
            json={
                "class_subject_id": demo["demo_class_subject_id"],
                "term_id": demo["demo_current_term_id"],
                "assessment_type_id": types[0]["id"],
                "title": "Tuesday quiz",
                "max_score": 20,
                "date": days[0].isoformat(),
            },
        ),
        201,
    )["id"]
    for save in range(3):
        grades = [{"student_id": sid, "score": (i + save) % 21} for i, sid in enumerate(roster)]
        ok(teacher.put(f"/assessments/{assessment}/grades", json={"grades": grades}))
    reads = itertools.cycle(
        [
            f"/classes/{cid}/students?limit=50",
            f"/classes/{cid}/attendance/{days[0]}?period=1",
            f"/attendance/summary?date={days[0]}&class_id={cid}",
            f"/students/{roster[0]}",
            f"/assessments/{assessment}/grades",
            "/auth/me",
        ]
    )
    for _ in range(300):
        assert teacher.get(next(reads)).status_code == 200
    assert teacher.calls >= 300 + 6 + 3


def test_eight_am_four_hundred_logins_from_one_address_and_a_guesser_stopped(default_app, demo):
    iid = demo["demo_institution_id"]
    pw_hash = hash_password(PASSWORD)
    db.session.execute(
        insert(User),
        [
            {
                "institution_id": iid,
                "email": f"morning{n}@demo-academy.test",
                "first_name": "Morning",
                "last_name": f"Person{n}",
                "role": "accountant",
                "password_hash": pw_hash,
                "is_active": True,
            }
            for n in range(400)
        ],
    )
    db.session.flush()
    assert db.session.execute(select(User.id).where(User.email == "morning399@demo-academy.test")).scalar()
    client = default_app.test_client()
    for n in range(400):  # all from 127.0.0.1, as a school behind one NAT
        resp = client.post(
            "/api/v1/auth/login", json={"email": f"morning{n}@demo-academy.test", "password": PASSWORD}
        )
        assert resp.status_code == 200, (n, resp.get_json())
        me = client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {resp.get_json()['access_token']}"}
        )
        assert me.status_code == 200
    # The same address still stops someone guessing one account's password.
    answers = [
        client.post(
            "/api/v1/auth/login", json={"email": "admin@demo-academy.test", "password": f"guess-{n}"}
        ).status_code
        for n in range(8)
    ]
    assert answers[:5] == [401] * 5 and set(answers[5:]) == {429}
