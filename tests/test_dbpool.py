"""Dead pooled connections (app/core/dbpool.py): a connection killed while idle in the pool is replaced
at checkout, not handed to a request; one that dies under a request costs a read nothing and a write
a 503 it may retry."""

import os
import time

import psycopg2
import pytest
from flask import request
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import scoped_session, sessionmaker

from app import create_app
from app.extensions import db
from tests.conftest import Api, assert_problem, login


def _kill_idle_pooled_connection(engine):
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    # back in the pool now; end its server process from outside the pool, as a restart would
    admin = psycopg2.connect(engine.url.render_as_string(hide_password=False).replace("+psycopg2", ""))
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
            assert cur.fetchone()[0]
    finally:
        admin.close()
    return pid


def _app(idle_seconds):
    # its own engine: pool_size 1, so the next checkout gets exactly the connection that was killed
    return create_app("testing", DB_PING_AFTER_IDLE_S=idle_seconds, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0)


def test_connection_killed_while_idle_is_replaced_after_a_ping():
    app = _app(0.2)
    with app.app_context():
        engine = db.engine
        killed = _kill_idle_pooled_connection(engine)
        time.sleep(0.3)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != killed
        engine.dispose()


def test_without_the_idle_ping_the_dead_connection_would_be_served():
    # The control: what the ping above prevents (the same kill, and the pool hands out the dead one).
    app = _app(3600)
    with app.app_context():
        engine = db.engine
        _kill_idle_pooled_connection(engine)
        time.sleep(0.3)
        with pytest.raises(OperationalError), engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1").scalar()
        engine.dispose()


# --- a connection that dies under a request ------------------------------------------------------------
# Reads run once more on a fresh connection (no 5xx); writes answer 503 with Retry-After
# (app/core/errors.py, app/core/dbpool.py). The app under test has its own engine, named in
# pg_stat_activity, and really commits (the suite's rolled-back session would hide the connection).

APP_NAME = "schoolhouse-dbpool-test"


def _admin_conn():
    conn = psycopg2.connect(os.environ["TEST_DATABASE_URL"])
    conn.autocommit = True
    return conn


def _kill_app_backends(admin):
    with admin.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
            (APP_NAME,),
        )
        return cur.rowcount


@pytest.fixture
def own_app():
    app = create_app(
        "testing",
        DB_APPLICATION_NAME=APP_NAME,
        DB_POOL_SIZE=2,
        DB_MAX_OVERFLOW=0,
        DB_PING_AFTER_IDLE_S=3600,  # no ping: every kill reaches a request
        RESPONSE_CACHE_ENABLED=False,  # every read asks the database
        RATELIMIT_API="100000 per hour",
    )
    rolled = db.session
    with app.app_context():
        engine, engines = db.engine, list(db.engines.values())  # the main engine and the reads engine
    db.session = scoped_session(sessionmaker(bind=engine), scopefunc=rolled.registry.scopefunc)
    admin = _admin_conn()
    try:
        yield app, admin
    finally:
        db.session.remove()
        db.session = rolled
        admin.close()
        for each in engines:
            each.dispose()


@pytest.fixture
def kill_on_statement(own_app):
    """kill(match, times): the backend running the next `times` statements containing `match` is ended
    just before the statement is sent, as if PostgreSQL went away while the request was using it."""
    app, admin = own_app
    with app.app_context():
        engines = list(db.engines.values())  # a lone read runs on the reads engine (app/core/tenancy.py)
    plan = {"match": None, "left": 0}

    def before(conn, cursor, statement, parameters, context, executemany):
        if plan["left"] and plan["match"] in statement:
            plan["left"] -= 1
            with admin.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(%s, 5000)",
                    (conn.connection.dbapi_connection.info.backend_pid,),
                )

    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)

    def kill(match, times=1):
        plan["match"], plan["left"] = match, times

    yield kill
    for engine in engines:
        event.remove(engine, "before_cursor_execute", before)
    assert plan["left"] == 0, "a statement the test meant to kill was never sent"


def _admin_api(app):
    client = app.test_client()
    return Api(client, login(client, "admin@demo-academy.test"))


def test_reads_survive_killed_backends_between_requests(own_app):
    app, admin = own_app
    api = _admin_api(app)
    statuses = []
    for _ in range(5):
        assert _kill_app_backends(admin) >= 1  # the pooled connections, idle between requests
        for path in ("/students?limit=5", "/classes", "/students/1", "/guardians"):
            statuses.append(api.get(path).status_code)
    assert statuses and all(s == 200 for s in statuses), statuses


def test_read_whose_connection_dies_mid_request_is_run_again(own_app, kill_on_statement):
    app, _ = own_app
    api = _admin_api(app)
    kill_on_statement("FROM students", times=1)
    resp = api.get("/students?limit=5")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert len(resp.get_json()["data"]) == 5


def test_read_that_loses_its_connection_twice_is_a_503_not_a_500(own_app, kill_on_statement):
    app, _ = own_app
    api = _admin_api(app)
    kill_on_statement("FROM students", times=2)
    resp = api.get("/students?limit=5")
    assert_problem(resp, 503)
    assert resp.headers["Retry-After"] == "1"
    assert api.get("/students?limit=5").status_code == 200  # and the next one is served


def test_write_whose_connection_dies_is_a_503_with_retry_after(own_app, kill_on_statement):
    app, _ = own_app
    api = _admin_api(app)
    kill_on_statement("INSERT INTO subjects", times=1)
    resp = api.post("/subjects", json={"code": "KILLED", "name": "Never stored"})
    body = assert_problem(resp, 503)
    assert resp.headers["Retry-After"] == "1"
    assert "INSERT" not in body["detail"]
    assert api.get("/subjects?code=KILLED").get_json()["data"] == []  # nothing half-written


def test_a_connection_that_dies_after_the_answer_is_made_leaves_the_answer_alone(own_app):
    # Between the view and the end of the request (the session's closing rollback): a read and a
    # committed write both keep their answers.
    app, admin = own_app

    @app.after_request
    def end_backend(resp):
        if request.headers.get("X-Kill-After"):
            pid = db.session.connection().connection.dbapi_connection.info.backend_pid
            with admin.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        return resp

    api = _admin_api(app)
    kill = {"X-Kill-After": "1"}
    assert api.get("/students?limit=5", headers=kill).status_code == 200
    created = api.post("/subjects", json={"code": "AFTER", "name": "Committed"}, headers=kill)
    assert created.status_code == 201, created.get_data(as_text=True)
    try:
        assert [s["code"] for s in api.get("/subjects?code=AFTER").get_json()["data"]] == ["AFTER"]
    finally:
        assert api.delete(f"/subjects/{created.get_json()['id']}").status_code == 204  # it really committed
