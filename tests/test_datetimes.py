"""Every datetime in every answer is ISO 8601 in UTC with `Z`, on PostgreSQL (the suite) and on the
embedded SQLite default alike: SQLite hands timestamptz columns back without a zone, PostgreSQL in the
session's zone, and a client may send a time with any offset."""

import os
import re
import textwrap
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from app import create_app
from app.extensions import db
from tests.conftest import _admin_sql
from tests.embedded import run_embedded

DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def datetimes_in(value, path="$"):
    """(path, text) of every string in a JSON value that looks like a datetime."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from datetimes_in(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from datetimes_in(v, f"{path}[{i}]")
    elif isinstance(value, str) and DATETIME.match(value):
        yield path, value


def not_utc_z(found):
    """The ones that are not UTC with `Z` (parsable, offset zero, written with Z)."""
    bad = []
    for path, value in found:
        ok = value.endswith("Z")
        if ok:
            try:
                ok = datetime.fromisoformat(value[:-1] + "+00:00").utcoffset() == timedelta(0)
            except ValueError:
                ok = False
        if not ok:
            bad.append((path, value))
    return bad


def list_paths(spec):
    """Every GET in the document without path parameters (the lists and singletons)."""
    return sorted(p for p, ops in spec["paths"].items() if "get" in ops and "{" not in p)


# Sent with an offset of +02:00: the answer, then the ledger, hold the same instant in UTC.
RECEIVED = "2025-03-04T09:30:00+02:00"
RECEIVED_UTC = "2025-03-04T07:30:00Z"


def test_every_datetime_in_the_answers_is_utc_with_z(admin, accountant, client):
    spec = client.get("/api/v1/openapi.json").get_json()
    found = []
    for path in list_paths(spec):
        resp = admin.get(path)
        if resp.is_json:
            found += datetimes_in(resp.get_json(), path)
    # A payment against an invoice (received_at sent with an offset; the invoice read from the
    # database), its replay under the same key, and the ledger's copy.
    unpaid = accountant.get("/invoices?status=open&limit=2").get_json()["data"]
    assert len(unpaid) == 2, "the demo seed has open invoices"
    body = {
        "student_id": unpaid[0]["student_id"],
        "invoice_id": unpaid[0]["id"],
        "amount": "10.00",
        "method": "cash",
        "reference": "TZ-0001",
        "received_at": RECEIVED,
    }
    key = {"Idempotency-Key": "tz-0001"}
    first = accountant.post("/payments", json=body, headers=key)
    again = accountant.post("/payments", json=body, headers=key)
    assert first.status_code == again.status_code == 201, first.get_json()
    assert again.headers.get("Idempotent-Replayed") == "true" and again.get_json() == first.get_json()
    receipt = first.get_json()
    stored = accountant.get(f"/payments/{receipt['id']}").get_json()
    assert receipt["received_at"] == stored["received_at"] == RECEIVED_UTC
    found += [*datetimes_in(receipt, "POST /payments"), *datetimes_in(stored, "GET /payments/{id}")]
    # A datetime the audit trail keeps as text (the invoice's voided_at).
    voided = accountant.post(f"/invoices/{unpaid[1]['id']}/void")
    assert voided.status_code == 200, voided.get_json()
    found += datetimes_in(voided.get_json(), "POST /invoices/{id}/void")
    trail = admin.get(f"/audit-log?entity_type=invoice&entity_id={unpaid[1]['id']}").get_json()["data"]
    changed = [e["changes"]["voided_at"][1] for e in trail if "voided_at" in (e["changes"] or {})]
    assert changed and changed[0] == voided.get_json()["voided_at"]
    found += datetimes_in(trail, "/audit-log")
    assert len(found) > 50, found  # the demo data puts datetimes in many answers
    assert not not_utc_z(found)


@pytest.fixture
def database_in_another_zone(app):
    """The test database's default time zone set to Kolkata (+05:30) for new connections."""
    server_url = os.environ["TEST_DATABASE_URL"]
    name = server_url.rsplit("/", 1)[1]
    _admin_sql(server_url, f"ALTER DATABASE {name} SET timezone TO 'Asia/Kolkata'")
    try:
        yield
    finally:
        _admin_sql(server_url, f"ALTER DATABASE {name} RESET timezone")


