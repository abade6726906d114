"""Fixtures: real PostgreSQL and Redis (started by scripts/run_tests.sh, or given as TEST_DATABASE_URL /
TEST_REDIS_URL), the schema built once per run by the migration chain, the demo data seeded once,
and every test inside a transaction that is rolled back afterwards (outer transaction + savepoints).
"""

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import redis as redis_lib
from sqlalchemy.orm import scoped_session, sessionmaker

from app import create_app
from app.extensions import db

# The real-worker fixtures (broker, committed_school, committing, worker_app) for every test module.
pytest_plugins = ["tests.worker_support"]

PASSWORD = "demo-password-for-tests"

# Fixtures that start processes (app servers, Celery workers): their tests are `slow` (make test-fast
# skips them; make test runs everything). Tests that start one themselves carry the marker.
PROCESS_FIXTURES = {"two_servers", "worker", "worker_app"}


def pytest_collection_modifyitems(items):
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _require(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: run the suite with `make test`, which starts PostgreSQL and "
            f"Redis, or point {name} at servers you own."
        )
    return value


def _admin_sql(url, *statements):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def app():
    """One fresh database per test run on the given server, so concurrent runs never collide."""
    server_url = _require("TEST_DATABASE_URL")
    _require("TEST_REDIS_URL")
    name = f"schoolhouse_test_{os.getpid()}"
    _admin_sql(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    run_url = server_url.rsplit("/", 1)[0] + "/" + name
    os.environ["TEST_DATABASE_URL"] = run_url  # app processes started by tests use it too
    os.environ["DEMO_PASSWORD"] = PASSWORD
    application = create_app("testing", RATELIMIT_API="100000 per 15 minutes")
    with application.app_context():
        from flask_migrate import upgrade

        from app.seed import seed_demo

        upgrade()  # the real migration chain, not create_all
        application.config["DEMO"] = seed_demo(PASSWORD)
        db.session.remove()
    yield application
    with application.app_context():
        for engine in db.engines.values():
            engine.dispose()
    os.environ["TEST_DATABASE_URL"] = server_url
    _admin_sql(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def demo(app):
    return app.config["DEMO"]


@pytest.fixture(scope="session")
def redis_client():
    return redis_lib.Redis.from_url(_require("TEST_REDIS_URL"))


@pytest.fixture(autouse=True)
def _clean_redis(redis_client):
    # Each Redis database the app uses (cache 0, limiter 1, broker 2) starts empty for each test.
    redis_client.flushall()
    yield


@pytest.fixture(autouse=True)
def _rollback(app):
    """Bind db.session to one connection whose outer transaction is rolled back after the test;
    the code's own commits become savepoint releases."""
    with app.app_context():
        connection = db.engine.connect()
        outer = connection.begin()
        original = db.session
        db.session = scoped_session(
            sessionmaker(bind=connection, join_transaction_mode="create_savepoint"),
            scopefunc=original.registry.scopefunc,
        )
        try:
            yield
        finally:
            db.session.remove()
            db.session = original
            outer.rollback()
            connection.close()


@pytest.fixture
def client(app):
    return app.test_client()


class Api:
    """A logged-in client: api.get("/students") prefixes /api/v1 and sends the bearer token."""

    def __init__(self, client, tokens):
        self.client, self.tokens = client, tokens
        self.user = tokens["user"]

    def _call(self, method, path, **kw):
        headers = {"Authorization": f"Bearer {self.tokens['access_token']}", **kw.pop("headers", {})}
        url = path if path.startswith(("/api", "/health", "/metrics")) else "/api/v1" + path
        return self.client.open(url, method=method, headers=headers, **kw)

    def get(self, path, **kw):
        return self._call("GET", path, **kw)

    def post(self, path, **kw):
        return self._call("POST", path, **kw)

    def put(self, path, **kw):
        return self._call("PUT", path, **kw)

    def patch(self, path, **kw):
        return self._call("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self._call("DELETE", path, **kw)


def login(client, email, password=PASSWORD):
    resp = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


@pytest.fixture
def as_user(client):
    def make(email):
        return Api(client, login(client, email))

    return make


@pytest.fixture
def admin(as_user):
    return as_user("admin@demo-academy.test")


@pytest.fixture
def teacher(as_user):
    return as_user("teacher@demo-academy.test")


@pytest.fixture
def guardian(as_user):
    return as_user("guardian@demo-academy.test")


@pytest.fixture
def student(as_user):
    return as_user("student@demo-academy.test")


@pytest.fixture
def accountant(as_user):
    return as_user("accountant@demo-academy.test")


@pytest.fixture
def hillside_admin(as_user):
    return as_user("admin@hillside.test")


def demo_today(demo):
    """The demo school's today, in its zone (Africa/Nairobi): the API dates marks, enrolments and exports
    by it, and the machine's UTC date is a day behind from 21:00 to 24:00 UTC."""
    from app.institutions.calendar import school_today
    from app.institutions.models import Institution

    return school_today(db.session.get(Institution, demo["demo_institution_id"]))


def assert_problem(resp, status, *fields):
    """A problem+json answer with this status, naming these fields in `errors`."""
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["status"] == status and body["title"] and body["detail"] and body["request_id"]
    for f in fields:
        assert f in body.get("errors", {}), (f, body)
    return body


@pytest.fixture(scope="session")
def daraja_sim_url():
    """The local Daraja simulator (scripts/daraja_sim.py) on a free port, callbacks held until asked."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "daraja_sim.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--deliver", "hold"], stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()
    assert "http://" in line, line
    yield line.split()[3]
    proc.terminate()
    proc.wait(timeout=10)
