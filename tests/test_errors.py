from app import create_app
from tests.conftest import assert_problem


def test_unknown_path_is_problem_404(client):
    body = assert_problem(client.get("/api/v1/no-such-thing"), 404)
    assert body["type"].endswith("/404")


def test_405_names_allowed_methods(admin):
    resp = admin.put("/students")
    assert_problem(resp, 405)
    assert "GET" in resp.headers["Allow"] and "POST" in resp.headers["Allow"]


def test_415_when_body_is_not_json(admin):
    resp = admin.post(
        "/students", data="admission_number=1", content_type="application/x-www-form-urlencoded"
    )
    assert_problem(resp, 415)


def test_400_on_malformed_json(admin):
    resp = admin.post("/students", data="{not json", content_type="application/json")
    assert_problem(resp, 400)


def test_413_on_oversized_body(app, admin):
    big = "x" * (app.config["MAX_CONTENT_LENGTH"] + 10)
    resp = admin.post("/students", data=big, content_type="application/json")
    assert_problem(resp, 413)


def test_unknown_and_read_only_fields_are_named(admin):
    body = {
        "admission_number": "NEW-1",
        "first_name": "A",
        "last_name": "B",
        "nickname": "x",
        "id": 5,
        "institution_id": 2,
    }
    problem = assert_problem(admin.post("/students", json=body), 422, "nickname", "id", "institution_id")
    assert problem["errors"]["nickname"] == "is not a known field"
    assert problem["errors"]["id"] == "is read-only"
    assert admin.get("/students?admission_number=NEW-1").get_json()["data"] == []  # nothing written


def test_missing_and_invalid_fields_are_named(admin):
    problem = assert_problem(
        admin.post("/students", json={"first_name": "A", "date_of_birth": "yesterday"}),
        422,
        "admission_number",
        "last_name",
        "date_of_birth",
    )
    assert problem["errors"]["admission_number"] == "is required"


def test_request_id_is_echoed_or_made(client):
    resp = client.get("/health/live", headers={"X-Request-ID": "client-id-1234"})
    assert resp.headers["X-Request-ID"] == "client-id-1234"
    resp = client.get("/health/live", headers={"X-Request-ID": "bad id with spaces"})
    assert resp.headers["X-Request-ID"] != "bad id with spaces" and len(resp.headers["X-Request-ID"]) >= 8
    body = assert_problem(client.get("/api/v1/students", headers={"X-Request-ID": "trace-abcdef"}), 401)
    assert body["request_id"] == "trace-abcdef"


def test_production_500_hides_internals(monkeypatch):
    monkeypatch.setenv(
        "SECRET_KEY", "J8oZ2bq7VxN4uYc1Lr6Wm0TtKs3Pd9HgEa5Fi-Qn_Ul"
    )  # a weak key is now refused
    app = create_app("production")

    @app.get("/boom")
    def boom():
        raise RuntimeError("SELECT secret FROM users -- internal detail")

    boom.is_public = True

    resp = app.test_client().get("/boom")
    body = assert_problem(resp, 500)
    text = resp.get_data(as_text=True)
    assert "SELECT" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert body["request_id"]


def test_production_refuses_weak_secret(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "change-me")
    import pytest

    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app("production")
