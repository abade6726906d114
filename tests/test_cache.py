"""Response cache: tenant- and caller-safe keys, ETags, and no stale read after an acknowledged write,
across two app processes."""

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import PASSWORD


def test_second_read_is_a_hit_with_the_same_body(admin, demo):
    first = admin.get(f"/students/{demo['demo_student_id']}")
    second = admin.get(f"/students/{demo['demo_student_id']}")
    assert first.headers["X-Cache"] == "miss" and second.headers["X-Cache"] == "hit"
    assert first.get_data() == second.get_data()


def test_write_invalidates_in_the_same_process(admin, demo):
    sid = demo["demo_student_id"]
    admin.get(f"/students/{sid}")
    assert admin.patch(f"/students/{sid}", json={"first_name": "Changed"}).status_code == 200
    after = admin.get(f"/students/{sid}")
    assert after.get_json()["first_name"] == "Changed" and after.headers["X-Cache"] == "miss"
    roster = admin.get(f"/classes/{demo['demo_class_id']}/students?limit=200").get_json()["data"]
    assert next(r for r in roster if r["id"] == sid)["first_name"] == "Changed"


def test_keys_carry_institution_and_caller_scope(admin, hillside_admin, teacher, guardian):
    a = admin.get("/students?limit=5").get_json()["data"]
    h = hillside_admin.get("/students?limit=5")
    assert h.headers["X-Cache"] == "miss"  # same path, other institution: never the Demo answer
    assert not {s["id"] for s in a} & {s["id"] for s in h.get_json()["data"]}
    t = teacher.get("/students?limit=200")
    gd = guardian.get("/students?limit=200")
    assert t.headers["X-Cache"] == gd.headers["X-Cache"] == "miss"
    assert len(gd.get_json()["data"]) < len(t.get_json()["data"])


def test_query_string_is_normalised(admin):
    admin.get("/students?limit=5&sort=last_name")
    assert admin.get("/students?sort=last_name&limit=5").headers["X-Cache"] == "hit"


