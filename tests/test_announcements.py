"""Announcements (app/announcements): staff post to an audience, a task fans the post out to each person
once by their channel (the e-mail and SMS outboxes, sent here by their file backends), and each person
reads theirs under /me/announcements."""

import json

import pytest
from sqlalchemy import func, select

from app.academics.models import Enrolment
from app.announcements import services
from app.announcements.models import Announcement, AnnouncementRecipient
from app.core.models import utcnow
from app.extensions import db
from app.notifications import services as notifications
from app.notifications import sms_services
from app.notifications.models import OutboxEmail, OutboxSms
from app.people.models import Guardian, Student, StudentGuardian, User
from tests.conftest import assert_problem
from tests.worker_support import Worker, poll

UNSCOPED = {"skip_tenant": True}


@pytest.fixture
def delivery_to_files(app, tmp_path, monkeypatch):
    """Both outboxes deliver to files: .eml per e-mail (MAIL_DIR), .json per SMS (SMS_DIR)."""
    monkeypatch.setitem(app.config, "MAIL_BACKEND", "file")
    monkeypatch.setitem(app.config, "MAIL_DIR", str(tmp_path / "mail"))
    monkeypatch.setitem(app.config, "SMS_BACKEND", "file")
    monkeypatch.setitem(app.config, "SMS_DIR", str(tmp_path / "sms"))
    return tmp_path


def class_guardians(class_id):
    """The live guardians of the students enrolled in the class now: who a class announcement reaches."""
    students = select(Enrolment.student_id).where(
        Enrolment.class_id == class_id, Enrolment.end_date.is_(None)
    )
    return (
        db.session.execute(
            select(Guardian)
            .where(
                Guardian.deleted_at.is_(None),
                Guardian.id.in_(
                    select(StudentGuardian.guardian_id).where(StudentGuardian.student_id.in_(students))
                ),
            )
            .order_by(Guardian.id),
            execution_options=UNSCOPED,
        )
        .scalars()
        .all()
    )


def messages(announcement_id, model, kind="guardian"):
    """{person id: number of outbox rows} for one announcement."""
    rows = db.session.execute(
        select(model.dedupe_key).where(model.dedupe_key.like(f"announcement:{announcement_id}:{kind}:%")),
        execution_options=UNSCOPED,
    ).scalars()
    counts: dict[int, int] = {}
    for key in rows:
        person = int(key.rsplit(":", 1)[1])
        counts[person] = counts.get(person, 0) + 1
    return counts


def a_family_with_two_children_in_the_class(demo):
    """The demo guardian (SMS, a Kenyan mobile) with a second child in the demo class."""
    g = db.session.get(Guardian, demo["demo_guardian_id"])
    g.phone, g.notify_by = "0722 000 111", "sms"
    db.session.add(
        StudentGuardian(
            institution_id=demo["demo_institution_id"],
            student_id=demo["apostrophe_student_id"],
            guardian_id=g.id,
        )
    )
    db.session.commit()
    return g


def post(api, **body):
    return api.post(
        "/announcements", json={"title": "Sports day", "body": "Friday, 9am, on the field.", **body}
    )


