import base64
import io

import orjson
import pytest
from sqlalchemy import text

from app import create_app
from app.core.crud import CONFLICTS
from app.extensions import db
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


# --- no 5xx from ordinary mistakes ---------------------------------------------------------------------


PAYMENT = {"student_id": 1, "amount": "10.00", "method": "cash", "reference": "NUL-KEY-1"}


def _cursor(values):
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def _no_internals(resp):
    text = resp.get_data(as_text=True)
    for leak in ("UPDATE ", "INSERT ", "SELECT ", "psycopg2", "Traceback", "IntegrityError"):
        assert leak not in text, text


@pytest.mark.parametrize(
    "path, field, taken, message",
    [
        ("/subjects/2", "code", "MATH", "A subject with this code already exists."),
        ("/users/2", "email", "admin@demo-academy.test", "A user with this e-mail address already exists."),
        (
            "/students/2",
            "admission_number",
            "DA-2026-0001",
            "A student with this admission number already exists.",
        ),
    ],
)
def test_patch_to_a_value_another_record_has_is_a_409_naming_the_clash(admin, path, field, taken, message):
    before = admin.get(path).get_json()[field]
    resp = admin.patch(path, json={field: taken})
    assert assert_problem(resp, 409)["detail"] == message
    _no_internals(resp)
    assert admin.get(path).get_json()[field] == before  # nothing half-written


def test_a_unique_clash_without_a_registered_message_is_still_a_409(admin, monkeypatch):
    monkeypatch.delitem(CONFLICTS, "uq_subjects_institution_code")
    body = assert_problem(admin.patch("/subjects/2", json={"code": "MATH"}), 409)
    assert "uq_subjects_institution_code" in body["detail"]


def test_a_clash_no_service_handled_is_a_409_not_a_500(app):
    # The net under every write (app/core/errors.py): an IntegrityError that escapes a view.
    other = create_app("testing")

    @other.post("/clash")
    def clash():
        db.session.execute(
            text("INSERT INTO subjects (institution_id, code, name, created_at, updated_at) "
                 "SELECT institution_id, code, name, created_at, updated_at FROM subjects LIMIT 1")
        )  # fmt: skip
        return "", 204

    clash.is_public = True
    resp = other.test_client().post("/clash")
    assert assert_problem(resp, 409)["detail"] == "A subject with this code already exists."
    _no_internals(resp)


@pytest.mark.parametrize("path", ["/subjects/2", "/students/1", "/class-subjects/1", "/institution"])
def test_an_empty_patch_is_a_no_op_200_returning_the_record(admin, path):
    audit_before = admin.get("/audit-log?limit=1").get_json()["data"]
    before = admin.get(path).get_json()
    resp = admin.patch(path, json={})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert {k: v for k, v in resp.get_json().items() if k in before} == {
        k: v for k, v in before.items() if k in resp.get_json()
    }
    assert admin.get("/audit-log?limit=1").get_json()["data"] == audit_before  # nothing recorded


def test_nul_in_the_unauthenticated_login_is_a_422(client):
    for field in ("email", "password"):
        body = {"email": "admin@demo-academy.test", "password": "x", field: "a\u0000b@demo-academy.test"}
        resp = client.post("/api/v1/auth/login", json=body)
        assert assert_problem(resp, 422, field)["errors"][field] == "must not contain NUL characters"


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda a: a.post("/subjects", json={"code": "NUL\u0000", "name": "x"}), "code"),
        (lambda a: a.patch("/institution", json={"grading_scale": [{"letter": "A\u0000", "min": 0}]}),
         "grading_scale.0.letter"),
        (lambda a: a.get("/students?q=ab%00"), "q"),
        (lambda a: a.get("/students?admission_number=DA%00"), "admission_number"),
        (lambda a: a.get("/students?sort=last_name&cursor=" + _cursor(["last_name", "N\u0000", 1])), "cursor"),
        (lambda a: a.get("/classes/1/attendance/2026-11-0%00"), "date"),
        (lambda a: a.post("/payments", json=PAYMENT, headers={"Idempotency-Key": "k\u0000"}), "Idempotency-Key"),
        (lambda a: a.post("/imports/students", content_type="multipart/form-data", data={"file": (
            io.BytesIO(b"admission_number,first_name,last_name\nX-1,A\x00,B\n"), "s.csv")}), "file"),
    ],
)  # fmt: skip
def test_nul_anywhere_in_the_input_is_a_422_naming_where(admin, call, field):
    resp = call(admin)
    assert_problem(resp, 422, field)
    _no_internals(resp)


def test_a_cursor_whose_value_has_the_wrong_type_is_a_422(admin):
    for values in (
        ["created_at", "not a time", 1],
        ["created_at", 5, 1],
        ["last_name", 5, 1],
        ["id", None, "x"],
    ):
        resp = admin.get(f"/students?sort={values[0]}&cursor={_cursor(values)}")
        assert assert_problem(resp, 422, "cursor")["errors"]["cursor"] == "is not a cursor this API issued"


def test_dates_outside_1900_to_2100_are_a_422_wherever_they_come_in(admin, accountant, demo):
    pupil = demo["demo_student_id"]
    payment = {"student_id": pupil, "amount": "10.00", "method": "cash", "reference": "Y1-0001"}
    resp = accountant.post("/payments", json={**payment, "received_at": "0001-01-01T00:00:00+14:00"})
    assert (
        assert_problem(resp, 422, "received_at")["errors"]["received_at"]
        == "must be between 1900-01-01 and 2100-12-31"
    )
    # nothing stored, so the lists and the statement that read it still answer
    assert accountant.get(f"/payments?student_id={pupil}").status_code == 200
    assert accountant.get(f"/students/{pupil}/statement").status_code == 200
    assert_problem(
        admin.patch(f"/students/{pupil}", json={"date_of_birth": "1899-12-31"}), 422, "date_of_birth"
    )
    assert_problem(
        admin.patch(f"/students/{pupil}", json={"date_of_birth": "2101-01-01"}), 422, "date_of_birth"
    )
    assert admin.patch(f"/students/{pupil}", json={"date_of_birth": "1900-01-01"}).status_code == 200
    assert_problem(admin.get("/attendance/chronic-absentees?from=0001-01-01"), 422, "from")
    assert_problem(admin.get("/audit-log?from=9999-01-01T00:00:00Z"), 422, "from")
    assert_problem(admin.get("/classes/1/attendance/2999-01-01"), 422, "date")


def test_a_time_zone_must_be_in_the_iana_database(admin):
    for name in ("Mars/Olympus", "../../etc/passwd", "Nairobi"):
        assert_problem(admin.patch("/institution", json={"timezone": name}), 422, "timezone")
    assert admin.get("/institution").get_json()["timezone"] == "Africa/Nairobi"
    assert (
        admin.patch("/institution", json={"timezone": "Africa/Kampala"}).get_json()["timezone"]
        == "Africa/Kampala"
    )


def test_oversized_urls_and_headers_are_problem_json(admin):
    # The same under gunicorn, with its own larger limits: tests/test_gunicorn.py.
    body = assert_problem(admin.get("/students?q=" + "a" * 5000), 414)
    assert "4096" in body["detail"]
    assert admin.get("/students?q=" + "a" * 3000).status_code == 200
    assert_problem(admin.get("/students", headers={"X-Padding": "b" * 9000}), 431, "X-Padding")