def test_etag_and_304(admin, demo):
    resp = admin.get(f"/students/{demo['demo_student_id']}")
    etag = resp.headers["ETag"]
    assert resp.headers["Cache-Control"] == "private, no-cache"
    again = admin.get(f"/students/{demo['demo_student_id']}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.get_data() == b""
    admin.patch(f"/students/{demo['demo_student_id']}", json={"last_name": "Other"})
    changed = admin.get(f"/students/{demo['demo_student_id']}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_a_hit_carries_the_etag_of_its_body_and_each_encoding_its_own(admin, demo):
    from app.core.caching import etag_for

    path = f"/classes/{demo['demo_class_id']}/students?limit=200"  # large enough to be compressed
    miss, hit = admin.get(path), admin.get(path)
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("miss", "hit")
    assert miss.headers["ETag"] == hit.headers["ETag"] == f'"{etag_for(hit.get_data())}"'
    assert admin.get(path, headers={"If-None-Match": hit.headers["ETag"]}).status_code == 304
    gz = admin.get(path, headers={"Accept-Encoding": "gzip"})
    assert gz.headers["X-Cache"] == "hit" and gz.headers["Content-Encoding"] == "gzip"
    assert (
        gz.headers["ETag"] not in (hit.headers["ETag"], "")
        and gzip.decompress(gz.get_data()) == hit.get_data()
    )
    again = admin.get(path, headers={"Accept-Encoding": "gzip", "If-None-Match": gz.headers["ETag"]})
    assert again.status_code == 304


def test_concurrent_misses_compute_once(app, admin, monkeypatch):
    """Stampede guard: while one request computes a key, the others wait for its answer."""
    from app.people import routes

    calls = []
    original = routes.students.base

    def slow_base():
        calls.append(1)
        time.sleep(0.2)
        return original()

    monkeypatch.setattr(routes.students, "base", slow_base)
    admin.get("/auth/me")  # the Redis copy of revocations in place: the threads share one test connection
    results = []

    def hit():
        results.append(admin.get("/students?limit=3").headers["X-Cache"])

    threads = [threading.Thread(target=hit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(results).count("miss") == 1


def test_cache_down_still_answers(demo):
    from app import create_app

    app = create_app("testing", REDIS_URL="redis://127.0.0.1:1/0")
    c = app.test_client()
    tokens = c.post(
        "/api/v1/auth/login", json={"email": "admin@demo-academy.test", "password": PASSWORD}
    ).get_json()
    resp = c.get(
        f"/api/v1/students/{demo['demo_student_id']}",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert resp.status_code == 200


# --- two real app processes sharing PostgreSQL and Redis -----------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(base, method, path, token=None, body=None):
    req = urllib.request.Request(
        base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


@pytest.fixture
def two_servers(app):
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "APP_ENV": "testing", "RATELIMIT_API": "100000 per 15 minutes"}
    procs, bases = [], []
    for _ in range(2):
        port = _free_port()
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "run", "--port", str(port)],
                cwd=root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        bases.append(f"http://127.0.0.1:{port}")
    try:
        for base in bases:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(base + "/health/live", timeout=1)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "app process did not start"
                    time.sleep(0.1)
        yield bases
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def test_no_stale_read_after_a_write_in_another_process(two_servers, demo):
    a, b = two_servers
    _, _, tokens = _call(
        a, "POST", "/api/v1/auth/login", body={"email": "admin@demo-academy.test", "password": PASSWORD}
    )
    token = tokens["access_token"]
    path = f"/api/v1/students/{demo['demo_student_id']}"
    roster = f"/api/v1/classes/{demo['demo_class_id']}/students?limit=100"
    _, _, original = _call(b, "GET", path, token)
    _, headers, _ = _call(b, "GET", path, token)
    assert headers["X-Cache"] == "hit"
    _call(b, "GET", roster, token)
    assert _call(b, "GET", roster, token)[1]["X-Cache"] == "hit"
    try:
        for name in ("Process-A-1", "Process-A-2", "Process-A-3"):
            status, _, _ = _call(a, "PATCH", path, token, {"first_name": name})
            assert status == 200
            status, _, seen = _call(b, "GET", path, token)
            assert status == 200 and seen["first_name"] == name
            # The roster, read on its own autocommit connection (app/core/tenancy.py), sees it too.
            status, _, page = _call(b, "GET", roster, token)
            assert status == 200
            assert [r["first_name"] for r in page["data"] if r["id"] == demo["demo_student_id"]] == [name]
    finally:
        _call(a, "PATCH", path, token, {"first_name": original["first_name"]})


def test_a_logged_out_session_cannot_read_cached_data(client, demo):
    from tests.conftest import Api, login

    api = Api(client, login(client, "admin@demo-academy.test"))
    path = f"/students/{demo['demo_student_id']}"
    api.get(path)
    assert api.get(path).headers["X-Cache"] == "hit"
    assert api.post("/auth/logout").status_code == 204
    resp = api.get(path)
    assert resp.status_code == 401 and b"first_name" not in resp.data
    other = Api(client, login(client, "admin@demo-academy.test"))
    assert other.get(path).headers["X-Cache"] == "hit"  # the entry itself is still good for live sessions


def test_warming_fills_the_keys_real_requests_use(app, admin, demo):
    from app.core.warming import warm

    path = f"/classes/{demo['demo_class_id']}/students?limit=50"
    with app.app_context():
        filled = warm(demo["demo_institution_id"])
    assert filled >= 20
    assert admin.get(path).headers["X-Cache"] == "hit"
    assert admin.get("/subjects").headers["X-Cache"] == "hit"


def test_a_write_bumps_its_versions_with_a_ttl_and_a_lost_version_never_comes_back_lower(app, admin, demo):
    # app/core/caching.py: every cache key carries a TTL (volatile-lru evicts only cache keys), and an
    # evicted version starts again from the clock, so the entries stored under its old number are never
    # served again.
    rc = app.extensions["response_cache"]
    iid, sid = demo["demo_institution_id"], demo["demo_student_id"]
    key = f"{rc.version_head(iid)}students"
    assert admin.patch(f"/students/{sid}", json={"first_name": "Once"}).status_code == 200
    first = int(rc.redis.get(key))
    assert 0 < rc.redis.ttl(key) <= rc.version_ttl
    assert admin.patch(f"/students/{sid}", json={"first_name": "Twice"}).status_code == 200
    assert int(rc.redis.get(key)) == first + 1  # a bump adds one
    scoped = rc.redis.keys(f"{rc.version_head(iid)}*")
    assert len(scoped) > 1 and all(0 < rc.redis.ttl(k) <= rc.version_ttl for k in scoped)

    cached = admin.get(f"/students/{sid}")
    assert admin.get(f"/students/{sid}").headers["X-Cache"] == "hit"
    rc.redis.delete(key)  # evicted
    assert admin.patch(f"/students/{sid}", json={"first_name": "Thrice"}).status_code == 200
    assert int(rc.redis.get(key)) > first + 1
    after = admin.get(f"/students/{sid}")
    assert after.headers["X-Cache"] == "miss" and after.get_json()["first_name"] == "Thrice"
    assert cached.get_json()["first_name"] == "Twice"
