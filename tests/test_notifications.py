"""Email outbox and notifications against real PostgreSQL and a REAL SMTP server (aiosmtpd on a free
port, storing what arrives). Each test's rows live in its rolled-back transaction; the sender runs in
the same process and session, so what it claims and marks is what the test sees."""

import os
import socket
import subprocess
import sys
import textwrap
import time as clock
from collections import Counter
from datetime import date, datetime, time, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from markupsafe import escape
from sqlalchemy import delete, insert, select, update

from app.academics.models import AcademicYear, Subject, Term
from app.attendance.models import AttendanceRecord
from app.core.models import utcnow
from app.extensions import db
from app.finance.models import Invoice
from app.institutions.models import Institution
from app.jobs.models import Job
from app.notifications import mailer, services
from app.notifications.models import OutboxEmail
from app.people.models import Guardian, Student, StudentGuardian, User
from tasks import notifications as tasks
from tests.embedded import run_embedded

GUARDIAN = "guardian@demo-academy.test"


# --------------------------------------------------------------------------------------------------
# A real SMTP server
# --------------------------------------------------------------------------------------------------


class Inbox:
    """aiosmtpd handler: keeps every message that arrives; can refuse chosen recipients."""

    def __init__(self):
        self.messages = []  # (recipients, parsed message)
        self.refuse = {}  # address -> SMTP reply, e.g. "550 5.1.1 no such user"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = BytesParser(policy=policy.default).parsebytes(envelope.original_content or envelope.content)
        self.messages.append((list(envelope.rcpt_tos), msg))
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.inbox = Inbox()
        self.controller = None

    def start(self):
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, address):
        return [m for rcpts, m in self.inbox.messages if address in rcpts]

    def message_ids(self):
        return Counter(m["Message-ID"] for _, m in self.inbox.messages)


@pytest.fixture
def smtp(app):
    server = SmtpServer()
    server.start()
    keys = ("MAIL_BACKEND", "SMTP_HOST", "SMTP_PORT", "SMTP_TIMEOUT", "SMTP_STARTTLS", "SMTP_USER")
    saved = {k: app.config.get(k) for k in keys}
    app.config.update(
        MAIL_BACKEND="smtp",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=server.port,
        SMTP_TIMEOUT=5,
        SMTP_STARTTLS=False,
        SMTP_USER=None,
    )
    try:
        yield server
    finally:
        server.stop()
        app.config.update(saved)


@pytest.fixture(autouse=True)
def empty_outbox(app):
    """Start from an empty outbox: other tests commit rows for real (worker tests); this test's
    transaction hides them, and the rollback brings them back."""
    db.session.execute(delete(OutboxEmail).execution_options(skip_tenant=True))
    db.session.commit()


@pytest.fixture
def config(app):
    """Change app settings for one test."""
    saved = {}

    def set_(**values):
        for k, _v in values.items():
            saved.setdefault(k, app.config.get(k))
        app.config.update(values)

    yield set_
    app.config.update(saved)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def local_today(institution_id):
    inst = db.session.get(Institution, institution_id)
    return datetime.now(ZoneInfo(inst.timezone)).date()


def mark(demo, student_id, day, status="absent", period=0, subject_id=None, note=None, class_id=None):
    db.session.add(
        AttendanceRecord(
            institution_id=demo["demo_institution_id"],
            student_id=student_id,
            class_id=class_id or demo["demo_class_id"],
            subject_id=subject_id,
            period=period,
            date=day,
            status=status,
            note=note,
            source="manual",
        )
    )
    db.session.flush()


def rows(**where):
    q = (
        select(OutboxEmail)
        .order_by(OutboxEmail.id)
        .execution_options(skip_tenant=True, populate_existing=True)
    )
    for k, v in where.items():
        q = q.where(getattr(OutboxEmail, k) == v)
    return db.session.execute(q).scalars().all()


def student_name(student_id):
    s = db.session.get(Student, student_id)
    return f"{s.first_name} {s.last_name}"


def export_context(**extra):
    return {
        "school": "Demo Academy",
        "school_email": None,
        "school_phone": None,
        "user_name": "Ann Admin",
        "kind": "students",
        "kind_label": "students",
        "format": "CSV",
        "row_count": 3,
        "job_id": 1,
        "expires_at": None,
        "expires_display": None,
        "download_url": None,
        **extra,
    }


def queue(demo, n, prefix="t", institution_id=None):
    ids = [
        services.enqueue_email(
            institution_id or demo["demo_institution_id"],
            f"{prefix}:{i}",
            f"parent{i}.{prefix}@example.test",
            "export_ready",
            export_context(),
            f"Test message {i}",
        )
        for i in range(n)
    ]
    db.session.commit()
    return ids


def body(msg, kind):
    return msg.get_body(preferencelist=(kind,)).get_content()


# --------------------------------------------------------------------------------------------------
# Absence alerts
# --------------------------------------------------------------------------------------------------


