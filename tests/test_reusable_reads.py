"""Hot reads built once (app/core/tenancy.py `execute_reusable`): they run as the SQL they compile to,
once per school, so they must answer exactly what SQLAlchemy would, for the caller's school only; a read
that is the request's only statement runs alone, in autocommit, on the reads engine."""

import logging
from datetime import date, datetime
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import String, TypeDecorator, bindparam, event, select, type_coerce
from sqlalchemy.orm import scoped_session, sessionmaker

from app.academics.models import Enrolment
from app.core.tenancy import execute_reusable, reusable, set_current_institution
from app.extensions import db
from app.grading.models import Assessment
from app.people.models import Student, StudentGuardian


class Trimmed(TypeDecorator):
    """A column type that converts on the way in (trims) and out (upper-cases), as a future column's
    type may: SQLAlchemy, not the driver, must then run the statement."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.strip()

    def process_result_value(self, value, dialect):
        return value.upper()


STATEMENTS = {
    # dates, datetimes (timestamptz) and strings, as the roster reads them
    "students": (
        lambda: reusable(
            select(Student.id, Student.first_name, Student.date_of_birth, Student.created_at)
            .where(Student.deleted_at.is_(None))
            .order_by(Student.id)
            .limit(bindparam("page_limit"))
        ),
        {"page_limit": 5},
    ),
    # a Numeric column, which SQLAlchemy hands back as Decimal
    "numeric": (
        lambda: reusable(select(Assessment.id, Assessment.max_score).order_by(Assessment.id).limit(5)),
        {},
    ),
    # two columns of one name (the SQL labels the second id_1), and an attribute named otherwise than
    # its column (relationship_type is the column "relationship")
    "names": (
        lambda: reusable(
            select(Enrolment.id, Student.id, StudentGuardian.relationship_type)
            .join(Student, Student.id == Enrolment.student_id)
            .join(StudentGuardian, StudentGuardian.student_id == Student.id)
            .where(Enrolment.class_id == bindparam("class_id"))
            .order_by(Enrolment.id, StudentGuardian.guardian_id)
        ),
        None,  # the demo class
    ),
    # a type that converts values both ways
    "converted": (
        lambda: reusable(
            select(Student.id, type_coerce(Student.last_name, Trimmed()).label("shouted"))
            .where(type_coerce(Student.last_name, Trimmed()) == bindparam("last_name", type_=Trimmed()))
            .order_by(Student.id)
        ),
        None,  # a demo student's last name, padded
    ),
}


@pytest.mark.parametrize("name", STATEMENTS)
def test_a_reusable_read_answers_what_the_orm_answers(app, demo, name):
    build, params = STATEMENTS[name]
    stmt = build()
    with app.test_request_context():
        set_current_institution(demo["demo_institution_id"])
        if params is None:
            last = db.session.get(Student, demo["demo_student_id"]).last_name
            params = {"class_id": demo["demo_class_id"]} if name == "names" else {"last_name": f"  {last} "}
        expected = db.session.execute(stmt, params).all()  # the ORM path, scoped by the ORM event
        assert expected, "the demo school has rows for this statement"
        # A Core row's names (as execute_reusable has always answered): the SQL's labels, so the column
        # "relationship" keeps its name where the ORM names the attribute relationship_type.
        names = tuple(db.session.connection().execute(stmt, params).keys())
        for _ in range(2):  # the first run compiles the statement, the second reuses it
            rows = execute_reusable(db.session, stmt, params)
            assert [tuple(r) for r in rows] == [tuple(r) for r in expected]
            assert rows[0]._fields == names
            assert [type(v) for v in rows[0]] == [type(v) for v in expected[0]]
    if name == "numeric":
        assert isinstance(rows[0].max_score, Decimal)
    if name == "converted":
        assert rows[0].shouted == rows[0].shouted.upper()
    if name == "students":
        assert isinstance(rows[0].date_of_birth, date) and isinstance(rows[0].created_at, datetime)


def test_a_reusable_read_sees_only_the_callers_school(app, demo):
    stmt = reusable(select(Student.id).order_by(Student.id))
    with app.test_request_context():
        seen = {}
        for school in ("demo", "hillside", "demo"):
            set_current_institution(demo[f"{school}_institution_id"])
            seen.setdefault(school, []).append({r.id for r in execute_reusable(db.session, stmt, {})})
        unscoped = {
            key: set(
                db.session.scalars(
                    select(Student.id).where(Student.institution_id == demo[f"{key}_institution_id"]),
                    execution_options={"skip_tenant": True},
                )
            )
            for key in ("demo", "hillside")
        }
    assert (
        seen["demo"][0] == seen["demo"][1] == unscoped["demo"] and demo["demo_student_id"] in unscoped["demo"]
    )
    assert seen["hillside"][0] == unscoped["hillside"] and demo["hillside_student_id"] in unscoped["hillside"]
    assert not unscoped["demo"] & unscoped["hillside"]


def test_a_lone_read_runs_alone_in_autocommit_on_the_reads_engine(app, demo):
    stmt = reusable(select(Student.id).where(Student.id == bindparam("student_id")))
    seen = []

    def spy(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement.split()[0], conn.connection.dbapi_connection.autocommit))

    with app.app_context():
        session = scoped_session(sessionmaker(bind=db.engine))  # not the suite's rolled-back connection
        reads = db.engines["reads"]
        event.listen(reads, "before_cursor_execute", spy)
        try:
            with app.test_request_context():
                set_current_institution(demo["demo_institution_id"])
                rows = execute_reusable(session, stmt, {"student_id": demo["demo_student_id"]})
                assert not session().in_transaction()  # the request's session never began one
        finally:
            event.remove(reads, "before_cursor_execute", spy)
            session.remove()
    assert [r.id for r in rows] == [demo["demo_student_id"]]
    assert seen == [("SELECT", True)]  # one statement, on a connection in autocommit: no BEGIN, no ROLLBACK


def test_a_lone_read_is_timed_and_a_slow_one_logged_with_its_sql(app, demo, caplog):
    # The reads engine has no statement events (app/core/observability.py): tenancy times its reads.
    stmt = reusable(select(Student.id).where(Student.id == bindparam("student_id")))
    sample = REGISTRY.get_sample_value
    before = (
        sample("schoolhouse_db_query_duration_seconds_count") or 0,
        sample("schoolhouse_db_slow_queries_total") or 0,
    )
    with app.app_context():
        session = scoped_session(sessionmaker(bind=db.engine))
        slow_ms, app.config["SLOW_QUERY_MS"] = app.config["SLOW_QUERY_MS"], -1  # every statement is slow
        try:
            with app.test_request_context(), caplog.at_level(logging.WARNING, "schoolhouse.perf"):
                set_current_institution(demo["demo_institution_id"])
                execute_reusable(session, stmt, {"student_id": demo["demo_student_id"]})
        finally:
            app.config["SLOW_QUERY_MS"] = slow_ms
            session.remove()
    assert sample("schoolhouse_db_query_duration_seconds_count") == before[0] + 1
    assert sample("schoolhouse_db_slow_queries_total") == before[1] + 1
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("slow query took")]
    assert len(logged) == 1 and "FROM students" in logged[0] and "students.id = " in logged[0]
