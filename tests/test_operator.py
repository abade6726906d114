"""The platform's operator: creates schools (inviting the first admin), suspends and resumes them, and
reaches no school's records. The end-to-end test is the issue's "Done when": a new school from the
operator's command to its teacher's first login, then suspended."""

import re

import pytest
from sqlalchemy import func, select

from app.audit.models import AuditEntry
from app.extensions import db
from app.institutions.models import Institution
from app.notifications.models import OutboxEmail
from app.notifications.services import mail_context
from app.operator import services
from app.people.models import User
from tests.conftest import PASSWORD, Api, assert_problem, login

OPERATOR_EMAIL = "ops@platform.test"
OPERATOR_PASSWORD = "harbour-lantern-operator"
SCHOOL = {
    "name": "Lakeside Primary",
    "timezone": "Africa/Nairobi",
    "country": "KE",
    "currency": "KES",
    "admin_email": "head@lakeside.test",
    "admin_first_name": "Wanjiru",
    "admin_last_name": "Kamau",
}


def skip_tenant(stmt):
    return db.session.execute(stmt, execution_options={"skip_tenant": True})


def invitation_path(app, to):
    mail = (
        skip_tenant(
            select(OutboxEmail)
            .where(OutboxEmail.template == "account_invitation", OutboxEmail.to_address == to)
            .order_by(OutboxEmail.id.desc())
        )
        .scalars()
        .first()
    )
    assert mail is not None, f"no invitation to {to}"
    link = mail_context(mail.template, mail.context, mail.institution_id)["link"]  # made when sent
    base = app.config["PUBLIC_BASE_URL"]
    assert link.startswith(base + "/account/password?token=")
    return link[len(base) :]


@pytest.fixture
def operator(client):
    services.create_operator(OPERATOR_EMAIL, "Platform Ops", OPERATOR_PASSWORD)
    resp = client.post(
        "/api/v1/operator/login", json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}
    )
    assert resp.status_code == 200, resp.get_json()
    tokens = resp.get_json()
    assert tokens["operator"]["email"] == OPERATOR_EMAIL and "refresh_token" not in tokens
    return Api(client, {**tokens, "user": tokens["operator"]})


def test_a_school_starts_on_its_own_and_can_be_suspended(app, client, operator):
    resp = operator.post("/operator/institutions", json=SCHOOL)
    assert resp.status_code == 201, resp.get_json()
    school = resp.get_json()
    assert school["slug"] == "lakeside-primary" and school["admin_email"] == "head@lakeside.test"
    assert school["country"] == "KE" and school["suspended_at"] is None

    # The first admin opens the invitation link, chooses a password on the page, logs in.
    path = invitation_path(app, "head@lakeside.test")
    page = client.get(path)
    assert page.status_code == 200 and b"Lakeside Primary" in page.data
    token = re.search(rb'name="token" value="([^"]+)"', page.data).group(1).decode()
    form = {"token": token, "password": "lakeside-head-2026", "confirm": "lakeside-head-2026"}
    assert client.post("/account/password", data=form).status_code == 200
    admin = Api(client, login(client, "head@lakeside.test", "lakeside-head-2026"))
    assert admin.user["role"] == "admin" and admin.user["institution_id"] == school["id"]
    assert admin.get("/institution").get_json()["name"] == "Lakeside Primary"

    # The admin invites a teacher, who chooses a password through the API and logs in.
    teacher = admin.post(
        "/teachers", json={"employee_number": "T-1", "first_name": "Otieno", "last_name": "Were"}
    ).get_json()
    invited = admin.post(
        "/invitations",
        json={
            "email": "otieno@lakeside.test",
            "role": "teacher",
            "first_name": "Otieno",
            "last_name": "Were",
            "teacher_id": teacher["id"],
        },
    )
    assert invited.status_code == 201, invited.get_json()
    token = invitation_path(app, "otieno@lakeside.test").split("token=")[1]
    done = client.post(
        "/api/v1/auth/password/set", json={"token": token, "new_password": "otieno-chalk-board"}
    )
    assert done.status_code == 200 and done.get_json()["school"] == "Lakeside Primary"
    teacher_tokens = login(client, "otieno@lakeside.test", "otieno-chalk-board")
    assert Api(client, teacher_tokens).get("/auth/me").get_json()["teacher_id"] == teacher["id"]

    # The operator suspends the school: the admin's next request is refused, and so are logins.
    listed = operator.get("/operator/institutions?q=lakeside").get_json()["data"]
    assert [s["slug"] for s in listed] == ["lakeside-primary"]
    resp = operator.post("/operator/institutions/lakeside-primary/suspend", json={"reason": "unpaid"})
    assert (
        resp.status_code == 200 and resp.get_json()["suspended_at"] and resp.get_json()["sessions_ended"] == 2
    )
    assert_problem(admin.get("/students"), 401)
    body = assert_problem(
        client.post(
            "/api/v1/auth/login", json={"email": "head@lakeside.test", "password": "lakeside-head-2026"}
        ),
        403,
    )
    assert body["type"].endswith("school-suspended") and "suspended" in body["detail"]
    refresh = client.post("/api/v1/auth/refresh", json={"refresh_token": teacher_tokens["refresh_token"]})
    assert assert_problem(refresh, 403)["type"].endswith("school-suspended")
    # Forgot-password answers as always but sends nothing; links stop working.
    before = skip_tenant(select(func.count()).select_from(OutboxEmail)).scalar()
    assert (
        client.post("/api/v1/auth/password/forgot", json={"email": "head@lakeside.test"}).status_code == 202
    )
    assert skip_tenant(select(func.count()).select_from(OutboxEmail)).scalar() == before
    # Its records stay.
    people = skip_tenant(select(func.count()).select_from(User).where(User.institution_id == school["id"]))
    assert people.scalar() == 2
    trail = (
        skip_tenant(
            select(AuditEntry.action).where(
                AuditEntry.institution_id == school["id"], AuditEntry.entity_type == "institution"
            )
        )
        .scalars()
        .all()
    )
    assert trail == ["create", "suspend"]

    # Resumed, it opens again.
    assert operator.post("/operator/institutions/lakeside-primary/resume").get_json()["suspended_at"] is None
    assert login(client, "head@lakeside.test", "lakeside-head-2026")["user"]["role"] == "admin"