def test_absence_alert_reaches_the_demo_guardian_over_smtp(demo, smtp):
    day = local_today(demo["demo_institution_id"])
    mark(demo, demo["demo_student_id"], day)
    db.session.commit()

    report = services.send_absence_alerts(on_date=day, institution_ids=[demo["demo_institution_id"]])
    assert report["queued"] >= 1 and not report["errors"]
    sent = services.dispatch_outbox()
    assert sent["sent"] == report["queued"] and sent["retry"] == sent["failed"] == 0

    mails = smtp.to(GUARDIAN)
    assert len(mails) == 1
    msg = mails[0]
    name = student_name(demo["demo_student_id"])
    assert name in msg["Subject"]
    assert msg.get_content_type() == "multipart/alternative"
    text, html = body(msg, "plain"), body(msg, "html")
    assert name in text and day.strftime("%B %Y") in text and "whole day" in text
    assert str(escape(name)) in html and "<html" in html
    assert msg["Reply-To"] == "office@demo-academy.test" and msg["Auto-Submitted"] == "auto-generated"
    (row,) = rows(to_address=GUARDIAN)
    assert row.status == "sent" and row.attempts == 1 and row.sent_at is not None
    assert row.message_id == msg["Message-ID"]
    assert row.dedupe_key == f"absence:{demo['demo_student_id']}:{day.isoformat()}:{demo['demo_guardian_id']}"


def test_running_the_absence_job_twice_sends_nothing_new(demo, smtp):
    day = local_today(demo["demo_institution_id"])
    mark(demo, demo["demo_student_id"], day)
    db.session.commit()

    first = tasks.absence_alerts.apply(kwargs={"on_date": day.isoformat()}).get()
    tasks.dispatch_outbox.apply().get()
    delivered = len(smtp.inbox.messages)
    assert first["queued"] == delivered >= 1

    second = tasks.absence_alerts.apply(kwargs={"on_date": day.isoformat()}).get()
    again = tasks.dispatch_outbox.apply().get()
    assert second["queued"] == 0 and again["sent"] == 0
    assert len(smtp.inbox.messages) == delivered
    assert all(n == 1 for n in smtp.message_ids().values())


def test_one_alert_per_guardian_and_student_only_for_absences_and_guardians_with_email(demo, smtp):
    iid = demo["demo_institution_id"]
    day = local_today(iid)
    no_email = Guardian(institution_id=iid, first_name="Nomail", last_name="Parent", email=None)
    db.session.add(no_email)
    db.session.flush()
    db.session.add(
        StudentGuardian(
            institution_id=iid,
            student_id=demo["demo_student_id"],
            guardian_id=no_email.id,
            relationship_type="uncle",
            is_primary=False,
        )
    )
    # absent all day AND in period 2 (Mathematics): still ONE message, naming the period
    mark(demo, demo["demo_student_id"], day)
    mark(
        demo,
        demo["demo_student_id"],
        day,
        period=2,
        subject_id=demo["demo_subject_id"],
        note="Sick, note from parent",
    )
    # the sibling (same guardian) was late, not absent: no alert about the sibling
    mark(demo, demo["demo_sibling_student_id"], day, status="late", class_id=demo["demo_sibling_class_id"])
    db.session.commit()

    services.send_absence_alerts(on_date=day, institution_ids=[iid])
    queued = rows()
    assert {r.to_address for r in queued} == {
        g.email
        for g in db.session.execute(
            select(Guardian)
            .join(StudentGuardian, StudentGuardian.guardian_id == Guardian.id)
            .where(StudentGuardian.student_id == demo["demo_student_id"], Guardian.email.is_not(None))
        ).scalars()
    }
    assert len({r.to_address for r in queued}) == len(queued)  # one per guardian
    assert all(r.dedupe_key.startswith(f"absence:{demo['demo_student_id']}:") for r in queued)

    services.dispatch_outbox()
    text = body(smtp.to(GUARDIAN)[0], "plain")
    subject_name = db.session.get(Subject, demo["demo_subject_id"]).name
    assert f"period 2 ({subject_name})" in text and "Sick, note from parent" in text


def test_absence_alerts_wait_for_the_schools_local_alert_hour(demo, config):
    iid = demo["demo_institution_id"]
    config(ABSENCE_ALERT_HOUR=16)
    day = local_today(iid)
    mark(demo, demo["demo_student_id"], day)
    tz = ZoneInfo(db.session.get(Institution, iid).timezone)

    early = services.send_absence_alerts(institution_ids=[iid], now=datetime.combine(day, time(15, 30), tz))
    assert early["waiting"] == [iid] and early["queued"] == 0 and rows() == []

    late = services.send_absence_alerts(institution_ids=[iid], now=datetime.combine(day, time(16, 5), tz))
    assert late["queued"] >= 1
    assert all(r.dedupe_key.split(":")[2] == day.isoformat() for r in rows())


# --------------------------------------------------------------------------------------------------
# Exactly once: SMTP outage, worker lost mid-send, concurrent claims
# --------------------------------------------------------------------------------------------------


