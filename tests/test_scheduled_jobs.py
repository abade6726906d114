"""The beat schedule everywhere: `flask jobs list|run` on PostgreSQL and Redis, when a process runs the
schedule itself (app/celery_app.py), the absence-alert job's cheap repeat runs, and the embedded
default (`flask run` on SQLite, no Redis) mailing an absence without any manual step."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import click
import pytest
from flask.cli import run_command
from sqlalchemy import event, select

import app.celery_app as wiring
from app.attendance.models import AttendanceRecord
from app.core.locks import lock, lock_key
from app.extensions import db
from app.jobs.cli import jobs_cli
from app.notifications import services
from app.notifications.models import OutboxEmail
from config import BEAT_SCHEDULE
from tests.conftest import demo_today
from tests.embedded import SERVICE_SETTINGS, run_embedded

GUARDIAN = "guardian@demo-academy.test"


@pytest.fixture
def settings(app):
    """Change app settings for one test."""
    saved = {}

    def set_(**values):
        for key in values:
            saved.setdefault(key, app.config.get(key))
        app.config.update(values)

    yield set_
    app.config.update(saved)


def mark_absent(demo, day):
    """The demo student absent on `day`. The seed marks every past school day up to the machine's
    yesterday (app/seed.py build_calendar), so a weekday's mark may already be there: it is changed."""
    mark = db.session.execute(
        select(AttendanceRecord)
        .where(
            AttendanceRecord.institution_id == demo["demo_institution_id"],
            AttendanceRecord.student_id == demo["demo_student_id"],
            AttendanceRecord.date == day,
            AttendanceRecord.period == 0,
            AttendanceRecord.subject_id.is_(None),
        )
        .execution_options(skip_tenant=True)
    ).scalar_one_or_none()
    if mark is None:
        mark = AttendanceRecord(
            institution_id=demo["demo_institution_id"],
            student_id=demo["demo_student_id"],
            class_id=demo["demo_class_id"],
            period=0,
            date=day,
            source="manual",
        )
        db.session.add(mark)
    mark.status = "absent"
    db.session.commit()


def alert_key(demo, day):
    return f"absence:{demo['demo_student_id']}:{day.isoformat()}:{demo['demo_guardian_id']}"


def outbox(key):
    q = select(OutboxEmail).where(OutboxEmail.dedupe_key == key).execution_options(skip_tenant=True)
    return db.session.execute(q).scalars().all()


def invoke(app, *args):
    return app.test_cli_runner().invoke(args=["jobs", *args])


