"""The migration chain upgrades an empty PostgreSQL database and downgrades it to base."""

import os

import psycopg2
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect

from app import create_app
from config import database_url


def test_upgrade_downgrade_upgrade_on_empty_database():
    base = os.environ["TEST_DATABASE_URL"]
    server, _, _ = base.rpartition("/")
    admin = psycopg2.connect(base)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS schoolhouse_migrations_{os.getpid()}")
        cur.execute(f"CREATE DATABASE schoolhouse_migrations_{os.getpid()}")
    url = database_url(f"{server}/schoolhouse_migrations_{os.getpid()}")
    try:
        app = create_app("testing", SQLALCHEMY_DATABASE_URI=url)
        engine = create_engine(url)
        with app.app_context():
            upgrade()
            tables = set(inspect(engine).get_table_names())
            assert {
                "students",
                "attendance_records",
                "payments",
                "audit_log",
                "email_outbox",
                "jobs",
            } <= tables
            ix = {i["name"] for i in inspect(engine).get_indexes("attendance_records")}
            assert "uq_attendance_student_date_period_subject" in ix
            # autovacuum keeps the day's marks analysed (migrations/versions/0015_attendance_autovacuum.py)
            with engine.connect() as conn:
                options = conn.exec_driver_sql(
                    "SELECT reloptions FROM pg_class WHERE relname = 'attendance_records'"
                ).scalar()
            assert "autovacuum_analyze_threshold=2000" in options
            assert "autovacuum_analyze_scale_factor=0.005" in options
            downgrade(revision="base")
            assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
            upgrade()
        engine.dispose()
        with app.app_context():
            from app.extensions import db

            db.engine.dispose()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS schoolhouse_migrations_{os.getpid()} WITH (FORCE)")
        admin.close()
