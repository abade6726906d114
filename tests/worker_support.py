"""Real workers for the tests that cross the broker: a throwaway redis-server per module, a school whose
rows are COMMITTED (a worker process cannot see a test's rolled-back transaction), a second app bound to
that Redis, and `celery worker` subprocesses that can be killed.

Nothing here sleeps blindly: every wait polls a condition with a bounded timeout.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import psutil
import pytest
import redis as redis_lib
from sqlalchemy import insert
from sqlalchemy.orm import scoped_session, sessionmaker

from app.academics.models import AcademicYear, Enrolment, SchoolClass, Subject, Term
from app.attendance.models import AttendanceRecord
from app.core.models import utcnow
from app.core.security import hash_password
from app.extensions import db
from app.institutions.models import DEFAULT_GRADING_SCALE, Institution
from app.jobs.models import Job, StoredFile
from app.people.models import Student, User
from tests.conftest import PASSWORD, Api, login

ROOT = Path(__file__).resolve().parents[1]
VISIBILITY = 4  # seconds: a dead worker's task comes back quickly in these tests
FORMULA = '=HYPERLINK("x")'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(fetch, done, timeout, what, worker=None, interval=0.1):
    """Call fetch() until done(value); fail after `timeout` seconds, naming what was awaited."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if done(value):
            return value
        time.sleep(interval)
    log = worker.log_tail() if worker is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {value!r}\n{log}")


class RedisServer:
    """A redis-server of our own, without persistence (a restart loses everything: the worst case)."""

    def __init__(self, directory, maxmemory=None, policy="noeviction"):
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.dir, self.port, self.proc = Path(directory), free_port(), None
        self.memory = ["--maxmemory", maxmemory] if maxmemory else []
        self.policy = policy

    def url(self, db_number=0):
        return f"redis://127.0.0.1:{self.port}/{db_number}"

    def client(self, db_number=2):
        return redis_lib.Redis.from_url(self.url(db_number), socket_timeout=2)

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--maxmemory-policy",
                self.policy,
                *self.memory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll(self._ping, bool, 10, f"redis-server on port {self.port}")
        return self

    def _ping(self):
        try:
            return redis_lib.Redis(port=self.port, socket_timeout=0.5).ping()
        except redis_lib.RedisError:
            return False

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()  # no save configured: the data is gone
            self.proc.wait(10)
            self.proc = None

    def restart(self):
        self.stop()
        return self.start()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def committed_school(app):
    """A school of its own, committed: 3 students in one class (one named like a formula), marks on two
    days. Left in place afterwards except its jobs and files (the audit log is append-only)."""
    slug = f"worker-{uuid.uuid4().hex[:8]}"
    now = utcnow()
    stamp = {"created_at": now, "updated_at": now}
    with app.app_context(), db.engine.begin() as conn:
        iid = conn.execute(
            insert(Institution).returning(Institution.id),
            [
                {
                    "name": "Worker Test School",
                    "slug": slug,
                    "currency": "USD",
                    "timezone": "UTC",
                    "grading_scale": list(DEFAULT_GRADING_SCALE),
                    "absence_threshold": 90,
                    **stamp,
                }
            ],
        ).scalar()
        row = {"institution_id": iid, **stamp}
        conn.execute(
            insert(User),
            [
                {
                    **row,
                    "email": f"admin@{slug}.test",
                    "password_hash": hash_password(PASSWORD),
                    "role": "admin",
                    "first_name": "Ada",
                    "last_name": "Admin",
                    "is_active": True,
                }
            ],
        )
        start = date.today() - timedelta(days=30)
        year = conn.execute(
            insert(AcademicYear).returning(AcademicYear.id),
            [
                {
                    **row,
                    "name": "Worker year",
                    "start_date": start,
                    "end_date": start + timedelta(days=300),
                    "is_current": True,
                }
            ],
        ).scalar()
        conn.execute(
            insert(Term),
            [
                {
                    **row,
                    "academic_year_id": year,
                    "name": "Term 1",
                    "start_date": start,
                    "end_date": start + timedelta(days=90),
                }
            ],
        )
        conn.execute(insert(Subject), [{**row, "code": "MATH", "name": "Mathematics"}])
        class_id = conn.execute(
            insert(SchoolClass).returning(SchoolClass.id),
            [{**row, "academic_year_id": year, "name": "Grade 5W", "grade_level": 5, "section": "W"}],
        ).scalar()
        students = (
            conn.execute(
                insert(Student).returning(Student.id),
                [
                    {
                        **row,
                        "admission_number": f"W-{n}",
                        "first_name": first,
                        "last_name": last,
                        "status": "active",
                    }
                    for n, (first, last) in enumerate(
                        [("Grace", "Hopper"), (FORMULA, "Formula"), ("Alan", "Turing")]
                    )
                ],
            )
            .scalars()
            .all()
        )
        conn.execute(
            insert(Enrolment),
            [{**row, "student_id": s, "class_id": class_id, "start_date": start} for s in students],
        )
        days = [date.today() - timedelta(days=d) for d in (1, 2)]
        conn.execute(
            insert(AttendanceRecord),
            [
                {
                    **row,
                    "student_id": s,
                    "class_id": class_id,
                    "subject_id": None,
                    "period": 0,
                    "date": d,
                    "status": "present",
                    "source": "manual",
                }
                for s in students
                for d in days
            ],
        )

    def login_as_admin(client):
        return Api(client, login(client, f"admin@{slug}.test"))

    yield {
        "institution_id": iid,
        "class_id": class_id,
        "students": students,
        "slug": slug,
        "from": min(days).isoformat(),
        "to": max(days).isoformat(),
        "login": login_as_admin,
    }
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(Job.__table__.delete().where(Job.__table__.c.institution_id == iid))
        conn.execute(StoredFile.__table__.delete().where(StoredFile.__table__.c.institution_id == iid))


