"""Smoke test of the embedded default users run with `make run`: no DATABASE_URL, no REDIS_URL
(an SQLite file under instance/, in-process cache and limiter). Runs in a child process so its
settings cannot leak into the PostgreSQL-backed suite."""

import textwrap

import pytest

from tests.embedded import run_embedded

pytestmark = pytest.mark.slow  # every test here starts processes

SCRIPT = textwrap.dedent("""
    import json
    from flask_migrate import upgrade
    from app import create_app
    from app.extensions import db
    from app.seed import seed_demo

    app = create_app()
    out = {"uri": app.config["SQLALCHEMY_DATABASE_URI"], "cache": app.config["CACHE_TYPE"],
           "limiter": type(app.extensions["rate_limiter"].storage).__name__}
    with app.app_context():
        upgrade()
        seed_demo("embedded-pass-1")
    c = app.test_client()
    tokens = c.post("/api/v1/auth/login", json={"email": "admin@demo-academy.test",
                                                "password": "embedded-pass-1"}).get_json()
    h = {"Authorization": "Bearer " + tokens["access_token"]}
    page = c.get("/api/v1/students?limit=5", headers=h).get_json()
    nxt = c.get("/api/v1/students?limit=5&cursor=" + page["next_cursor"], headers=h).get_json()
    out["page_ids"] = [s["id"] for s in page["data"]]
    out["next_ids"] = [s["id"] for s in nxt["data"]]
    # The one-statement student read (app/people/services.py) on SQLite: the list row's fields, guardians.
    detail = c.get("/api/v1/students/%d" % page["data"][0]["id"], headers=h).get_json()
    out["detail_matches"] = {k: detail[k] for k in page["data"][0]} == page["data"][0]
    out["detail_guardians"] = len(detail["guardians"])
    out["ready"] = c.get("/health/ready").status_code
    out["search"] = len(c.get("/api/v1/students?q=a&limit=5", headers=h).get_json()["data"])
    # Roll call on SQLite (app/attendance/services.py builds its PostgreSQL statements differently): a
    # first save, then a save that changes one mark.
    import datetime
    day = datetime.date.today() - datetime.timedelta(days=1)
    while day.weekday() >= 5:
        day -= datetime.timedelta(days=1)
    cid = c.get("/api/v1/classes?limit=1", headers=h).get_json()["data"][0]["id"]
    roster = [s["id"] for s in c.get("/api/v1/classes/%d/students" % cid, headers=h).get_json()["data"]]
    marks = [{"student_id": s, "status": "present"} for s in roster]
    url = "/api/v1/classes/%d/attendance/%s" % (cid, day.isoformat())
    first = c.put(url, json={"records": marks}, headers=h)
    marks[0]["status"] = "absent"
    second = c.put(url, json={"records": marks}, headers=h).get_json()
    out["roll"] = [first.status_code, len(roster), second["totals"]["present"], second["totals"]["absent"]]
    print("RESULT " + json.dumps(out))
""")


def test_embedded_default_serves_the_api(tmp_path):
    out = run_embedded(SCRIPT, tmp_path)
    assert out["uri"].startswith("sqlite") and str(tmp_path) in out["uri"]
    assert out["cache"] == "SimpleCache" and out["limiter"] == "MemoryStorage"
    assert len(out["page_ids"]) == 5 and len(out["next_ids"]) == 5
    assert not set(out["page_ids"]) & set(out["next_ids"])
    assert out["ready"] == 200 and out["search"] > 0
    assert out["detail_matches"] and out["detail_guardians"] >= 1
    saved, enrolled, present, absent = out["roll"]
    assert saved == 200 and enrolled > 1 and (present, absent) == (enrolled - 1, 1)
    assert (tmp_path / "instance" / "schoolhouse.db").exists()


ANNOUNCE_SCRIPT = textwrap.dedent("""
    import json
    from pathlib import Path
    from flask_migrate import upgrade
    from app import create_app
    from app.seed import seed_demo

    app = create_app()
    with app.app_context():
        upgrade()
        seed_demo("embedded-pass-1")
    c = app.test_client()

    def headers(email):
        tokens = c.post("/api/v1/auth/login", json={"email": email, "password": "embedded-pass-1"}).get_json()
        return {"Authorization": "Bearer " + tokens["access_token"]}

    admin, guardian = headers("admin@demo-academy.test"), headers("guardian@demo-academy.test")
    class_id = c.get("/api/v1/classes?limit=1", headers=guardian).get_json()["data"][0]["id"]
    body = {"title": "Sports day", "body": "Friday.", "audience": "class", "class_id": class_id}
    posted = c.post("/api/v1/announcements", json=body, headers=admin)
    out = {"posted": posted.status_code, "id": posted.get_json()["id"]}
    mine = c.get("/api/v1/me/announcements", headers=guardian).get_json()
    out["mine"] = [[a["id"], a["read"]] for a in mine["data"]]
    out["read"] = c.post(f"/api/v1/me/announcements/{out['id']}/read", headers=guardian).get_json()["read"]
    staff = c.get("/api/v1/announcements", headers=admin).get_json()["data"][0]
    out["status"], out["recipients"] = staff["status"], staff["recipient_count"]
    out["mails"] = sum("Sports day" in p.read_text() for p in Path(app.config["MAIL_DIR"]).glob("*.eml"))
    print("RESULT " + json.dumps(out))
""")


def test_embedded_default_delivers_announcements_in_process(tmp_path):
    out = run_embedded(ANNOUNCE_SCRIPT, tmp_path)
    assert out["posted"] == 201 and out["mine"] == [[out["id"], False]] and out["read"] is True
    assert out["status"] == "delivered" and out["recipients"] > 0 and out["mails"] > 0
