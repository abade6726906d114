"""Operator endpoints and the query budget per endpoint (an N+1 cannot creep in)."""

import pytest
from sqlalchemy import event

from app.extensions import db
from tests.conftest import assert_problem


def test_performance_snapshot_for_admins(admin, teacher, demo):
    for _ in range(3):
        admin.get(f"/students/{demo['demo_student_id']}")
    body = admin.get("/performance").get_json()
    assert body["requests"]["total"] >= 3
    ep = body["requests"]["endpoints"]["people.get_students"]
    assert ep["count"] >= 3 and ep["p50_ms"] is not None and ep["p99_ms"] >= ep["p50_ms"]
    assert body["cache"]["hits"] >= 2 and 0 <= body["health_score"] <= 100
    assert body["memory"]["rss_mb"] > 0 and body["versions"]["flask"]
    assert set(body["thresholds"]) == {
        "error_rate_percent",
        "p95_ms",
        "slow_query_ms",
        "memory_mb",
        "cache_hit_percent",
    }
    assert isinstance(body["warnings"], list)
    assert_problem(teacher.get("/performance"), 403)


def test_metrics_endpoint_exports_prometheus_text(client, admin):
    admin.get("/subjects")
    text = client.get("/metrics").get_data(as_text=True)
    assert (
        "schoolhouse_http_requests_total" in text and "schoolhouse_db_query_duration_seconds_bucket" in text
    )


def test_health_detailed_and_database_for_admins(admin, teacher, client):
    detailed = admin.get("/health/detailed").get_json()
    assert detailed["checks"]["database"] == "ok" and detailed["pool"]["capacity"] >= 1
    assert detailed["reads_pool"]["capacity"] >= 1  # the autocommit engine of lone reads (config.py binds)
    assert detailed["system"]["process"]["rss_mb"] > 0
    dbinfo = admin.get("/health/database").get_json()
    assert dbinfo["largest_tables"] and dbinfo["most_used_indexes"] and dbinfo["connections"]
    assert 0 <= dbinfo["cache_hit_ratio_percent"] <= 100
    assert_problem(teacher.get("/health/detailed"), 403)
    assert_problem(client.get("/health/database"), 401)


def test_response_time_header(admin):
    assert admin.get("/subjects").headers["X-Response-Time"].endswith("ms")


@pytest.fixture
def count_sql(app):
    counter = {"n": 0}

    def on_exec(conn, cursor, statement, *a):
        if statement.startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")):
            return  # the test harness's per-request savepoints, not the endpoint's work
        counter["n"] += 1
        counter.setdefault("sql", []).append(statement[:80])

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", on_exec)
    yield counter
    event.remove(engine, "before_cursor_execute", on_exec)


@pytest.mark.parametrize(
    "path,budget",
    [
        ("/students?limit=50", 1),
        ("/students/{sid}", 1),  # the student and their guardians in one statement
        ("/classes/{cid}/students?limit=50", 1),
        ("/guardians?limit=50", 1),
        ("/classes?limit=50", 1),
        ("/enrolments?limit=50", 1),
    ],
)
def test_sql_statements_per_endpoint_are_pinned(admin, demo, count_sql, path, budget):
    """Uncached reads run a fixed number of statements whatever the page size (no N+1)."""
    from flask import current_app

    path = path.format(sid=demo["demo_student_id"], cid=demo["demo_class_id"])
    rc = current_app.extensions["response_cache"]
    rc.enabled = False
    revocations = current_app.extensions["revocations"]
    recheck, revocations.recheck_s = revocations.recheck_s, float("inf")
    try:
        # Steady state: the session check's Redis copy is in place, and the once-a-second "did Redis miss
        # a revocation?" probe (app/core/revocation.py) has run, so it cannot land in the count below.
        admin.get("/auth/me")
        count_sql["n"] = 0
        assert admin.get(path).status_code == 200
        # +1: the revocation check falls back to the database only when Redis is down; here it is up.
        assert count_sql["n"] == budget, count_sql["sql"]
    finally:
        rc.enabled = True
        revocations.recheck_s = recheck


@pytest.mark.parametrize("role,budget", [("accountant", 1), ("teacher", 4), ("guardian", 2), ("student", 2)])
def test_sql_statements_of_a_student_read_per_role(request, demo, count_sql, role, budget):
    """GET /students/{id}, cache off: the ids the caller reaches (read once per request: a teacher's
    classes, the school's today and those classes' students; a guardian's children; a student's own row),
    then one statement for the student and their guardians (app/people/services.py)."""
    from flask import current_app

    api = request.getfixturevalue(role)
    rc = current_app.extensions["response_cache"]
    rc.enabled = False
    revocations = current_app.extensions["revocations"]
    recheck, revocations.recheck_s = revocations.recheck_s, float("inf")
    try:
        api.get("/auth/me")
        count_sql["n"], count_sql["sql"] = 0, []
        assert api.get(f"/students/{demo['demo_student_id']}").status_code == 200
        assert count_sql["n"] == budget, count_sql["sql"]
    finally:
        rc.enabled = True
        revocations.recheck_s = recheck


def test_large_json_is_compressed_small_is_not(admin):
    big = admin.get("/students?limit=200", headers={"Accept-Encoding": "br, gzip"})
    assert big.headers.get("Content-Encoding") == "br" and "Accept-Encoding" in big.headers.get("Vary", "")
    gz = admin.get("/students?limit=200", headers={"Accept-Encoding": "gzip"})
    assert gz.headers.get("Content-Encoding") == "gzip"
    import gzip
    import json

    assert len(json.loads(gzip.decompress(gz.data))["data"]) == 200
    small = admin.get("/subjects?limit=1", headers={"Accept-Encoding": "br, gzip"})
    assert "Content-Encoding" not in small.headers
