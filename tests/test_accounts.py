"""Accounts over their life: invitations, forgotten passwords, links that work once, the password
policy, and the links every e-mail carries (followed with the test client). The outbox rows hold the
e-mails: their context has the link the message shows."""

import json
import secrets
import statistics
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from app.auth import accounts
from app.auth.models import AccountToken
from app.auth.passwords import password_problem
from app.core.models import utcnow
from app.extensions import db
from app.notifications import mailer
from app.notifications.models import OutboxEmail
from app.notifications.services import mail_context
from app.people.models import Teacher, User
from tests.conftest import PASSWORD, Api, assert_problem, login

FORGOT = "/api/v1/auth/password/forgot"
SET = "/api/v1/auth/password/set"
NEW_PASSWORD = "violet-harbour-lantern"


def mails(template, to=None):
    stmt = select(OutboxEmail).where(OutboxEmail.template == template).order_by(OutboxEmail.id)
    if to is not None:
        stmt = stmt.where(OutboxEmail.to_address == to)
    return db.session.execute(stmt, execution_options={"skip_tenant": True}).scalars().all()


def sent_context(mail):
    """The context the mail is rendered with when sent: its links are made then, never stored."""
    return mail_context(mail.template, mail.context, mail.institution_id)


def link_path(app, mail):
    """The path (and query) of the link a mail carries, checked to start with PUBLIC_BASE_URL."""
    context = sent_context(mail)
    link = context["link"]
    base = app.config["PUBLIC_BASE_URL"]
    assert link.startswith(base + "/"), (link, base)
    # The outbox row holds no working link: not the link, not its token.
    assert "link" not in mail.context and token_of(link) not in json.dumps(mail.context)
    text, html = mailer.render(mail.template, context)
    assert link in text and link in html  # the message shows the link it names
    return link[len(base) :]


def token_of(path):
    return path.split("token=", 1)[1]


def forgot(client, email):
    return client.post(FORGOT, json={"email": email})


# --- forgotten passwords --------------------------------------------------------------------------------


def test_forgot_password_answers_alike_for_known_and_unknown_addresses(client, monkeypatch):
    known = forgot(client, "accountant@demo-academy.test")
    unknown = forgot(client, "nobody-at-all@demo-academy.test")
    assert known.status_code == unknown.status_code == 202
    assert known.get_json() == unknown.get_json()
    assert known.headers["Content-Type"] == unknown.headers["Content-Type"]
    assert len(mails("password_reset", "accountant@demo-academy.test")) == 1
    assert mails("password_reset", "nobody-at-all@demo-academy.test") == []

    # About the same time: the request queues the message, it never sends it itself.
    def median(email):
        times = []
        for _ in range(5):
            started = time.perf_counter()
            assert forgot(client, email).status_code == 202
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    monkeypatch.setattr(accounts, "RESET_MAIL_EVERY", timedelta(0))  # every known request writes its link
    assert abs(median("teacher@demo-academy.test") - median("nobody-else@demo-academy.test")) < 0.25
    assert len(mails("password_reset", "teacher@demo-academy.test")) == 5


def test_reset_link_sets_the_password_once_and_ends_every_session(app, client):
    email = "accountant@demo-academy.test"
    one, two = Api(client, login(client, email)), Api(client, login(client, email))
    assert forgot(client, email.upper()).status_code == 202  # addresses compare without case
    (mail,) = mails("password_reset", email)
    assert mail.subject.startswith("Reset your Schoolhouse password")
    path = link_path(app, mail)
    assert path.startswith("/account/password?token=")

    page = client.get(path)  # opening the page (a mail scanner would) does not use the link
    assert page.status_code == 200 and b"Choose a new password" in page.data and email.encode() in page.data
    assert "form-action 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"

    resp = client.post(SET, json={"token": token_of(path), "new_password": NEW_PASSWORD})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["purpose"] == "reset" and resp.get_json()["email"] == email
    assert_problem(one.get("/auth/me"), 401)
    assert_problem(two.get("/auth/me"), 401)
    assert_problem(client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD}), 401)
    assert login(client, email, NEW_PASSWORD)["user"]["email"] == email

    again = client.post(SET, json={"token": token_of(path), "new_password": "another-fine-passphrase"})
    assert assert_problem(again, 410)["type"].endswith("link-used")
    used_page = client.get(path)
    assert used_page.status_code == 410 and b"already used" in used_page.data