def test_the_operator_reaches_no_school_endpoint(app, operator):
    """403 on every /api/v1 route outside the operator's own, whatever the method: admission refuses the
    operator's token before any view runs (so no view can forget to)."""
    walked = 0
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if not rule.rule.startswith("/api/v1/") or rule.rule.startswith("/api/v1/operator/"):
            continue
        if getattr(view, "is_public", False):
            continue  # login, refresh, docs, signed downloads, links: no token is read there
        url = re.sub(r"<int:\w+>", "1", rule.rule)
        url = re.sub(r"<(?:\w+:)?\w+>", "2026-01-05", url)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            resp = operator._call(method, url, json={})
            assert resp.status_code == 403, (method, url, resp.status_code, resp.get_data(as_text=True))
            walked += 1
    assert walked >= 80


def test_school_people_reach_no_operator_endpoint(admin, client):
    assert_problem(admin.get("/operator/institutions"), 403)
    assert_problem(admin.post("/operator/institutions", json=SCHOOL), 403)
    assert_problem(admin.post("/operator/institutions/demo-academy/suspend"), 403)
    # An operator is no school's login, and a school's login is no operator.
    assert_problem(
        client.post(
            "/api/v1/operator/login", json={"email": "admin@demo-academy.test", "password": PASSWORD}
        ),
        401,
    )


def test_operator_logins_are_their_own(client, operator):
    assert_problem(
        client.post("/api/v1/auth/login", json={"email": OPERATOR_EMAIL, "password": OPERATOR_PASSWORD}), 401
    )
    assert operator.get("/operator/me").get_json()["email"] == OPERATOR_EMAIL
    assert operator.post("/operator/logout").status_code == 204
    assert_problem(operator.get("/operator/me"), 401)


def test_a_deactivated_operators_session_ends(operator):
    from app.operator.models import Operator

    db.session.execute(
        select(Operator).where(Operator.email == OPERATOR_EMAIL)
    ).scalar_one().is_active = False
    db.session.flush()
    assert_problem(operator.get("/operator/institutions"), 401)


def test_school_creation_checks_its_inputs(operator):
    bad = {
        **SCHOOL,
        "timezone": "Mars/Olympus_Mons",
        "country": "XX",
        "currency": "KEZ",
        "admin_email": "nope",
    }
    body = assert_problem(operator.post("/operator/institutions", json=bad), 422)
    assert set(body["errors"]) == {"timezone", "country", "currency", "admin_email"}
    assert "IANA" in body["errors"]["timezone"] and "ISO 3166" in body["errors"]["country"]
    count = db.session.scalar(select(func.count()).select_from(Institution))
    taken = {**SCHOOL, "admin_email": "ADMIN@demo-academy.test"}
    assert_problem(operator.post("/operator/institutions", json=taken), 409)
    assert db.session.scalar(select(func.count()).select_from(Institution)) == count  # nothing half-made
    assert_problem(operator.post("/operator/institutions/no-such-school/suspend"), 404)


