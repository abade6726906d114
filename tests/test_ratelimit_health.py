from app import create_app
from tests.conftest import assert_problem

CLOSED = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def test_sixth_wrong_password_gets_429_with_retry_after(client):
    body = {"email": "teacher@demo-academy.test", "password": "wrong"}
    codes = [client.post("/api/v1/auth/login", json=body).status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]
    resp = client.post("/api/v1/auth/login", json=body)
    assert_problem(resp, 429)
    assert int(resp.headers["Retry-After"]) > 0
    assert "X-RateLimit-Limit" in resp.headers
    # The limit is per account: another account from the same address still logs in.
    ok = client.post(
        "/api/v1/auth/login", json={"email": "admin@demo-academy.test", "password": "demo-password-for-tests"}
    )
    assert ok.status_code == 200


def test_rate_limit_headers_on_every_response_when_enabled():
    app = create_app("testing", RATELIMIT_HEADERS_ENABLED=True, RATELIMIT_API="50 per 15 minutes")
    resp = app.test_client().get("/api/v1/openapi.json")
    assert resp.status_code == 200  # exempt routes carry none
    resp = app.test_client().post("/api/v1/auth/login", json={"email": "nobody@x.test", "password": "x"})
    assert resp.headers["X-RateLimit-Limit"] and int(resp.headers["X-RateLimit-Remaining"]) >= 0


def test_successful_logins_do_not_use_up_the_login_limit(client):
    body = {"email": "admin@demo-academy.test", "password": "demo-password-for-tests"}
    assert all(client.post("/api/v1/auth/login", json=body).status_code == 200 for _ in range(7))


def test_api_limit_per_user_and_health_exempt(monkeypatch):
    app = create_app("testing", RATELIMIT_API="3 per 15 minutes")
    client = app.test_client()
    tokens = client.post(
        "/api/v1/auth/login", json={"email": "admin@demo-academy.test", "password": "demo-password-for-tests"}
    ).get_json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    codes = [client.get("/api/v1/subjects", headers=headers).status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[-1] == 429, codes
    assert all(client.get("/health/live").status_code == 200 for _ in range(10))


def test_sensitive_operations_have_their_own_tighter_budget():
    app = create_app("testing", RATELIMIT_SENSITIVE="2 per hour")
    client = app.test_client()
    tokens = client.post(
        "/api/v1/auth/login", json={"email": "admin@demo-academy.test", "password": "demo-password-for-tests"}
    ).get_json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    body = {
        "email": "x@demo-academy.test",
        "password": "short",
        "role": "admin",
        "first_name": "a",
        "last_name": "b",
    }
    codes = [client.post("/api/v1/users", json=body, headers=headers).status_code for _ in range(3)]
    assert codes == [422, 422, 429]
    assert client.get("/api/v1/subjects", headers=headers).status_code == 200


def test_redis_down_still_serves_requests_not_500():
    app = create_app("testing", REDIS_URL=CLOSED)
    client = app.test_client()
    resp = client.post(
        "/api/v1/auth/login", json={"email": "admin@demo-academy.test", "password": "demo-password-for-tests"}
    )
    assert resp.status_code == 200
    headers = {"Authorization": f"Bearer {resp.get_json()['access_token']}"}
    assert client.get("/api/v1/students?limit=2", headers=headers).status_code == 200
    # Wrong passwords get their 401, never a 500, while the in-process fallback limit counts.
    body = {"email": "teacher@demo-academy.test", "password": "wrong"}
    resp = client.post("/api/v1/auth/login", json=body)
    assert resp.status_code == 401


def test_redis_down_falls_back_to_an_in_process_limit():
    app = create_app("testing", REDIS_URL=CLOSED, RATELIMIT_API="3 per 15 minutes")
    client = app.test_client()
    tokens = client.post(
        "/api/v1/auth/login", json={"email": "admin@demo-academy.test", "password": "demo-password-for-tests"}
    ).get_json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    codes = [client.get("/api/v1/subjects", headers=headers).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[-1] == 429


def test_ready_is_200_when_everything_answers(client):
    resp = client.get("/health/ready")
    assert resp.status_code == 200
    assert resp.get_json()["checks"] == {"database": "ok", "redis": "ok"}


def test_ready_is_503_naming_the_database_when_it_is_gone():
    app = create_app("testing", SQLALCHEMY_DATABASE_URI="postgresql+psycopg2://postgres@127.0.0.1:1/gone")
    resp = app.test_client().get("/health/ready")
    body = assert_problem(resp, 503)
    assert "database" in body["detail"] and body["checks"]["database"] == "down"


def test_ready_is_503_naming_redis_when_it_is_gone():
    app = create_app("testing", REDIS_URL=CLOSED)
    body = assert_problem(app.test_client().get("/health/ready"), 503)
    assert "redis" in body["detail"] and body["checks"] == {"database": "ok", "redis": "down"}


def test_redis_down_failed_logins_still_hit_the_limit_in_process():
    app = create_app("testing", REDIS_URL=CLOSED)
    client = app.test_client()
    body = {"email": "teacher@demo-academy.test", "password": "wrong"}
    codes = [client.post("/api/v1/auth/login", json=body).status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]


def test_logins_and_refreshes_are_not_counted_against_the_api_tier():
    """A school behind one address: its logins and refreshes have their own limits, not the API tier's."""
    app = create_app("testing", RATELIMIT_API="3 per 15 minutes")
    client = app.test_client()
    body = {"email": "admin@demo-academy.test", "password": "demo-password-for-tests"}
    for _ in range(5):
        tokens = client.post("/api/v1/auth/login", json=body)
        assert tokens.status_code == 200
        refreshed = client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens.get_json()["refresh_token"]}
        )
        assert refreshed.status_code == 200


def test_refreshes_have_their_own_limit_per_address():
    app = create_app("testing", RATELIMIT_REFRESH="2 per 15 minutes")
    client = app.test_client()
    tokens = client.post(
        "/api/v1/auth/login", json={"email": "admin@demo-academy.test", "password": "demo-password-for-tests"}
    ).get_json()
    codes = []
    for _ in range(3):
        resp = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        codes.append(resp.status_code)
        tokens = resp.get_json() if resp.status_code == 200 else tokens
    assert codes == [200, 200, 429]