def test_smtp_down_keeps_messages_pending_with_backoff_then_sends_each_exactly_once(demo, smtp):
    ids = queue(demo, 3)
    smtp.stop()
    t0 = utcnow()

    down = services.dispatch_outbox(now=t0)
    assert down["sent"] == 0 and down["retry"] == 3 and "connection_error" in down
    for r in rows():
        assert r.status == "pending" and r.attempts == 1 and "connect" in r.last_error
        assert r.next_attempt_at >= t0 + timedelta(seconds=30)  # base 60 s, jitter in the upper half

    # not due yet: a run a second later tries nothing
    assert services.dispatch_outbox(now=t0 + timedelta(seconds=1))["retry"] == 0
    assert {r.attempts for r in rows()} == {1}

    # still down an hour later: second attempt, and the backoff doubles
    t1 = t0 + timedelta(hours=1)
    assert services.dispatch_outbox(now=t1)["retry"] == 3
    for r in rows():
        assert r.status == "pending" and r.attempts == 2 and r.next_attempt_at >= t1 + timedelta(seconds=60)

    smtp.start()
    up = services.dispatch_outbox(now=t0 + timedelta(days=1))
    assert up["sent"] == 3 and up["retry"] == 0
    assert services.dispatch_outbox(now=t0 + timedelta(days=2))["sent"] == 0
    counts = smtp.message_ids()
    assert len(counts) == 3 and set(counts.values()) == {1}
    assert set(counts) == {r.message_id for r in rows()}
    assert all(r.status == "sent" and r.attempts == 3 for r in rows()) and sorted(
        r.id for r in rows()
    ) == sorted(ids)


def test_a_message_gives_up_after_the_maximum_attempts(demo, smtp, config):
    config(OUTBOX_MAX_ATTEMPTS=2)
    queue(demo, 1)
    smtp.stop()
    t0 = utcnow()
    services.dispatch_outbox(now=t0)
    services.dispatch_outbox(now=t0 + timedelta(days=1))
    (row,) = rows()
    assert row.status == "failed" and row.attempts == 2 and "gave up after 2 attempts" in row.last_error
    smtp.start()
    assert services.dispatch_outbox(now=t0 + timedelta(days=2))["sent"] == 0
    assert smtp.inbox.messages == []


def test_a_permanent_refusal_fails_at_once_and_a_temporary_one_is_retried(demo, smtp):
    ids = queue(demo, 3)
    refused, busy, fine = (db.session.get(OutboxEmail, i) for i in ids)
    smtp.inbox.refuse[refused.to_address] = "550 5.1.1 No such user here"
    smtp.inbox.refuse[busy.to_address] = "450 4.2.1 Mailbox busy, try later"

    report = services.dispatch_outbox()
    assert report == {**report, "sent": 1, "failed": 1, "retry": 1}
    by_id = {r.id: r for r in rows()}
    assert by_id[refused.id].status == "failed" and "550" in by_id[refused.id].last_error
    assert by_id[busy.id].status == "pending" and "450" in by_id[busy.id].last_error
    assert by_id[fine.id].status == "sent"
    assert [m for _, m in smtp.inbox.messages] == smtp.to(fine.to_address)

    del smtp.inbox.refuse[busy.to_address]
    services.dispatch_outbox(now=utcnow() + timedelta(days=1))
    assert len(smtp.to(busy.to_address)) == 1 and not smtp.to(refused.to_address)


def test_a_row_stuck_in_sending_past_its_lease_is_recovered_and_sent_once(demo, smtp):
    lost, alive = queue(demo, 2)
    now = utcnow()
    # a worker claimed `lost` and died before sending; another worker is busy with `alive` right now
    db.session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == lost)
        .values(status="sending", attempts=1, next_attempt_at=now - timedelta(minutes=1))
    )
    db.session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == alive)
        .values(status="sending", attempts=1, next_attempt_at=now + timedelta(minutes=5))
    )
    db.session.commit()

    report = services.dispatch_outbox(now=now)
    assert report["recovered"] == 1 and report["sent"] == 1
    lost_row, alive_row = rows()
    assert lost_row.status == "sent" and lost_row.attempts == 2
    assert alive_row.status == "sending"  # a live sender's claim is respected
    assert len(smtp.to(lost_row.to_address)) == 1 and not smtp.to(alive_row.to_address)
    assert services.dispatch_outbox(now=now)["sent"] == 0


def test_a_duplicate_from_the_crash_window_carries_the_same_message_id(app, demo, smtp):
    """The residual window: the server accepted the message, then the worker died before recording
    it. Recovery sends it again; both copies carry one Message-ID, so the duplicate is detectable."""
    (oid,) = queue(demo, 1)
    row = db.session.get(OutboxEmail, oid)
    text, html = mailer.render(row.template, row.context)
    first = mailer.build_message(
        outbox_id=row.id,
        created_at=row.created_at,
        to=row.to_address,
        subject=row.subject,
        text=text,
        html=html,
        mail_from=app.config["MAIL_FROM"],
    )
    now = utcnow()
    db.session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == oid)
        .values(status="sending", attempts=1, next_attempt_at=now - timedelta(seconds=1))
    )
    db.session.commit()
    with mailer.SmtpTransport({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": smtp.port}) as t:
        t.send(first)  # ...and here the "worker" dies

    services.dispatch_outbox(now=now)
    copies = smtp.to(row.to_address)
    assert len(copies) == 2
    (row,) = rows()
    assert copies[0]["Message-ID"] == copies[1]["Message-ID"] == row.message_id
    assert smtp.message_ids()[row.message_id] == 2


def test_send_outbox_email_task_sends_once_and_respects_another_senders_claim(demo, smtp):
    a, b = queue(demo, 2)
    assert tasks.send_outbox_email.apply(args=[a]).get() == "sent"
    assert tasks.send_outbox_email.apply(args=[a]).get() == "sent"  # second call: nothing to claim
    assert len(smtp.inbox.messages) == 1

    db.session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == b)
        .values(status="sending", next_attempt_at=utcnow() + timedelta(minutes=5))
    )
    db.session.commit()
    assert tasks.send_outbox_email.apply(args=[b]).get() == "sending"
    assert len(smtp.inbox.messages) == 1