def test_a_class_announcement_reaches_each_guardian_once_by_their_channel_then_reads_unread_then_read(
    demo, teacher, guardian, student, delivery_to_files
):
    mine = a_family_with_two_children_in_the_class(demo)
    everyone = class_guardians(demo["demo_class_id"])
    other = next(g for g in everyone if g.id != mine.id and g.email)
    other.phone, other.notify_by = "+254 733 000 222", "both"
    db.session.commit()

    resp = post(teacher, audience="class", class_id=demo["demo_class_id"])
    assert resp.status_code == 201, resp.get_json()
    posted = resp.get_json()
    assert posted["status"] == "queued" and posted["audience"] == "class"
    report = services.deliver(posted["id"])  # what tasks.announcements.deliver runs

    assert report["recipients"] >= len(everyone) + 1  # the guardians and the students of the class
    emails, texts = messages(posted["id"], OutboxEmail), messages(posted["id"], OutboxSms)
    assert texts.get(mine.id) == 1 and mine.id not in emails  # SMS only, once for two children
    assert texts.get(other.id) == 1 and emails.get(other.id) == 1  # both
    for g in everyone:
        if g.notify_by == "email" and g.email:
            assert emails.get(g.id) == 1 and g.id not in texts
    assert all(n == 1 for n in [*emails.values(), *texts.values()])
    assert set(emails) | set(texts) <= {g.id for g in everyone}

    assert notifications.dispatch_outbox()["sent"] >= len(emails)
    assert sms_services.dispatch_sms_outbox()["sent"] >= len(texts)
    sent = [json.loads(p.read_text()) for p in (delivery_to_files / "sms").glob("*.json")]
    to_mine = [m for m in sent if m["to"] == "+254722000111"]
    assert len(to_mine) == 1 and "Sports day" in to_mine[0]["message"]
    assert any("Sports day" in p.read_text() for p in (delivery_to_files / "mail").glob("*.eml"))

    listed = guardian.get("/me/announcements").get_json()
    (item,) = [a for a in listed["data"] if a["id"] == posted["id"]]
    assert item["read"] is False and item["read_at"] is None and listed["unread_count"] >= 1
    assert [a["id"] for a in guardian.get("/me/announcements?unread=true").get_json()["data"]] == [
        posted["id"]
    ]
    read = guardian.post(f"/me/announcements/{posted['id']}/read")
    assert read.status_code == 200 and read.get_json()["read"] is True
    again = guardian.post(f"/me/announcements/{posted['id']}/read").get_json()
    assert again["read_at"] == read.get_json()["read_at"]  # read once, when first read
    after = guardian.get("/me/announcements").get_json()
    assert [a["read"] for a in after["data"] if a["id"] == posted["id"]] == [True]
    assert after["unread_count"] == listed["unread_count"] - 1
    assert guardian.get("/me/announcements?unread=true").get_json()["data"] == []
    # the demo student is in the class: theirs is unread still (read state is per person)
    assert [a["read"] for a in student.get("/me/announcements").get_json()["data"]] == [False]

    staff = teacher.get("/announcements").get_json()["data"]
    (row,) = [a for a in staff if a["id"] == posted["id"]]
    assert row["status"] == "delivered" and row["read_count"] == 1
    assert row["sms_count"] == len(texts) and row["email_count"] == len(emails)
    assert row["recipient_count"] == report["recipients"]


def test_the_delivery_task_running_twice_sends_nothing_twice(demo, admin, delivery_to_files):
    a_family_with_two_children_in_the_class(demo)
    posted = post(admin, audience="guardians", class_id=demo["demo_class_id"]).get_json()
    first = services.deliver(posted["id"])
    assert first["recipients"] > 0 and first["email"] + first["sms"] > 0
    notifications.dispatch_outbox()
    sms_services.dispatch_sms_outbox()
    files = sorted(p.name for p in delivery_to_files.rglob("*") if p.is_file())
    assert services.deliver(posted["id"]) == {"recipients": 0, "email": 0, "sms": 0}
    assert notifications.dispatch_outbox()["sent"] == 0 and sms_services.dispatch_sms_outbox()["sent"] == 0
    assert sorted(p.name for p in delivery_to_files.rglob("*") if p.is_file()) == files
    row = admin.get("/announcements").get_json()["data"][0]
    assert row["id"] == posted["id"] and row["recipient_count"] == first["recipients"]
    assert row["email_count"] == first["email"] and row["sms_count"] == first["sms"]
    # guardians only: no student of the class got a recipient row
    kinds = db.session.execute(
        select(AnnouncementRecipient.kind)
        .where(AnnouncementRecipient.announcement_id == posted["id"])
        .distinct(),
        execution_options=UNSCOPED,
    ).scalars()
    assert set(kinds) == {"guardian"}


def test_a_teacher_posts_only_to_their_own_classes_and_their_guardians(demo, teacher, admin):
    assert_problem(post(teacher, audience="class", class_id=demo["other_class_id"]), 404)
    assert_problem(post(teacher, audience="guardians", class_id=demo["other_class_id"]), 404)
    assert_problem(post(teacher, audience="school"), 403)
    assert_problem(post(teacher, audience="staff"), 403)
    assert post(teacher, audience="guardians", class_id=demo["demo_class_id"]).status_code == 201
    assert post(admin, audience="class", class_id=demo["other_class_id"]).status_code == 201
    # nothing was written by the refused posts
    assert db.session.execute(select(func.count()).select_from(Announcement)).scalar() == 2


