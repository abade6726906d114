"""The web process as the Procfile starts it: gunicorn with gunicorn.conf.py (preloaded app, several
workers, metrics aggregated across them), on the test database and Redis."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import PASSWORD

pytestmark = pytest.mark.slow  # every test here starts processes

ROOT = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


@contextmanager
def gunicorn(**settings):
    """gunicorn as the Procfile runs it, on a free port, with these extra environment settings; yields
    its base URL once it answers."""
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PROMETHEUS_MULTIPROC_DIR", "SCHOOLHOUSE_METRICS_OWNER")
    }
    env.update(APP_ENV="testing", PORT=str(port), **settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert _get(base + "/health/live")[0] == 200
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
                assert time.monotonic() < deadline, "gunicorn did not answer within 30 s"
                time.sleep(0.2)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def _call(url, method="GET", headers=None, body=None):
    """(status, content type, body as text), for error answers too."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get_content_type(), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get_content_type(), err.read().decode()


def test_gunicorn_serves_and_aggregates_metrics_across_workers(app):
    with gunicorn(WEB_CONCURRENCY="2", DB_POOL_SIZE="2", DB_MAX_OVERFLOW="1") as base:
        for _ in range(40):
            assert _get(base + "/health/ready")[0] == 200
        status, text = _get(base + "/metrics")
        assert status == 200
        served = sum(
            float(v)
            for v in re.findall(
                r'^schoolhouse_http_requests_total\{[^}]*endpoint="health.ready"[^}]*\} (\S+)$', text, re.M
            )
        )
        assert served == 40  # every worker's count, summed
        capacity = float(re.search(r"^schoolhouse_db_pool_capacity (\S+)$", text, re.M).group(1))
        assert capacity in (3, 6)  # pool_size + max_overflow per worker that has connected


def test_oversized_request_lines_and_headers_are_problem_json(app):
    # The app's bounds (app/core/requestctx.py) answer first; gunicorn's (gunicorn.conf.py) beyond them,
    # in the same shape. Never gunicorn's HTML page.
    with gunicorn(WEB_CONCURRENCY="1") as base:
        cases = [
            (base + "/api/v1/students?q=" + "a" * 5000, {}, 414),  # the app's bound
            (base + "/api/v1/students?q=" + "a" * 10000, {}, 414),  # gunicorn's
            (base + "/api/v1/students", {"X-Padding": "b" * 9000}, 431),  # the app's
            (base + "/api/v1/students", {"X-Padding": "b" * 20000}, 431),  # gunicorn's
        ]
        for url, headers, expected in cases:
            status, content_type, text = _call(url, headers=headers)
            assert (status, content_type) == (expected, "application/problem+json"), text[:300]
            body = json.loads(text)
            assert body["status"] == expected and body["title"] and body["detail"] and body["request_id"]
            assert "aaaa" not in text and "bbbb" not in text  # the request is not echoed


def test_reads_get_no_5xx_when_the_apps_database_backends_are_killed(app):
    # Every backend of the app's pools is ended between bursts of reads (as a PostgreSQL restart or a
    # failover would): each worker's next read finds its connection dead and runs again on a fresh one.
    name = "schoolhouse-gunicorn-kill-test"
    settings = dict(
        WEB_CONCURRENCY="2",
        DB_POOL_SIZE="2",
        DB_MAX_OVERFLOW="0",
        DB_APPLICATION_NAME=name,
        DB_PING_AFTER_IDLE_S="3600",  # no idle ping: every kill reaches a request
        RESPONSE_CACHE_ENABLED="false",
        RATELIMIT_ENABLED="false",
    )
    admin = psycopg2.connect(os.environ["TEST_DATABASE_URL"])
    admin.autocommit = True
    with gunicorn(**settings) as base:
        status, _, text = _call(
            base + "/api/v1/auth/login",
            "POST",
            body={"email": "admin@demo-academy.test", "password": PASSWORD},
        )
        assert status == 200, text
        auth = {"Authorization": "Bearer " + json.loads(text)["access_token"]}
        statuses, kills = [], 0
        for _ in range(8):
            with admin.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
                    (name,),
                )
                kills += cur.rowcount
            for path in (
                "/students?limit=20",
                "/classes",
                "/students/1",
                "/classes/1/students",
                "/guardians",
                "/subjects",
            ):
                statuses.append(_call(base + "/api/v1" + path, headers=auth)[0])
    admin.close()
    assert kills >= 8
    assert [s for s in statuses if s >= 500] == [] and set(statuses) == {200}