def test_a_batch_out_of_time_hands_untried_rows_back_without_counting_an_attempt(demo, smtp):
    queue(demo, 2)
    report = services.dispatch_outbox(max_seconds=0)
    assert report["released"] == 2 and report["sent"] == 0
    assert [(r.status, r.attempts) for r in rows()] == [("pending", 0), ("pending", 0)]
    assert smtp.inbox.messages == []
    assert services.dispatch_outbox()["sent"] == 2 and len(smtp.message_ids()) == 2


def test_each_school_alerts_only_its_own_guardians(app, demo, smtp):
    day = date.today() + timedelta(days=1)  # a day with no marks in the seed, the same for both schools
    hillside_student = db.session.get(Student, demo["hillside_student_id"])
    hillside_class = db.session.execute(
        select(AttendanceRecord.class_id).where(AttendanceRecord.student_id == hillside_student.id).limit(1)
    ).scalar()
    mark(demo, demo["demo_student_id"], day)
    db.session.add(
        AttendanceRecord(
            institution_id=demo["hillside_institution_id"],
            student_id=hillside_student.id,
            class_id=hillside_class,
            period=0,
            date=day,
            status="absent",
        )
    )
    db.session.commit()
    report = services.send_absence_alerts(on_date=day)
    assert report["institutions"] >= 2 and not report["errors"]
    queued = rows()
    guardians = dict(
        db.session.execute(
            select(Guardian.email, Guardian.institution_id)
            .join(StudentGuardian, StudentGuardian.guardian_id == Guardian.id)
            .where(StudentGuardian.student_id.in_([demo["demo_student_id"], hillside_student.id]))
        ).all()
    )
    assert {r.institution_id for r in queued} == {
        demo["demo_institution_id"],
        demo["hillside_institution_id"],
    }
    for r in queued:
        assert guardians[r.to_address] == r.institution_id
        assert r.context["school"] == db.session.get(Institution, r.institution_id).name


def explain(stmt):
    compiled = stmt.compile(dialect=db.session.get_bind().dialect)
    conn = db.session.connection()
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # tiny test tables: show the index is usable
    plan = conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params).scalars().all()
    return "\n".join(plan)


def test_the_senders_queries_use_the_outbox_indexes(demo):
    now = utcnow()
    assert "ix_email_outbox_pending_due" in explain(services.claim_batch_statement(now, now, 50))
    assert "ix_email_outbox_sending_lease" in explain(
        select(OutboxEmail.__table__.c.id).where(services._stuck(now))
    )


# --------------------------------------------------------------------------------------------------
# A real worker process (the test's transaction is invisible to it: its rows are committed, then removed)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def committed_outbox(app, demo):
    made = []

    def add(n):
        now = utcnow()
        with db.engine.begin() as conn:
            for i in range(n):
                made.append(
                    conn.execute(
                        insert(OutboxEmail.__table__)
                        .values(
                            institution_id=demo["demo_institution_id"],
                            dedupe_key=f"worker-test:{os.getpid()}:{i}",
                            to_address=f"worker{i}@example.test",
                            template="export_ready",
                            context=export_context(),
                            subject=f"Worker test {i}",
                            status="pending",
                            attempts=0,
                            created_at=now,
                            next_attempt_at=now,
                        )
                        .returning(OutboxEmail.__table__.c.id)
                    ).scalar()
                )
        return list(made)

    yield add
    with db.engine.begin() as conn:
        conn.execute(delete(OutboxEmail.__table__).where(OutboxEmail.__table__.c.id.in_(made)))