def test_audience_errors_are_problem_answers_naming_the_field(demo, admin, hillside_admin):
    assert_problem(post(admin, audience="class"), 422, "class_id")
    assert_problem(post(admin, audience="grade"), 422, "grade_level")
    assert_problem(
        post(admin, audience="grade", grade_level=5, class_id=demo["demo_class_id"]), 422, "class_id"
    )
    assert_problem(post(admin, audience="school", grade_level=5), 422, "grade_level")
    assert_problem(post(admin, audience="grade", grade_level=19), 422, "grade_level")  # no class in it
    assert_problem(post(admin, audience="parents"), 422, "audience")
    assert_problem(post(admin, audience="school", title=""), 422, "title")
    assert_problem(post(admin, audience="school", pinned=True), 422, "pinned")
    assert_problem(post(admin, audience="class", class_id=demo["hillside_class_id"]), 404)  # another school
    assert_problem(post(hillside_admin, audience="class", class_id=demo["demo_class_id"]), 404)
    assert db.session.execute(select(func.count()).select_from(Announcement)).scalar() == 0


def test_someone_elses_or_another_schools_announcement_is_not_found(
    demo, admin, guardian, teacher, hillside_admin
):
    to_staff = post(admin, audience="staff").get_json()["id"]
    report = services.deliver(to_staff)
    staff_users = db.session.execute(
        select(func.count())
        .select_from(User)
        .where(
            User.institution_id == demo["demo_institution_id"],
            User.role.in_(("admin", "teacher", "accountant")),
            User.is_active.is_(True),
            User.deleted_at.is_(None),
        ),
        execution_options=UNSCOPED,
    ).scalar()
    assert report["recipients"] == staff_users and report["sms"] == 0
    assert [a["id"] for a in teacher.get("/me/announcements").get_json()["data"]] == [to_staff]
    assert guardian.get("/me/announcements").get_json()["data"] == []
    assert_problem(guardian.post(f"/me/announcements/{to_staff}/read"), 404)
    assert_problem(hillside_admin.post(f"/me/announcements/{to_staff}/read"), 404)
    assert_problem(admin.post("/me/announcements/999999999/read"), 404)
    assert hillside_admin.get("/announcements").get_json()["data"] == []
    # a teacher lists the announcements they posted, not the admin's
    assert teacher.get("/announcements").get_json()["data"] == []
    assert [a["id"] for a in admin.get("/announcements").get_json()["data"]] == [to_staff]
    assert admin.post(f"/me/announcements/{to_staff}/read").status_code == 200


def test_a_grade_announcement_reaches_the_students_of_its_classes_and_their_guardians(demo, admin):
    grade = db.session.execute(
        select(Enrolment.class_id).where(
            Enrolment.student_id == demo["demo_student_id"], Enrolment.end_date.is_(None)
        ),
        execution_options=UNSCOPED,
    ).scalar()
    level = admin.get(f"/classes/{grade}").get_json()["grade_level"]
    posted = post(admin, audience="grade", grade_level=level).get_json()
    services.deliver(posted["id"])
    kinds = dict(
        db.session.execute(
            select(AnnouncementRecipient.kind, func.count())
            .where(AnnouncementRecipient.announcement_id == posted["id"])
            .group_by(AnnouncementRecipient.kind),
            execution_options=UNSCOPED,
        ).all()
    )
    assert kinds.get("student", 0) > 0 and kinds.get("guardian", 0) > 0 and "user" not in kinds
    assert (
        db.session.execute(
            select(AnnouncementRecipient.person_id).where(
                AnnouncementRecipient.announcement_id == posted["id"],
                AnnouncementRecipient.kind == "student",
                AnnouncementRecipient.person_id == demo["demo_student_id"],
            ),
            execution_options=UNSCOPED,
        ).scalar()
        is not None
    )


def test_a_school_announcement_reaches_staff_students_and_guardians_of_this_school_only(demo, admin, student):
    posted = post(admin, audience="school").get_json()
    report = services.deliver(posted["id"])
    kinds = dict(
        db.session.execute(
            select(AnnouncementRecipient.kind, func.count())
            .where(AnnouncementRecipient.announcement_id == posted["id"])
            .group_by(AnnouncementRecipient.kind),
            execution_options=UNSCOPED,
        ).all()
    )
    active = db.session.execute(
        select(func.count())
        .select_from(Student)
        .where(
            Student.institution_id == demo["demo_institution_id"],
            Student.status == "active",
            Student.deleted_at.is_(None),
        ),
        execution_options=UNSCOPED,
    ).scalar()
    assert kinds["student"] == active and kinds["user"] > 0 and kinds["guardian"] > 0
    assert report["recipients"] == sum(kinds.values())
    assert [a["id"] for a in student.get("/me/announcements").get_json()["data"]] == [posted["id"]]