@pytest.fixture
def committing(app):
    """The API's writes really commit (instead of the test's rolled-back transaction): a worker must see them."""
    rolled = db.session
    with app.app_context():
        engine = db.engine
    db.session = scoped_session(sessionmaker(bind=engine), scopefunc=rolled.registry.scopefunc)
    try:
        yield
    finally:
        db.session.remove()
        db.session = rolled


def worker_env(broker_server, export_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        APP_ENV="testing",
        TEST_REDIS_URL=broker_server.url(0),
        EXPORT_DIR=str(export_dir),
        UPLOAD_DIR=str(Path(export_dir).parent / "uploads"),  # shared by the web app and the workers
        CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY),
        CELERY_RESTORE_INTERVAL="1",
        JOB_REQUEUE_AFTER="1",
        PYTHONUNBUFFERED="1",
        LOG_JSON="false",
        RATELIMIT_ENABLED="false",
    )
    return env


@pytest.fixture
def worker_app(app, broker, tmp_path, monkeypatch):
    """A second app like the first but on the throwaway Redis, not in-process: what web processes run."""
    from app import create_app  # noqa: PLC0415

    # The throwaway Redis lives for the module; like the suite's (conftest `_clean_redis`) it starts each
    # test empty. A test that kills a worker can leave a redelivered copy of its finished export queued
    # (a no-op for the job row), and the next test counts the queue.
    broker.client(0).flushall()
    for key, value in worker_env(broker, tmp_path / "exports").items():
        if key.startswith(("TEST_REDIS", "CELERY_", "JOB_", "EXPORT_", "UPLOAD_")):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("CELERY_ALWAYS_EAGER", "false")
    second = create_app("testing", RATELIMIT_SENSITIVE="1000 per hour", RATELIMIT_API="100000 per hour")
    app.extensions[
        "celery"
    ].set_default()  # shared tasks called directly elsewhere keep using the suite's app
    yield second, second.test_client()
    with second.app_context():
        for engine in db.engines.values():
            engine.dispose()


class Worker:
    """`celery -A celery_worker worker` in its own process group (so SIGKILL reaches the pool too)."""

    def __init__(self, broker_server, export_dir, log_dir, name=None, concurrency=1):
        self.env = worker_env(broker_server, export_dir)
        self.name = name or f"w{uuid.uuid4().hex[:6]}"
        self.log_path = Path(log_dir) / f"{self.name}.log"
        self.concurrency = concurrency
        self.proc = None

    def start(self):
        celery = Path(sys.executable).with_name("celery")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(celery),
                "-A",
                "celery_worker",
                "worker",
                "-Q",
                "default,exports,notifications,maintenance",
                "--pool",
                "prefork",
                "--concurrency",
                str(self.concurrency),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "info",
                "-n",
                f"{self.name}@%h",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        poll(
            lambda: self.proc.poll() is not None or b" ready." in self.log_path.read_bytes(),
            bool,
            60,
            f"worker {self.name} to start",
            worker=self,
        )
        assert self.proc.poll() is None, self.log_tail()
        return self

    def children(self):
        return psutil.Process(self.proc.pid).children(recursive=True)

    def kill(self):
        """SIGKILL the whole worker (main process and pool): a machine or container dying."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, n=4000):
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
