"""Dead pooled connections (app/core/dbpool.py): a connection killed while idle in the pool is replaced
at checkout, not handed to a request."""

import time

import psycopg2
import pytest
from sqlalchemy.exc import OperationalError

from app import create_app
from app.extensions import db


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