def test_two_schools_of_one_name_get_their_own_slugs(operator):
    first = operator.post("/operator/institutions", json=SCHOOL).get_json()
    second = operator.post(
        "/operator/institutions", json={**SCHOOL, "admin_email": "two@lakeside.test"}
    ).get_json()
    assert (first["slug"], second["slug"]) == ("lakeside-primary", "lakeside-primary-2")


# --- the CLI -----------------------------------------------------------------------------------------------


def cli(app, *args, **kw):
    return app.test_cli_runner().invoke(args=list(args), **kw)


def test_cli_creates_the_operator_and_a_school(app, client):
    result = cli(app, "operators", "create", "--email", "First@Platform.test", "--name", "First",
                 input="first-operator-key\nfirst-operator-key\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "first@platform.test" in result.output
    weak = cli(
        app, "operators", "create", "--email", "b@platform.test", "--name", "B", "--password", "password123"
    )
    assert weak.exit_code != 0 and "too common" in weak.output

    result = cli(app, "schools", "create", "--name", "Hilltop Academy", "--timezone", "Europe/London",
                 "--country", "gb", "--currency", "gbp", "--admin-email", "office@hilltop.test")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "slug hilltop-academy" in result.output and "office@hilltop.test" in result.output
    inst = db.session.execute(select(Institution).where(Institution.slug == "hilltop-academy")).scalar_one()
    assert (inst.country, inst.currency, inst.timezone) == ("GB", "GBP", "Europe/London")
    path = invitation_path(app, "office@hilltop.test")
    assert app.config["PUBLIC_BASE_URL"] + path in result.output  # file backend: the link is shown too
    assert client.get(path).status_code == 200

    again = cli(app, "schools", "invite-admin", "hilltop-academy", "OFFICE@hilltop.test")
    assert again.exit_code == 0, again.output
    assert invitation_path(app, "office@hilltop.test") != path
    assert client.get(path).status_code == 410  # the earlier link is spent

    bad = cli(app, "schools", "create", "--name", "X", "--timezone", "Nowhere/Town", "--country", "GB",
              "--currency", "GBP", "--admin-email", "x@hilltop.test")  # fmt: skip
    assert bad.exit_code != 0 and "timezone" in bad.output

    assert cli(app, "schools", "suspend", "hilltop-academy", "--reason", "test").exit_code == 0
    assert db.session.get(Institution, inst.id).suspended_at is not None
    assert '"slug": "hilltop-academy"' in cli(app, "schools", "list").output
    assert cli(app, "schools", "resume", "hilltop-academy").exit_code == 0
    assert db.session.get(Institution, inst.id).suspended_at is None


def test_the_operator_invites_an_admin_again_or_a_new_one(app, client, operator):
    operator.post("/operator/institutions", json=SCHOOL)
    first = invitation_path(app, "head@lakeside.test")
    resp = operator.post(
        "/operator/institutions/lakeside-primary/admin-invitation", json={"email": "head@lakeside.test"}
    )
    assert resp.status_code == 201, resp.get_json()
    assert (
        client.get(first).status_code == 410
        and client.get(invitation_path(app, "head@lakeside.test")).status_code == 200
    )
    new = operator.post(
        "/operator/institutions/lakeside-primary/admin-invitation",
        json={"email": "deputy@lakeside.test", "first_name": "Achieng", "last_name": "Odhiambo"},
    )
    assert new.status_code == 201 and new.get_json()["user_id"] != resp.get_json()["user_id"]
    token = invitation_path(app, "deputy@lakeside.test").split("token=")[1]
    assert (
        client.post(
            "/api/v1/auth/password/set", json={"token": token, "new_password": "deputy-head-lakeside"}
        ).status_code
        == 200
    )
    assert login(client, "deputy@lakeside.test", "deputy-head-lakeside")["user"]["role"] == "admin"
    # Another school's address (or a non-admin login) is not taken over.
    assert_problem(
        operator.post(
            "/operator/institutions/lakeside-primary/admin-invitation",
            json={"email": "admin@demo-academy.test"},
        ),
        409,
    )