def report_of(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{") :])


# --------------------------------------------------------------------------------------------------
# The schedule
# --------------------------------------------------------------------------------------------------


def test_an_absence_is_mailed_within_five_minutes_of_the_roll_once_the_hour_has_passed():
    alerts = BEAT_SCHEDULE["absence-alerts"]["schedule"]
    minutes = sorted(alerts.minute)
    longest_gap = max((b - a) % 60 or 60 for a, b in zip(minutes, minutes[1:] + minutes[:1]))
    dispatch = BEAT_SCHEDULE["outbox-dispatch"]["schedule"].total_seconds()
    assert longest_gap * 60 + dispatch <= 5 * 60
    assert alerts.hour == set(range(24))  # each school's own hour gates it (ABSENCE_ALERT_HOUR)
    assert BEAT_SCHEDULE["absence-alerts"]["options"]["expires"] < longest_gap * 60


def test_a_repeat_absence_run_with_nothing_new_writes_nothing(app, demo, settings):
    settings(ABSENCE_ALERT_HOUR=0)
    day = demo_today(demo)
    mark_absent(demo, day)
    first = services.send_absence_alerts(institution_ids=[demo["demo_institution_id"]])
    assert first["queued"] >= 1 and len(outbox(alert_key(demo, day))) == 1

    statements = []

    def seen(conn, cursor, statement, *rest):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        again = services.send_absence_alerts(institution_ids=[demo["demo_institution_id"]])
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert again["queued"] == 0 and again["institutions"] == 1
    writes = [s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
    assert writes == []
    assert sum("attendance_records" in s for s in statements) == 1  # one query for the school's day
    assert len(outbox(alert_key(demo, day))) == 1


# --------------------------------------------------------------------------------------------------
# flask jobs
# --------------------------------------------------------------------------------------------------


def test_jobs_list_shows_every_scheduled_job_and_where_it_runs(app):
    result = invoke(app, "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "celery beat" in lines[0]  # Redis configured: beat runs it, not this process
    assert lines[1].split() == ["NAME", "SCHEDULE", "TASK", "QUEUE", "OPTIONS"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == set(BEAT_SCHEDULE)
    assert "cron */3 * * * * (UTC)" in rows["absence-alerts"]
    assert "tasks.notifications.absence_alerts" in rows["absence-alerts"]
    assert rows["absence-alerts"].endswith("--school --date")
    assert "every 60 s" in rows["outbox-dispatch"] and rows["outbox-dispatch"].endswith("-")
    assert "cron 30 3 * * * (UTC)" in rows["index-maintenance"]


def test_jobs_run_absence_alerts_queues_the_guardians_mail(app, demo, settings):
    settings(ABSENCE_ALERT_HOUR=0)
    day = demo_today(demo)
    mark_absent(demo, day)

    report = report_of(invoke(app, "run", "absence-alerts"))
    assert report["queued"] >= 1 and report["errors"] == {}
    (row,) = outbox(alert_key(demo, day))
    assert row.to_address == GUARDIAN and row.template == "absence_alert" and row.status == "pending"

    again = report_of(invoke(app, "run", "absence-alerts", "--school", str(demo["demo_institution_id"])))
    assert again["queued"] == 0 and again["institutions"] == 1  # one school, nothing new


def test_jobs_run_takes_one_school_and_a_date_where_the_job_has_them(app, demo, settings):
    settings(ABSENCE_ALERT_HOUR=23)
    day = demo_today(demo) - timedelta(days=1)
    mark_absent(demo, day)
    hillside = demo["hillside_institution_id"]
    report = report_of(
        invoke(app, "run", "absence-alerts", "--school", str(hillside), "--date", day.isoformat())
    )
    assert report["institutions"] == 1 and outbox(alert_key(demo, day)) == []  # only Hillside was looked at

    report = report_of(
        invoke(
            app,
            "run",
            "absence-alerts",
            "--school",
            str(demo["demo_institution_id"]),
            "--date",
            day.isoformat(),
        )
    )
    assert report["queued"] >= 1 and len(outbox(alert_key(demo, day))) == 1  # a past day, whatever the hour

    sent = report_of(invoke(app, "run", "outbox-dispatch"))
    assert set(sent) >= {"sent", "retry", "failed", "recovered"}


def test_jobs_run_refuses_what_the_job_cannot_do(app, demo):
    unknown = invoke(app, "run", "no-such-job")
    assert unknown.exit_code != 0 and "absence-alerts" in unknown.output
    no_school = invoke(app, "run", "outbox-dispatch", "--school", str(demo["demo_institution_id"]))
    assert no_school.exit_code != 0 and "no --school" in no_school.output
    no_date = invoke(app, "run", "cache-warming", "--date", "2024-01-01")
    assert no_date.exit_code != 0 and "no --date" in no_date.output
    missing = invoke(app, "run", "absence-alerts", "--school", "999999999")
    assert missing.exit_code != 0 and "999999999" in missing.output


def test_a_job_run_by_hand_while_beats_run_holds_the_lock_is_skipped(app):
    held = lock(app, lock_key(app, "dispatch_outbox"), 60)  # the run beat sent, still going
    assert held.acquire()
    try:
        assert report_of(invoke(app, "run", "outbox-dispatch")) == {
            "skipped": "locked",
            "job": "dispatch_outbox",
        }
    finally:
        held.release()


# --------------------------------------------------------------------------------------------------
# Which process runs the schedule itself
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def embedded(app, settings, monkeypatch):
    """The test app as if it had no broker (tasks in-process), outside testing mode."""
    settings(CELERY_ALWAYS_EAGER=True, TESTING=False, EMBEDDED_BEAT=None)
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    return settings


def wanted_under(app, command, **params):
    with click.Context(command, info_name=command.name) as ctx:
        ctx.params.update(params)
        return wiring.embedded_beat_wanted(app)


def test_the_schedule_runs_in_process_only_while_flask_run_serves_without_a_broker(
    app, embedded, monkeypatch
):
    assert wanted_under(app, run_command, reload=False) is True
    assert wanted_under(app, jobs_cli) is False  # any other command: flask db upgrade, jobs run, seed
    assert wiring.embedded_beat_wanted(app) is False  # no command: gunicorn, celery, scripts

    # the reloader's parent only watches files; the child it starts (WERKZEUG_RUN_MAIN) serves
    assert wanted_under(app, run_command, reload=True) is False
    monkeypatch.setenv("FLASK_DEBUG", "1")
    assert wanted_under(app, run_command, reload=None) is False
    monkeypatch.setenv("WERKZEUG_RUN_MAIN", "true")
    assert wanted_under(app, run_command, reload=None) is True


def test_the_setting_turns_it_on_or_off_but_never_with_a_broker(app, embedded):
    embedded(EMBEDDED_BEAT=True)
    assert wiring.embedded_beat_wanted(app) is True  # e.g. a single-process server other than flask run
    assert wanted_under(app, run_command, reload=True) is False  # still never the reloader's parent
    embedded(EMBEDDED_BEAT=False)
    assert wanted_under(app, run_command, reload=False) is False
    embedded(EMBEDDED_BEAT=True, CELERY_ALWAYS_EAGER=False)
    assert wanted_under(app, run_command, reload=False) is False  # a broker: `celery beat` runs it
    embedded(EMBEDDED_BEAT=None, CELERY_ALWAYS_EAGER=True, TESTING=True)
    assert wanted_under(app, run_command, reload=False) is False  # tests ask for it explicitly


def test_one_beat_thread_per_process(app, monkeypatch):
    started = []

    class FakeService:
        def stop(self):
            pass

    class FakeThread:
        def __init__(self, celery, **kwargs):
            self.celery, self.kwargs, self.service, self.alive = celery, kwargs, FakeService(), False

        def start(self):
            started.append(self)
            self.alive = True

        def is_alive(self):
            return self.alive

        def join(self, timeout=None):
            self.alive = False

    monkeypatch.setattr(wiring, "EmbeddedService", FakeThread)
    monkeypatch.setattr(wiring, "_embedded_beat", None)
    first = wiring.start_embedded_beat(app)
    assert wiring.start_embedded_beat(app) is first and started == [first]
    assert first.celery is app.extensions["celery"]
    assert first.kwargs == {"thread": True, "scheduler_cls": "celery.beat:Scheduler"}  # Celery's, in memory
    wiring.stop_embedded_beat()
    assert not first.is_alive() and wiring._embedded_beat is None


# --------------------------------------------------------------------------------------------------
# The embedded default: `flask run` mails an absence with no manual step
# --------------------------------------------------------------------------------------------------

SETUP = textwrap.dedent("""
    import json
    from datetime import datetime
    from zoneinfo import ZoneInfo
    from flask_migrate import upgrade
    from app import create_app
    from app.extensions import db
    from app.institutions.models import Institution
    from app.people.models import Student
    from app.seed import seed_demo

    app = create_app()
    with app.app_context():
        upgrade()
        ids = seed_demo("embedded-pass-1")
        inst = db.session.get(Institution, ids["demo_institution_id"])
        student = db.session.get(Student, ids["demo_student_id"])
        out = {"class_id": ids["demo_class_id"], "student_id": student.id,
               "student": student.first_name + " " + student.last_name,
               "day": datetime.now(ZoneInfo(inst.timezone)).date().isoformat(),
               "mail_dir": app.config["MAIL_DIR"]}
    print("RESULT " + json.dumps(out))
""")

# `flask --app wsgi run`, as `make run` starts it, with the two jobs on a short interval.
SERVER = textwrap.dedent("""
    import config
    config.BEAT_SCHEDULE["absence-alerts"]["schedule"] = 1.0
    config.BEAT_SCHEDULE["outbox-dispatch"]["schedule"] = 1.0
    from flask.cli import main
    main()
""")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, url, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=10) as r:
        return json.loads(r.read() or b"null")


def wait_for(check, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {seconds} s")


@pytest.mark.slow  # starts a server subprocess
def test_flask_run_on_the_embedded_default_mails_an_absence_without_a_manual_step(tmp_path):
    ids = run_embedded(SETUP, tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_SETTINGS and k != "EMBEDDED_BEAT"}
    env.update(
        INSTANCE_DIR=str(tmp_path / "instance"),
        LOG_LEVEL="INFO",
        LOG_JSON="false",
        ABSENCE_ALERT_HOUR="0",
        DEMO_PASSWORD="embedded-pass-1",
    )
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - the server writes to it until stopped
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, "--app", "wsgi", "run", "--host", "127.0.0.1", "--port", str(port)],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up():
            try:
                return call("GET", base + "/health/live") is not None
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                return False

        wait_for(up, 60, "the server answering")
        login = {"email": "teacher@demo-academy.test", "password": "embedded-pass-1"}
        token = call("POST", base + "/api/v1/auth/login", login)["access_token"]
        roll = {"records": [{"student_id": ids["student_id"], "status": "absent"}]}
        saved = call("PUT", f"{base}/api/v1/classes/{ids['class_id']}/attendance/{ids['day']}", roll, token)
        assert saved["counts"]["created"] == 1

        def guardians_mail():
            for path in Path(ids["mail_dir"]).glob("*.eml"):
                text = path.read_text()
                if GUARDIAN in text and ids["student"] in text:
                    return path
            return None

        wait_for(guardians_mail, 60, "the guardian's .eml")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    output = (tmp_path / "server.log").read_text()
    assert output.count("embedded beat started") == 1, output[-3000:]