def test_postgresql_sessions_run_in_utc_whatever_the_servers_zone(database_in_another_zone):
    other = create_app("testing")
    with other.app_context():
        try:
            with db.engine.connect() as conn:
                zone = conn.execute(text("SHOW TimeZone")).scalar_one()
                moment = conn.execute(text("SELECT TIMESTAMPTZ '2025-03-04 07:30:00+00'")).scalar_one()
        finally:
            db.engine.dispose()
    assert zone == "UTC"
    assert moment.utcoffset() == timedelta(0) and moment == datetime(2025, 3, 4, 7, 30, tzinfo=UTC)
    with other.test_request_context():
        assert other.json.dumps({"at": moment}) == '{"at":"2025-03-04T07:30:00Z"}'


EMBEDDED = textwrap.dedent("""
    import json
    from flask_migrate import upgrade
    from app import create_app
    from app.seed import seed_demo

    app = create_app()
    with app.app_context():
        upgrade()
        demo = seed_demo("embedded-pass-1")
    c = app.test_client()

    def api(email):
        tokens = c.post("/api/v1/auth/login", json={"email": email, "password": "embedded-pass-1"}).get_json()
        return {"Authorization": "Bearer " + tokens["access_token"]}

    admin, accountant = api("admin@demo-academy.test"), api("accountant@demo-academy.test")
    spec = c.get("/api/v1/openapi.json").get_json()
    answers = {}
    for path in sorted(p for p, ops in spec["paths"].items() if "get" in ops and "{" not in p):
        resp = c.get(path, headers=admin)
        if resp.is_json:
            answers[path] = resp.get_json()
    sid = demo["demo_student_id"]
    answers["/students/{id}"] = c.get(f"/api/v1/students/{sid}", headers=admin).get_json()
    invoice = c.get("/api/v1/invoices?status=open&limit=1", headers=accountant).get_json()["data"][0]
    body = {"student_id": invoice["student_id"], "invoice_id": invoice["id"], "amount": "10.00",
            "method": "cash", "reference": "TZ-0001", "received_at": "%(received)s"}
    receipt = c.post("/api/v1/payments", json=body, headers=accountant).get_json()
    answers["POST /payments"] = receipt
    answers["GET /payments/{id}"] = c.get(f"/api/v1/payments/{receipt['id']}", headers=accountant).get_json()
    # A bound in another zone means the same instant: an hour ago written in +05:00.
    an_hour_ago = "%(an_hour_ago)s"
    recent = c.get("/api/v1/audit-log?limit=5&from=" + an_hour_ago.replace("+", "%%2B"), headers=admin)
    answers["recent audit"] = recent.get_json()
    print("RESULT " + json.dumps(answers))
""")


@pytest.mark.slow
def test_the_embedded_sqlite_default_answers_utc_with_z_too(tmp_path):
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).astimezone(timezone(timedelta(hours=5)))
    script = EMBEDDED % {"received": RECEIVED, "an_hour_ago": an_hour_ago.isoformat()}
    answers = run_embedded(script, tmp_path)
    found = [f for path, answer in answers.items() for f in datetimes_in(answer, path)]
    assert len(found) > 50, found
    assert not not_utc_z(found)
    assert answers["POST /payments"]["received_at"] == RECEIVED_UTC
    assert answers["GET /payments/{id}"]["received_at"] == RECEIVED_UTC  # stored as UTC, not as 09:30
    assert answers["recent audit"]["data"], answers["recent audit"]  # the seed and the payment just now
