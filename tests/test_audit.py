import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.extensions import db
from tests.conftest import assert_problem


def test_audit_rows_cannot_be_changed_or_deleted(admin):
    admin.patch("/institution", json={"phone": "123"})
    for stmt in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), db.session.begin_nested():
            db.session.execute(text(stmt))


def test_audit_entries_carry_request_id_actor_and_changes(admin):
    resp = admin.patch("/institution", json={"phone": "555"}, headers={"X-Request-ID": "req-audit-0001"})
    assert resp.status_code == 200
    entry = admin.get("/audit-log?entity_type=institution").get_json()["data"][0]
    assert entry["request_id"] == "req-audit-0001" and entry["actor_id"] == admin.user["id"]
    assert entry["changes"]["phone"][1] == "555"


def test_denied_access_is_audited(admin, teacher):
    assert_problem(teacher.get("/users"), 403)
    entries = admin.get("/audit-log?action=access_denied").get_json()["data"]
    assert entries and entries[0]["actor_id"] == teacher.user["id"]


def test_only_admins_read_the_audit_log(teacher, accountant):
    assert_problem(teacher.get("/audit-log"), 403)
    assert_problem(accountant.get("/audit-log"), 403)