def test_a_long_announcement_is_cut_to_three_sms_segments():
    text = services.sms_text("Demo Academy", "Term dates", "The new term begins on Monday. " * 40)
    assert text.segments == 3 and text.encoding == "gsm7" and text.text.endswith("...")  # … in GSM-7
    short = services.sms_text("Demo Academy", "Closed", "School is closed tomorrow.")
    assert short.segments == 1 and short.text == "Demo Academy: Closed. School is closed tomorrow."


# --------------------------------------------------------------------------------------------------
# Across the broker: the API posts, a real worker fans out and sends
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_real_worker_fans_an_announcement_out_and_sends_it(
    app, committed_school, worker_app, committing, broker, tmp_path, monkeypatch
):
    monkeypatch.setenv("MAIL_BACKEND", "file")
    monkeypatch.setenv("MAIL_DIR", str(tmp_path / "mail"))
    monkeypatch.setenv("SMS_BACKEND", "file")
    monkeypatch.setenv("SMS_DIR", str(tmp_path / "sms"))
    iid, students = committed_school["institution_id"], committed_school["students"]
    now = utcnow()
    stamp = {"institution_id": iid, "created_at": now, "updated_at": now}
    with app.app_context(), db.engine.begin() as conn:
        by_sms, by_mail = (
            conn.execute(
                Guardian.__table__.insert().returning(Guardian.__table__.c.id),
                [
                    {
                        **stamp,
                        "first_name": "Sam",
                        "last_name": "Sms",
                        "phone": "0711 000 333",
                        "email": None,
                        "notify_by": "sms",
                    },
                    {
                        **stamp,
                        "first_name": "Em",
                        "last_name": "Mail",
                        "email": f"em@{committed_school['slug']}.test",
                        "phone": None,
                        "notify_by": "email",
                    },
                ],
            )
            .scalars()
            .all()
        )
        conn.execute(  # Sam has two children in the class: one message all the same
            StudentGuardian.__table__.insert(),
            [
                {"institution_id": iid, "student_id": students[0], "guardian_id": by_sms},
                {"institution_id": iid, "student_id": students[1], "guardian_id": by_sms},
                {"institution_id": iid, "student_id": students[2], "guardian_id": by_mail},
            ],
        )
    _, client = worker_app
    api = committed_school["login"](client)
    resp = api.post(
        "/announcements",
        json={
            "title": "Half term",
            "body": "No school next week.",
            "audience": "class",
            "class_id": committed_school["class_id"],
        },
    )
    assert resp.status_code == 201, resp.get_json()
    aid = resp.get_json()["id"]

    def row():
        with app.app_context(), db.engine.connect() as conn:
            return (
                conn.execute(select(Announcement.__table__).where(Announcement.__table__.c.id == aid))
                .mappings()
                .one()
            )

    with Worker(broker, tmp_path / "exports", tmp_path, name="announce") as worker:
        poll(
            row,
            lambda r: r["status"] == "delivered",
            60,
            "the worker to fan the announcement out",
            worker=worker,
        )
        poll(
            lambda: sorted(p.name for p in tmp_path.rglob("*") if p.suffix in (".eml", ".json")),
            lambda names: len(names) >= 2,
            60,
            "the e-mail and the SMS to be sent",
            worker=worker,
        )
    r = row()
    assert r["recipient_count"] == 3 + 2 and r["email_count"] == 1 and r["sms_count"] == 1
    texts = [json.loads(p.read_text()) for p in (tmp_path / "sms").glob("*.json")]
    texts = [t for t in texts if t["to"] == "+254711000333"]
    assert len(texts) == 1 and "Half term" in texts[0]["message"]
    mails = [
        p for p in (tmp_path / "mail").glob("*.eml") if f"em@{committed_school['slug']}.test" in p.read_text()
    ]
    assert len(mails) == 1
