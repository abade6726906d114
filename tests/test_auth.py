import time

import jwt

from app.audit.models import AuditEntry
from app.extensions import db
from tests.conftest import PASSWORD, Api, assert_problem, login


def test_login_gives_tokens_and_me_shows_role_and_links(client, demo):
    tokens = login(client, "teacher@demo-academy.test")
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0
    me = Api(client, tokens).get("/auth/me").get_json()
    assert me["role"] == "teacher" and me["teacher_id"] == demo["demo_teacher_id"]
    assert me["student_id"] is None and me["guardian_id"] is None

    for email, key in (
        ("guardian@demo-academy.test", "guardian_id"),
        ("student@demo-academy.test", "student_id"),
    ):
        me = Api(client, login(client, email)).get("/auth/me").get_json()
        assert me[key] is not None and me["role"] == key.split("_")[0]


def test_login_is_case_insensitive_on_email(client):
    assert login(client, "ADMIN@Demo-Academy.test")["user"]["role"] == "admin"


def test_wrong_password_is_401_problem_and_audited(client, demo):
    resp = client.post("/api/v1/auth/login", json={"email": "admin@demo-academy.test", "password": "nope"})
    assert_problem(resp, 401)
    resp = client.post("/api/v1/auth/login", json={"email": "nobody@nowhere.test", "password": "nope"})
    assert_problem(resp, 401)
    rows = (
        db.session.query(AuditEntry)
        .filter_by(action="login_failed", institution_id=demo["demo_institution_id"])
        .all()
    )
    assert len(rows) == 1


def test_missing_or_bad_token_is_401(client):
    assert_problem(client.get("/api/v1/students"), 401)
    assert_problem(client.get("/api/v1/students", headers={"Authorization": "Bearer abc.def.ghi"}), 401)


def test_unsigned_or_foreign_algorithm_token_is_refused(client, app):
    claims = {
        "sub": "1",
        "ins": 1,
        "role": "admin",
        "sid": "x",
        "typ": "access",
        "iat": int(time.time()),
        "exp": int(time.time()) + 600,
    }
    none_token = jwt.encode(claims, key=None, algorithm="none")
    assert_problem(client.get("/api/v1/students", headers={"Authorization": f"Bearer {none_token}"}), 401)
    forged = jwt.encode(claims, "some-other-secret-that-is-long-enough-000", algorithm="HS256")
    assert_problem(client.get("/api/v1/students", headers={"Authorization": f"Bearer {forged}"}), 401)


def test_expired_access_token_is_401(client, app):
    tokens = login(client, "admin@demo-academy.test")
    claims = jwt.decode(tokens["access_token"], app.config["SECRET_KEY"], algorithms=["HS256"])
    claims.update(iat=int(time.time()) - 3600, exp=int(time.time()) - 60)
    expired = jwt.encode(claims, app.config["SECRET_KEY"], algorithm="HS256")
    body = assert_problem(client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {expired}"}), 401)
    assert "expired" in body["detail"]


def test_refresh_rotates_and_reuse_revokes_the_chain(client):
    first = login(client, "admin@demo-academy.test")
    resp = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert resp.status_code == 200
    second = resp.get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert Api(client, second).get("/auth/me").status_code == 200

    # The spent token comes back: the whole chain ends, including the newest tokens.
    assert_problem(client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}), 401)
    assert_problem(client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}), 401)
    assert_problem(Api(client, second).get("/auth/me"), 401)


def test_logout_ends_access_and_refresh_tokens_at_once(client):
    tokens = login(client, "admin@demo-academy.test")
    api = Api(client, tokens)
    assert api.post("/auth/logout").status_code == 204
    assert_problem(api.get("/auth/me"), 401)
    assert_problem(client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}), 401)
    # Another session of the same user is unaffected.
    assert Api(client, login(client, "admin@demo-academy.test")).get("/auth/me").status_code == 200


def test_password_change_ends_other_sessions(client):
    a = Api(client, login(client, "accountant@demo-academy.test"))
    b = Api(client, login(client, "accountant@demo-academy.test"))
    assert_problem(
        a.post("/auth/password", json={"current_password": "wrong", "new_password": "x" * 12}),
        422,
        "current_password",
    )
    resp = a.post("/auth/password", json={"current_password": PASSWORD, "new_password": "a-new-password-123"})
    assert resp.status_code == 204
    assert a.get("/auth/me").status_code == 200
    assert_problem(b.get("/auth/me"), 401)
    assert login(client, "accountant@demo-academy.test", "a-new-password-123")["user"]["role"] == "accountant"


def test_role_change_ends_the_users_sessions(client, admin):
    target = login(client, "accountant@demo-academy.test")
    resp = admin.patch(f"/users/{target['user']['id']}", json={"role": "admin"})
    assert resp.status_code == 200 and resp.get_json()["role"] == "admin"
    assert_problem(Api(client, target).get("/auth/me"), 401)


def test_own_role_is_read_only(admin):
    resp = admin.patch(f"/users/{admin.user['id']}", json={"role": "teacher"})
    assert_problem(resp, 422, "role")


def test_passwords_are_stored_as_argon2id(demo):
    from app.people.models import User

    user = db.session.query(User).filter_by(email="admin@demo-academy.test").one()
    assert user.password_hash.startswith("$argon2id$")


def test_logout_survives_a_redis_flush(client, redis_client, demo):
    """Revocations are copied to Redis for speed; losing Redis's copy must not revive a session."""
    tokens = login(client, "admin@demo-academy.test")
    api = Api(client, tokens)
    assert api.post("/auth/logout").status_code == 204
    redis_client.flushall()
    assert_problem(api.get("/auth/me"), 401)
    assert_problem(api.get(f"/students/{demo['demo_student_id']}"), 401)  # the cached-read path too