def test_the_page_form_sets_the_password(app, client):
    email = "teacher@demo-academy.test"
    forgot(client, email)
    path = link_path(app, mails("password_reset", email)[0])
    token = token_of(path)
    form = {"token": token, "password": NEW_PASSWORD, "confirm": "something else entirely"}
    assert client.post("/account/password", data=form).status_code == 422
    form["password"] = form["confirm"] = "Sunshine2024!"
    page = client.post("/account/password", data=form)
    assert page.status_code == 422 and b"too common" in page.data
    form["password"] = form["confirm"] = NEW_PASSWORD
    done = client.post("/account/password", data=form)
    assert done.status_code == 200 and b"Your password is saved" in done.data
    assert login(client, email, NEW_PASSWORD)["user"]["role"] == "teacher"
    assert client.post("/account/password", data=form).status_code == 410


def test_reset_links_expire_and_bad_ones_are_refused(app, client):
    email = "guardian@demo-academy.test"
    forgot(client, email)
    token = token_of(link_path(app, mails("password_reset", email)[0]))
    db.session.execute(update(AccountToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    body = assert_problem(client.post(SET, json={"token": token, "new_password": NEW_PASSWORD}), 410)
    assert body["type"].endswith("link-expired")
    body = assert_problem(client.post(SET, json={"token": "x" * 43, "new_password": NEW_PASSWORD}), 400)
    assert body["type"].endswith("link-invalid")
    assert client.get("/account/password?token=nonsense").status_code == 400
    assert login(client, email)["user"]["role"] == "guardian"  # the old password still works


def test_reset_mails_are_throttled_and_never_sent_to_closed_accounts(client, admin, demo):
    email = "student@demo-academy.test"
    forgot(client, email)
    forgot(client, email)
    assert len(mails("password_reset", email)) == 1  # one link every few minutes, however often asked
    student = db.session.execute(select(User).where(User.email == email)).scalar_one()
    assert admin.patch(f"/users/{student.id}", json={"is_active": False}).status_code == 200
    db.session.execute(update(AccountToken).values(created_at=utcnow() - timedelta(hours=1)))
    assert forgot(client, email).status_code == 202
    assert len(mails("password_reset", email)) == 1


def test_a_new_password_spends_every_open_link(app, client, admin, demo):
    email = "accountant@demo-academy.test"
    forgot(client, email)
    first = token_of(link_path(app, mails("password_reset", email)[0]))
    user_id = db.session.execute(select(User.id).where(User.email == email)).scalar_one()
    assert admin.post(f"/users/{user_id}/invitation").status_code == 201
    invite = token_of(link_path(app, mails("account_invitation", email)[0]))
    assert client.post(SET, json={"token": invite, "new_password": NEW_PASSWORD}).status_code == 200
    assert_problem(client.post(SET, json={"token": first, "new_password": "one-more-passphrase"}), 410)


# --- invitations ------------------------------------------------------------------------------------------


def test_admin_invites_a_teacher_who_chooses_a_password(app, client, admin, demo):
    teacher = admin.post(
        "/teachers",
        json={
            "employee_number": "INV-1",
            "first_name": "Ada",
            "last_name": "Okafor",
            "email": "ada@demo.test",
        },
    ).get_json()
    body = {
        "email": "Ada.Okafor@Demo-Academy.test",
        "role": "teacher",
        "first_name": "Ada",
        "last_name": "Okafor",
        "teacher_id": teacher["id"],
    }
    resp = admin.post("/invitations", json=body)
    assert resp.status_code == 201, resp.get_json()
    invited = resp.get_json()
    assert invited["email"] == "ada.okafor@demo-academy.test" and invited["role"] == "teacher"
    assert invited["invitation_expires_at"]
    assert db.session.get(Teacher, teacher["id"]).user_id == invited["id"]
    # No password yet: nothing logs in until the link is used.
    assert_problem(
        client.post(
            "/api/v1/auth/login", json={"email": invited["email"], "password": "School-Administrator"}
        ),
        401,
    )
    (mail,) = mails("account_invitation", invited["email"])
    assert "Demo Academy" in mail.subject and mail.context["role_label"] == "teacher"
    path = link_path(app, mail)
    info = client.get(f"/api/v1/auth/password/link?token={token_of(path)}").get_json()
    assert info["purpose"] == "invite" and info["email"] == invited["email"]
    page = client.get(path)
    assert page.status_code == 200 and b"Choose your password" in page.data

    # Inviting again: a new link, and the first stops working.
    assert admin.post(f"/users/{invited['id']}/invitation").status_code == 201
    old, new = mails("account_invitation", invited["email"])
    assert_problem(client.post(SET, json={"token": token_of(path), "new_password": NEW_PASSWORD}), 410)
    new_token = token_of(link_path(app, new))
    assert client.post(SET, json={"token": new_token, "new_password": NEW_PASSWORD}).status_code == 200
    me = Api(client, login(client, invited["email"], NEW_PASSWORD)).get("/auth/me").get_json()
    assert me["role"] == "teacher" and me["teacher_id"] == teacher["id"]


def test_invitations_are_for_admins_and_check_what_a_login_needs(admin, teacher, hillside_admin, demo):
    body = {"email": "new.person@demo-academy.test", "role": "teacher", "first_name": "N", "last_name": "P"}
    assert_problem(teacher.post("/invitations", json=body), 403)
    assert_problem(admin.post("/invitations", json=body), 422, "teacher_id")
    assert_problem(admin.post("/invitations", json={**body, "password": "x" * 12}), 422, "password")
    # Addresses are unique without regard to case (uq_users_email_lower), in a school and across them.
    taken = {**body, "role": "admin", "email": "ADMIN@demo-academy.test"}
    assert assert_problem(admin.post("/invitations", json=taken), 409)["detail"].startswith(
        "A user with this"
    )
    assert_problem(hillside_admin.post("/invitations", json=taken), 409)
    assert_problem(hillside_admin.post(f"/users/{demo['demo_user_ids']['teacher']}/invitation"), 404)


# --- the password policy, wherever a password is set ---------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "ok"),
    [
        ("short", False),
        ("qwertyuiop", False),
        ("Password1234", False),
        ("liverpool2020!", False),
        (NEW_PASSWORD, True),
        ("correct horse battery staple", True),
    ],
)
def test_the_policy_refuses_short_and_common_passwords(password, ok):
    assert (password_problem(password) is None) is ok


def test_the_policy_applies_to_new_logins_and_changes(app, admin, client, demo):
    free = (
        db.session.execute(
            select(Teacher.id).where(
                Teacher.user_id.is_(None), Teacher.institution_id == demo["demo_institution_id"]
            )
        )
        .scalars()
        .first()
    )
    body = {
        "email": "policy@demo-academy.test",
        "password": "Password1234",
        "role": "teacher",
        "first_name": "P",
        "last_name": "Q",
        "teacher_id": free,
    }
    assert "common" in assert_problem(admin.post("/users", json=body), 422, "password")["errors"]["password"]
    accountant = Api(client, login(client, "accountant@demo-academy.test"))
    change = {"current_password": PASSWORD, "new_password": "sunshine2024"}
    assert_problem(accountant.post("/auth/password", json=change), 422, "new_password")
    forgot(client, "accountant@demo-academy.test")
    token = token_of(link_path(app, mails("password_reset", "accountant@demo-academy.test")[0]))
    assert_problem(client.post(SET, json={"token": token, "new_password": "qwertyuiop"}), 422, "new_password")


# --- the export-ready e-mail's link ------------------------------------------------------------------------


@pytest.fixture
def exports_in_process(app, tmp_path):
    celery = app.extensions["celery"]
    saved = celery.conf.task_always_eager, app.config["EXPORT_DIR"]
    celery.conf.task_always_eager = True
    app.config["EXPORT_DIR"] = str(tmp_path / "exports")
    yield
    celery.conf.task_always_eager, app.config["EXPORT_DIR"] = saved


def test_export_ready_mail_links_to_the_file(app, client, admin, demo, exports_in_process):
    resp = admin.post(
        "/exports",
        json={"kind": "class_roster", "format": "csv", "params": {"class_id": demo["demo_class_id"]}},
    )
    job = admin.get(resp.headers["Location"]).get_json()
    assert job["status"] == "done"
    mail = db.session.execute(
        select(OutboxEmail).where(OutboxEmail.dedupe_key == f"export-ready:{job['id']}")
    ).scalar_one()
    assert mail.context["download_url"] is None  # the row keeps no credential: signed when sent
    context = sent_context(mail)
    link = context["download_url"]
    base = app.config["PUBLIC_BASE_URL"]
    assert link.startswith(f"{base}/api/v1/exports/{job['id']}/download?token=")
    text, html = mailer.render(mail.template, context)
    assert link in text and "Download it from Schoolhouse" not in text and link in html
    # The mail is read later than an API client's link lives: its link lasts as long as the export.
    saved = app.config["EXPORT_LINK_TTL"]
    app.config["EXPORT_LINK_TTL"] = -1
    try:
        download = client.get(link[len(base) :])  # no Authorization: the signed link is the credential
    finally:
        app.config["EXPORT_LINK_TTL"] = saved
    assert download.status_code == 200, download.get_data(as_text=True)
    assert download.headers["Content-Disposition"].startswith("attachment") and download.data
    token = link.split("token=")[1]
    assert_problem(client.get(f"/api/v1/exports/{job['id'] + 1}/download?token={token}"), 403)


# --- PUBLIC_BASE_URL ------------------------------------------------------------------------------------------


def test_public_base_url_setting(monkeypatch, tmp_path):
    from app import create_app
    from config import Config, ProductionConfig, public_base_url

    assert public_base_url("https://school.example.org/") == "https://school.example.org"
    assert public_base_url("https://example.org/schoolhouse") == "https://example.org/schoolhouse"
    for bad in ("school.example.org", "ftp://x.org", "https://x.org/?a=1", "https://"):
        with pytest.raises(RuntimeError, match="PUBLIC_BASE_URL"):
            public_base_url(bad)
    monkeypatch.setenv("INSTANCE_DIR", str(tmp_path))
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    assert Config().PUBLIC_BASE_URL == "http://127.0.0.1:5000"  # `make run`
    monkeypatch.setenv("SECRET_KEY", secrets.token_urlsafe(32))
    monkeypatch.setenv("SMTP_HOST", "smtp.example.test")
    monkeypatch.delenv("MAIL_BACKEND", raising=False)
    with pytest.raises(RuntimeError, match="PUBLIC_BASE_URL is not set"):
        create_app("production")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://school.example.org")
    assert ProductionConfig().PUBLIC_BASE_URL == "https://school.example.org"


def test_links_follow_public_base_url(app, client):
    forgot(client, "accountant@demo-academy.test")
    mail = mails("password_reset", "accountant@demo-academy.test")[0]
    saved = app.config["PUBLIC_BASE_URL"]
    app.config["PUBLIC_BASE_URL"] = "https://school.example.org/sh"
    try:  # the link is made when the mail is sent, on the setting of that moment
        link = sent_context(mail)["link"]
    finally:
        app.config["PUBLIC_BASE_URL"] = saved
    assert link.startswith("https://school.example.org/sh/account/password?token=")


def test_changing_the_password_spends_mailed_links(app, client):
    email = "accountant@demo-academy.test"
    forgot(client, email)
    token = token_of(link_path(app, mails("password_reset", email)[0]))
    me = Api(client, login(client, email))
    change = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert me.post("/auth/password", json=change).status_code == 204
    assert_problem(client.post(SET, json={"token": token, "new_password": "yet-another-passphrase"}), 410)