@pytest.fixture
def worker(app, smtp, tmp_path):
    """`celery -A celery_worker worker` on a queue of its own: other test runs share this Redis, and
    their workers must not take our tasks (nor ours theirs)."""
    queue_name = f"notifications-test-{os.getpid()}"
    env = {
        **os.environ,
        "APP_ENV": "testing",
        "MAIL_BACKEND": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "CELERY_ALWAYS_EAGER": "false",
    }
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - the worker process keeps it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_worker",
            "worker",
            "-Q",
            queue_name,
            "-P",
            "solo",
            "-n",
            f"{queue_name}@%h",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "INFO",
        ],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield SimpleNamespace(queue=queue_name, log=tmp_path / "worker.log", proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def outbox_status(oid):
    with db.engine.connect() as conn:
        return conn.execute(
            select(OutboxEmail.__table__.c.status).where(OutboxEmail.__table__.c.id == oid)
        ).scalar()


def test_a_real_worker_sends_a_committed_message_once(app, smtp, committed_outbox, worker):
    (oid,) = committed_outbox(1)
    celery = app.extensions["celery"]
    # the route the app uses for our tasks (the worker here listens on a private queue instead)
    route = celery.amqp.router.route({}, "tasks.notifications.send_outbox_email")
    assert route["queue"].name == "notifications"
    send = celery.tasks["tasks.notifications.send_outbox_email"]  # this suite's app and broker
    # Every delivery is sent twice (a duplicate delivery must not send twice). Sent again if it has not
    # run within a few seconds: the Redis is shared with other test runs, whose FLUSHALL between two
    # tests can drop a message (the task is idempotent, as it must be). The whole wait stays well under
    # the test transaction's idle_in_transaction_session_timeout.
    end = clock.monotonic() + 40
    while clock.monotonic() < end and outbox_status(oid) != "sent":
        send.apply_async(args=[oid], queue=worker.queue)
        send.apply_async(args=[oid], queue=worker.queue)
        retry_at = clock.monotonic() + 8
        while clock.monotonic() < retry_at and outbox_status(oid) != "sent":
            clock.sleep(0.2)
    assert outbox_status(oid) == "sent", worker.log.read_text()[-3000:]
    end = clock.monotonic() + 10  # let the duplicate delivery run too
    while clock.monotonic() < end and worker.log.read_text().count("succeeded") < 2:
        clock.sleep(0.2)
    assert worker.log.read_text().count("succeeded") >= 2
    assert len(smtp.to("worker0@example.test")) == 1 and len(smtp.message_ids()) == 1


# --------------------------------------------------------------------------------------------------
# The outbox row is part of the caller's transaction, once per dedupe key
# --------------------------------------------------------------------------------------------------


def test_enqueue_belongs_to_the_callers_transaction_and_dedupes(demo):
    iid, other = demo["demo_institution_id"], demo["hillside_institution_id"]
    nested = db.session.begin_nested()
    services.enqueue_email(iid, "event:1", "a@example.test", "export_ready", export_context(), "Hello")
    nested.rollback()  # the event did not commit: no mail
    assert rows() == []

    first = services.enqueue_email(
        iid, "event:1", "a@example.test", "export_ready", export_context(), "Hello"
    )
    again = services.enqueue_email(
        iid, "event:1", "b@example.test", "export_ready", export_context(), "Hello"
    )
    elsewhere = services.enqueue_email(
        other, "event:1", "a@example.test", "export_ready", export_context(), "Hi"
    )
    db.session.commit()
    assert first and again is None and elsewhere and elsewhere != first
    assert [(r.institution_id, r.to_address) for r in rows()] == [
        (iid, "a@example.test"),
        (other, "a@example.test"),
    ]
    row = rows()[0]
    assert row.status == "pending" and row.attempts == 0 and row.next_attempt_at is not None


def test_enqueue_refuses_bad_input_and_another_institutions_mail(demo):
    iid = demo["demo_institution_id"]
    with pytest.raises(ValueError):
        services.enqueue_email(iid, "k", "a@example.test", "no_such_template", {}, "s")
    for bad in ("", "not-an-address", "a@example.test, b@example.test", "a@example.test\r\nBcc: x@y.test"):
        with pytest.raises(ValueError):
            services.enqueue_email(iid, "k", bad, "export_ready", export_context(), "s")
    with pytest.raises(TypeError):
        services.enqueue_email(iid, "k", "a@example.test", "export_ready", {"when": date.today()}, "s")
    with services.institution_scope(demo["hillside_institution_id"]), pytest.raises(PermissionError):
        services.enqueue_email(iid, "k", "a@example.test", "export_ready", export_context(), "s")
    assert rows() == []


# --------------------------------------------------------------------------------------------------
# Fee reminders
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def school():
    """A small school of its own (the demo invoices are all overdue): one family, several invoices."""
    inst = Institution(
        name="Reminder School",
        slug="reminder-school",
        currency="USD",
        timezone="UTC",
        email="office@reminder.test",
    )
    db.session.add(inst)
    db.session.flush()
    iid = inst.id
    today = date.today()
    year = AcademicYear(
        institution_id=iid,
        name="Y",
        start_date=today - timedelta(days=200),
        end_date=today + timedelta(days=200),
        is_current=True,
    )
    db.session.add(year)
    db.session.flush()
    term = Term(
        institution_id=iid,
        academic_year_id=year.id,
        name="T",
        start_date=year.start_date,
        end_date=year.end_date,
    )
    db.session.add(term)
    guardians = [
        Guardian(institution_id=iid, first_name="Mary", last_name="Moss", email="mary@example.test"),
        Guardian(institution_id=iid, first_name="Otto", last_name="Moss", email=None),
        Guardian(institution_id=iid, first_name="Paul", last_name="Moss", email="paul@example.test"),
    ]
    db.session.add_all(guardians)
    db.session.flush()
    invoices = {}
    # name: (due in days, status, total, paid)
    plan = {
        "due_soon": (7, "open", 250_000, 100_000),
        "due_today": (0, "open", 50_000, 0),
        "later": (10, "open", 50_000, 0),
        "overdue": (-10, "partially_paid", 80_000, 30_000),
        "paid": (-10, "paid", 50_000, 50_000),
        "void": (-10, "void", 50_000, 0),
    }
    for n, (name, (days, status, total, paid)) in enumerate(plan.items()):
        s = Student(
            institution_id=iid,
            admission_number=f"R{n}",
            first_name=name.title().replace("_", ""),
            last_name="Moss",
            status="active",
        )
        db.session.add(s)
        db.session.flush()
        for g in guardians:
            db.session.add(
                StudentGuardian(
                    institution_id=iid,
                    student_id=s.id,
                    guardian_id=g.id,
                    relationship_type="parent",
                    is_primary=g is guardians[0],
                )
            )
        inv = Invoice(
            institution_id=iid,
            student_id=s.id,
            term_id=term.id,
            number=f"INV-R-{n}",
            status=status,
            total_minor=total,
            paid_minor=paid,
            due_date=today + timedelta(days=days),
        )
        db.session.add(inv)
        db.session.flush()
        invoices[name] = inv.id
    db.session.commit()
    return {"id": iid, "today": today, "invoices": invoices}


def test_fee_reminders_before_the_due_date_and_weekly_while_overdue(school, smtp, config):
    config(FEE_REMINDER_DAYS=7)
    inv, today = school["invoices"], school["today"]

    report = services.send_fee_reminders(on_date=today, institution_ids=[school["id"]])
    keys = {r.dedupe_key for r in rows()}
    week = "{}-W{:02d}".format(*today.isocalendar()[:2])
    expected = {
        f"fee-due:{inv['due_soon']}:",
        f"fee-due:{inv['due_today']}:",
        f"fee-overdue:{inv['overdue']}:{week}:",
    }
    assert {k.rsplit(":", 1)[0] + ":" for k in keys} == expected
    assert report["queued"] == len(keys) == 6  # 3 invoices x the 2 guardians with an email
    assert {r.to_address for r in rows()} == {"mary@example.test", "paul@example.test"}

    # same day again, and later the same week: nothing new
    assert services.send_fee_reminders(on_date=today, institution_ids=[school["id"]])["queued"] == 0

    # a week later: the overdue invoice is reminded again (new week), the one that was due "today" is
    # now overdue, and the one due in 10 days has come within 7 days; the due-soon reminders are
    # never repeated
    later = today + timedelta(days=7)
    week2 = "{}-W{:02d}".format(*later.isocalendar()[:2])
    new = services.send_fee_reminders(on_date=later, institution_ids=[school["id"]])
    guardian_ids = {int(k.rsplit(":", 1)[1]) for k in keys}
    assert new["queued"] == 6
    assert {r.dedupe_key for r in rows()} - keys == (
        {f"fee-overdue:{inv[name]}:{week2}:{g}" for name in ("overdue", "due_today") for g in guardian_ids}
        | {f"fee-due:{inv['later']}:{g}" for g in guardian_ids}
    )

    services.dispatch_outbox()
    mary = smtp.to("mary@example.test")
    assert len(mary) == 6 and len(smtp.to("paul@example.test")) == 6
    soon = next(m for m in mary if m["Subject"].startswith("Fees for DueSoon Moss are due on"))
    text = body(soon, "plain")
    assert "USD 1,500.00" in text and "INV-R-0" in text and "in 7 days" in text
    assert "USD 1,500.00" in body(soon, "html")
    overdue = [m for m in mary if m["Subject"] == "Overdue fees for Overdue Moss: invoice INV-R-3"]
    assert len(overdue) == 2  # once a week
    assert "USD 500.00" in body(overdue[0], "plain") and "10 days ago" in body(overdue[0], "plain")
    assert not [m for m in mary if "Paid Moss" in m["Subject"] or "Void Moss" in m["Subject"]]


# --------------------------------------------------------------------------------------------------
# Export ready
# --------------------------------------------------------------------------------------------------


def test_notify_export_ready_mails_the_requesting_user_once(demo, smtp):
    admin_id = demo["demo_user_ids"]["admin"]
    job = Job(
        institution_id=demo["demo_institution_id"],
        job_type="export",
        kind="attendance_register",
        format="csv",
        status="done",
        requested_by_id=admin_id,
        row_count=1200,
        expires_at=utcnow() + timedelta(days=1),
    )
    db.session.add(job)
    db.session.flush()
    first = services.notify_export_ready(job.id, download_url="https://school.example/dl/abc")
    assert first and services.notify_export_ready(job.id) is None
    assert services.notify_export_ready(10**9) is None
    db.session.commit()

    services.dispatch_outbox()
    email = db.session.get(User, admin_id).email
    (msg,) = smtp.to(email)
    assert msg["Subject"] == "Your attendance register export is ready"
    text = body(msg, "plain")
    assert "1200 rows" in text and "https://school.example/dl/abc" in text and "CSV" in text
    assert 'href="https://school.example/dl/abc"' in body(msg, "html")


def test_export_ready_is_sent_right_after_the_commit_when_tasks_run_in_process(app, demo, smtp):
    celery = app.extensions["celery"]
    saved = celery.conf.task_always_eager
    celery.conf.task_always_eager = True  # the embedded default: no broker, tasks run in-process
    try:
        job = Job(
            institution_id=demo["demo_institution_id"],
            job_type="export",
            kind="students",
            format="xlsx",
            status="done",
            requested_by_id=demo["demo_user_ids"]["admin"],
            row_count=1,
        )
        db.session.add(job)
        db.session.flush()
        services.notify_export_ready(job.id)
        assert smtp.inbox.messages == []  # not before the commit
        db.session.commit()
    finally:
        celery.conf.task_always_eager = saved
    (msg,) = smtp.to(db.session.get(User, demo["demo_user_ids"]["admin"]).email)
    assert "1 row." in body(msg, "plain") and f"export #{job.id}" in body(msg, "plain")
    assert rows()[0].status == "sent"


def test_no_mail_when_the_event_rolls_back(app, demo, smtp):
    celery = app.extensions["celery"]
    saved = celery.conf.task_always_eager
    celery.conf.task_always_eager = True
    try:
        nested = db.session.begin_nested()
        job = Job(
            institution_id=demo["demo_institution_id"],
            job_type="export",
            kind="students",
            format="csv",
            status="done",
            requested_by_id=demo["demo_user_ids"]["admin"],
        )
        db.session.add(job)
        db.session.flush()
        services.notify_export_ready(job.id)
        nested.rollback()
        db.session.commit()
    finally:
        celery.conf.task_always_eager = saved
    assert rows() == [] and smtp.inbox.messages == []


# --------------------------------------------------------------------------------------------------
# Templates, file backend, settings
# --------------------------------------------------------------------------------------------------

SAMPLES = {
    "absence_alert": {
        "guardian_name": "Róisín O'Brien",
        "student_name": "Liam <O'Brien> & co",
        "student_first_name": "Liam",
        "date": "2025-03-14",
        "date_display": "Friday 14 March 2025",
        "whole_day": False,
        "periods": [{"period": 3, "subject": "Mathematics"}],
        "notes": [],
    },
    "fee_reminder": {
        "guardian_name": "G",
        "student_name": "Liam <O'Brien> & co",
        "invoice_number": "INV-1",
        "currency": "KES",
        "amount_due": "1500.00",
        "amount_due_display": "KES 1,500.00",
        "total_display": "KES 3,000.00",
        "paid_display": "KES 1,500.00",
        "due_date": "2025-03-14",
        "due_date_display": "Friday 14 March 2025",
        "days_left": 3,
    },
    "fee_overdue": {
        "guardian_name": "G",
        "student_name": "Liam <O'Brien> & co",
        "invoice_number": "INV-1",
        "currency": "KES",
        "amount_due": "1500.00",
        "amount_due_display": "KES 1,500.00",
        "total_display": "KES 3,000.00",
        "paid_display": "KES 1,500.00",
        "due_date": "2025-03-14",
        "due_date_display": "Friday 14 March 2025",
        "days_overdue": 1,
    },
    "export_ready": export_context(user_name="Liam <O'Brien> & co"),
    "payment_receipt": {
        "guardian_name": "G",
        "student_name": "Liam <O'Brien> & co",
        "amount_display": "KES 1,500.00",
        "reference": "QKL1ABC2DE",
        "method_label": "mobile money",
        "received_display": "Friday 14 March 2025 09:00",
        "invoice_number": "INV-1",
        "outstanding_display": "KES 0.00",
    },
    "announcement": {
        "recipient_name": "Liam <O'Brien> & co",
        "title": "Sports day",
        "body": "Friday, 9am.\n\nBring water.",
        "author_name": "Tina Teacher",
    },
    "account_invitation": {
        "user_name": "Liam <O'Brien> & co",
        "email": "liam@demo.test",
        "role_label": "teacher",
        "link": "http://127.0.0.1:5000/account/password?token=abc",
        "expires_display": "Friday 14 March 2025, 09:00 (Africa/Nairobi)",
        "minutes": 30,
    },
    "password_reset": {
        "user_name": "Liam <O'Brien> & co",
        "email": "liam@demo.test",
        "role_label": "teacher",
        "link": "http://127.0.0.1:5000/account/password?token=abc",
        "expires_display": "Friday 14 March 2025, 09:00 (Africa/Nairobi)",
        "minutes": 30,
    },
}


@pytest.mark.parametrize("template", mailer.TEMPLATES)
def test_every_template_renders_a_text_and_an_html_part(template):
    context = {
        "school": "Demo Academy",
        "school_email": "office@demo.test",
        "school_phone": "+254 1",
        **SAMPLES[template],
    }
    text, html = mailer.render(template, context)
    assert "Liam <O'Brien> & co" in text and "<p>" not in text and "Demo Academy" in text
    assert "Liam &lt;O&#39;Brien&gt; &amp; co" in html and "<O'Brien>" not in html
    assert html.lstrip().startswith("<!DOCTYPE html>")
    msg = mailer.build_message(
        outbox_id=7,
        created_at=utcnow(),
        to="a@example.test",
        subject="S\r\nBcc: x@y.test",
        text=text,
        html=html,
        mail_from="Schoolhouse <no-reply@school.test>",
    )
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Subject"] == "S Bcc: x@y.test" and msg["Bcc"] is None  # no header injection
    assert msg["Message-ID"].startswith("<outbox.7.") and msg["Message-ID"].endswith("@school.test>")


def test_a_missing_template_variable_fails_the_message_for_good(demo, smtp):
    services.enqueue_email(
        demo["demo_institution_id"], "k", "a@example.test", "export_ready", {"school": "x"}, "s"
    )
    db.session.commit()
    assert services.dispatch_outbox()["failed"] == 1
    (row,) = rows()
    assert row.status == "failed" and "user_name" in row.last_error and smtp.inbox.messages == []


def test_file_backend_writes_one_eml_per_message(demo, config, tmp_path):
    config(MAIL_BACKEND="file", MAIL_DIR=str(tmp_path / "mail"))
    (oid,) = queue(demo, 1)
    assert services.dispatch_outbox()["sent"] == 1
    files = list((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 1
    msg = BytesParser(policy=policy.default).parsebytes(files[0].read_bytes())
    (row,) = rows()
    assert msg["Message-ID"] == row.message_id and msg["To"] == row.to_address
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]

    # sent again after a lost lease: the same file is rewritten, not a second one added
    db.session.execute(
        update(OutboxEmail)
        .where(OutboxEmail.id == oid)
        .values(status="sending", next_attempt_at=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()
    assert services.dispatch_outbox()["sent"] == 1
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 1


def test_mail_settings_default_to_files_without_smtp_host(monkeypatch, tmp_path):
    from config import Config

    monkeypatch.delenv("SMTP_HOST", raising=False)
    monkeypatch.delenv("MAIL_BACKEND", raising=False)
    monkeypatch.delenv("MAIL_DIR", raising=False)
    monkeypatch.setenv("INSTANCE_DIR", str(tmp_path))
    c = Config()
    assert c.MAIL_BACKEND == "file" and Path(c.MAIL_DIR) == tmp_path / "mail"
    assert c.FEE_REMINDER_DAYS == 7 and c.ABSENCE_ALERT_HOUR == 16
    monkeypatch.setenv("SMTP_HOST", "smtp.example.test")
    monkeypatch.setenv("SMTP_PORT", "587")
    monkeypatch.setenv("SMTP_STARTTLS", "true")
    c = Config()
    assert c.MAIL_BACKEND == "smtp" and c.SMTP_PORT == 587 and c.SMTP_STARTTLS is True


def test_backoff_doubles_with_jitter_and_is_capped(app):
    class Fixed:
        def __init__(self, v):
            self.v = v

        def uniform(self, a, b):
            return a if self.v == "low" else b

    with app.app_context():
        hi = [services.backoff(n, base=60, cap=3600, rng=Fixed("high")).total_seconds() for n in range(1, 9)]
        lo = [services.backoff(n, base=60, cap=3600, rng=Fixed("low")).total_seconds() for n in range(1, 4)]
    assert hi == [60, 120, 240, 480, 960, 1920, 3600, 3600] and lo == [30, 60, 120]


# --------------------------------------------------------------------------------------------------
# Embedded default (SQLite, no Redis, no SMTP): the same code writes .eml files
# --------------------------------------------------------------------------------------------------

EMBEDDED = textwrap.dedent("""
    import json
    from datetime import datetime
    from pathlib import Path
    from zoneinfo import ZoneInfo
    from flask_migrate import upgrade
    from app import create_app
    from app.extensions import db
    from app.attendance.models import AttendanceRecord
    from app.institutions.models import Institution
    from app.seed import seed_demo
    from app.notifications import services
    from tasks import notifications as tasks

    app = create_app()
    with app.app_context():
        upgrade()
        ids = seed_demo("embedded-pass-1")
        inst = db.session.get(Institution, ids["demo_institution_id"])
        day = datetime.now(ZoneInfo(inst.timezone)).date()
        db.session.add(AttendanceRecord(institution_id=inst.id, student_id=ids["demo_student_id"],
                                        class_id=ids["demo_class_id"], period=0, date=day, status="absent"))
        db.session.commit()
        first = tasks.absence_alerts.apply(kwargs={"on_date": day.isoformat()}).get()
        sent = tasks.dispatch_outbox.apply().get()
        second = services.send_absence_alerts(on_date=day)
        again = services.dispatch_outbox()
        out = {"backend": app.config["MAIL_BACKEND"], "queued": first["queued"], "sent": sent["sent"],
               "second": second["queued"], "again": again["sent"],
               "files": sorted(p.name for p in Path(app.config["MAIL_DIR"]).glob("*.eml")),
               "guardian": any("guardian@demo-academy.test" in p.read_text()
                               for p in Path(app.config["MAIL_DIR"]).glob("*.eml"))}
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow  # starts a subprocess
def test_embedded_default_writes_absence_alerts_as_eml_files(tmp_path):
    out = run_embedded(EMBEDDED, tmp_path)
    assert out["backend"] == "file" and out["queued"] >= 1 and out["sent"] == out["queued"]
    assert out["second"] == 0 and out["again"] == 0
    assert len(out["files"]) == out["queued"] and out["guardian"]
    assert (tmp_path / "instance" / "mail").is_dir()
