"""Email outbox and the notifications built on it (absence alerts, fee reminders, export ready).

How a message is sent exactly once
----------------------------------
1. Creation. `enqueue_email` inserts the outbox row in the CALLER's transaction with
   INSERT ... ON CONFLICT (institution_id, dedupe_key) DO NOTHING: the mail exists if and only if the
   event that causes it commits, and an event (an absence, a reminder for an invoice and week, an
   export) can never create two messages, however often the job that notices it runs.
2. Claim. A sender moves the row pending -> sending in ONE conditional UPDATE (... WHERE status =
   'pending'; the batch form picks rows with FOR UPDATE SKIP LOCKED on PostgreSQL) and commits. Only
   one sender can win a row. The claim counts the attempt and stores a lease deadline in
   `next_attempt_at` (while a row is "sending" that column means "lease ends", and the exact value is
   the claim's token: a sender only finishes a row whose lease value is still the one it wrote).
3. Send, then record. The message goes out with a Message-ID derived from the outbox id
   (mailer.message_id), then the row is marked sent in its own commit.
4. Failure. An SMTP error puts the row back to pending with attempts, last_error and next_attempt_at =
   now + exponential backoff with jitter; a 5xx answer (or a template error) marks it failed at once,
   and so does reaching OUTBOX_MAX_ATTEMPTS. If the mail server is unreachable the rest of the batch
   is put back the same way without trying each message.
5. A worker that dies mid-send leaves the row in "sending"; `dispatch_outbox` returns rows whose lease
   has passed to pending (or failed, when attempts are used up) and they are sent again.

The residual window: if the worker dies (or loses the database) AFTER the SMTP server accepted the
message (250 after DATA) but BEFORE the "sent" commit, the row is recovered after its lease and sent a
second time. That is unavoidable without a transaction spanning SMTP and PostgreSQL; we chose
at-least-once over at-most-once for it (marking "sent" before sending would lose the message
instead), so the window is milliseconds wide and a duplicate is two copies of the SAME message: both
carry the same deterministic Message-ID, which mail servers and clients use to collapse duplicates
and which lets an operator (or a test) detect one. The lease (OUTBOX_LEASE_SECONDS, default 10 min)
is far longer than a batch may take (a dispatcher stops using a batch after half the lease and hands
the unsent rest back), so a slow but living sender is never raced by a second one.
"""

import json
import logging
import random
import time
from contextlib import contextmanager
from datetime import UTC, timedelta
from decimal import Decimal

from flask import current_app, g
from sqlalchemy import String, and_, cast, func, literal, or_, select, update

from app.academics.models import Subject
from app.attendance.models import AttendanceRecord
from app.core.background import enqueue_after_commit
from app.core.models import utcnow
from app.core.tenancy import current_institution_id
from app.core.upsert import insert_for
from app.extensions import db
from app.finance.models import Invoice, Payment
from app.institutions.calendar import zone
from app.institutions.models import Institution
from app.jobs.models import Job
from app.notifications import mailer, sms, sms_services
from app.notifications.models import OutboxEmail, OutboxSms
from app.people.models import Guardian, Student, StudentGuardian, User

log = logging.getLogger("schoolhouse.mail")

T = OutboxEmail.__table__
INSERT_CHUNK = 500
OPEN_INVOICE_STATUSES = ("open", "partially_paid")
SEND_TASK = "tasks.notifications.send_outbox_email"  # sent by name: tasks import services, not back


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _cfg():
    return current_app.config


def _now(now=None):
    return now or utcnow()


def _unscoped(stmt):
    # The outbox sender works across institutions on purpose (one queue for the deployment).
    return stmt.execution_options(skip_tenant=True)


@contextmanager
def institution_scope(institution_id):
    """Run a block as one institution: ORM reads are tenant-scoped (app/core/tenancy.py) exactly as
    in a request. Restores whatever scope was there before."""
    had = "institution_id" in g
    previous = g.get("institution_id")
    g.institution_id = institution_id
    try:
        yield
    finally:
        if had:
            g.institution_id = previous
        else:
            g.pop("institution_id", None)


def _institutions(institution_ids=None):
    q = select(
        Institution.id,
        Institution.name,
        Institution.timezone,
        Institution.email,
        Institution.phone,
        Institution.currency,
    ).order_by(Institution.id)
    if institution_ids is not None:
        q = q.where(Institution.id.in_(list(institution_ids)))
    return db.session.execute(q).all()


def _date_display(day):
    return f"{day:%A} {day.day} {day:%B %Y}"


def money(minor, currency):
    """Integer minor units -> "KES 12,500.00" for people (the API uses plain decimal strings)."""
    return f"{currency} {Decimal(int(minor)).scaleb(-2):,.2f}"


def _full_name(first, last):
    return f"{first} {last}".strip()


def backoff(attempts, *, base=None, cap=None, rng=random):
    """Delay before attempt `attempts + 1`: base * 2^(attempts-1), capped, with "equal jitter" (a random
    point in the upper half) so messages that failed together do not all retry in the same second."""
    cfg = _cfg()
    base = cfg.get("OUTBOX_RETRY_BASE_SECONDS", 60) if base is None else base
    cap = cfg.get("OUTBOX_RETRY_MAX_SECONDS", 6 * 3600) if cap is None else cap
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return timedelta(seconds=ceiling * rng.uniform(0.5, 1.0))


# --------------------------------------------------------------------------------------------------
# 1. Creation: in the caller's transaction
# --------------------------------------------------------------------------------------------------


def enqueue_emails(messages):
    """Add outbox rows in the caller's transaction (never commits). `messages`: dicts with
    institution_id, dedupe_key, to, template, context (JSON-able), subject. A dedupe key already
    present for the institution is skipped. Returns the ids of the rows created."""
    scope = current_institution_id()
    now = utcnow()
    rows, seen = [], set()
    for m in messages:
        iid = m["institution_id"]
        if scope is not None and iid != scope:
            raise PermissionError("refusing to queue mail for another institution")
        if m["template"] not in mailer.TEMPLATES:
            raise ValueError(f"unknown email template {m['template']!r}")
        to = (m["to"] or "").strip()
        if not mailer.valid_address(to):
            raise ValueError(f"not a single email address: {to!r}")
        key = str(m["dedupe_key"])
        if not key or len(key) > 200:
            raise ValueError("dedupe_key must be 1-200 characters")
        if (iid, key) in seen:
            continue
        seen.add((iid, key))
        rows.append(
            {
                "institution_id": iid,
                "dedupe_key": key,
                "to_address": to,
                "template": m["template"],
                # stored as JSON and rendered later by another process: check it is plain JSON now
                "context": json.loads(json.dumps(m.get("context") or {})),
                "subject": " ".join(str(m["subject"]).split())[:255],
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
            }
        )
    ids = []
    for start in range(0, len(rows), INSERT_CHUNK):
        stmt = (
            insert_for(T)
            .values(rows[start : start + INSERT_CHUNK])
            .on_conflict_do_nothing(index_elements=["institution_id", "dedupe_key"])
            .returning(T.c.id)
        )
        ids.extend(db.session.execute(stmt).scalars().all())
    return ids


def enqueue_email(institution_id, dedupe_key, to, template, context, subject):
    """One message, in the caller's transaction. Returns the new row's id, or None when this
    dedupe key was already queued for the institution (the event already produced its message)."""
    ids = enqueue_emails(
        [
            {
                "institution_id": institution_id,
                "dedupe_key": dedupe_key,
                "to": to,
                "template": template,
                "context": context,
                "subject": subject,
            }
        ]
    )
    return ids[0] if ids else None


# --------------------------------------------------------------------------------------------------
# 2-5. Delivery
# --------------------------------------------------------------------------------------------------


def _due(now):
    return or_(T.c.next_attempt_at.is_(None), T.c.next_attempt_at <= now)


def _stuck(now):
    # ix_email_outbox_sending_lease: the few rows in "sending", by lease end
    return (T.c.status == "sending") & (T.c.next_attempt_at < now)


def recover_expired_leases(now=None):
    """Rows left in "sending" past their lease belong to a sender that died: make them pending again
    (they keep their attempt count, so a message that kills its worker each time ends as failed)."""
    now = _now(now)
    stuck = _stuck(now)
    gave_up = db.session.execute(
        _unscoped(
            update(T)
            .where(stuck, T.c.attempts >= _cfg()["OUTBOX_MAX_ATTEMPTS"])
            .values(
                status="failed",
                next_attempt_at=None,
                last_error="gave up: the sender was lost during the last attempt (lease expired)",
            )
        )
    )
    back = db.session.execute(
        _unscoped(
            update(T)
            .where(stuck)
            .values(
                status="pending",
                next_attempt_at=now,
                last_error="lease expired: the sender was lost mid-send; retrying with the same Message-ID",
            )
        )
    )
    db.session.commit()
    if gave_up.rowcount or back.rowcount:
        log.warning(
            "outbox: %d message(s) stuck in sending returned to pending, %d failed",
            back.rowcount,
            gave_up.rowcount,
        )
    return back.rowcount + gave_up.rowcount


def _claim_one(outbox_id, now, lease_until):
    result = db.session.execute(
        _unscoped(
            update(T)
            .where(T.c.id == outbox_id, T.c.status == "pending", _due(now))
            .values(status="sending", attempts=T.c.attempts + 1, next_attempt_at=lease_until)
        )
    )
    db.session.commit()
    return [outbox_id] if result.rowcount == 1 else []


def claim_batch_statement(now, lease_until, limit):
    # ix_email_outbox_pending_due: due pending rows, oldest first. SKIP LOCKED: concurrent
    # dispatchers take disjoint rows instead of queueing behind each other.
    pick = (
        select(T.c.id)
        .where(T.c.status == "pending", _due(now))
        .order_by(T.c.next_attempt_at, T.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return _unscoped(
        update(T)
        .where(T.c.id.in_(pick.scalar_subquery()), T.c.status == "pending")
        .values(status="sending", attempts=T.c.attempts + 1, next_attempt_at=lease_until)
        .returning(T.c.id)
    )


def _claim_batch(now, lease_until, limit):
    ids = db.session.execute(claim_batch_statement(now, lease_until, limit)).scalars().all()
    db.session.commit()
    return sorted(ids)


def _load(ids):
    INST = Institution.__table__
    q = (
        select(
            T.c.id,
            T.c.institution_id,
            T.c.to_address,
            T.c.template,
            T.c.context,
            T.c.subject,
            T.c.created_at,
            T.c.attempts,
            T.c.next_attempt_at.label("lease"),
            INST.c.email.label("reply_to"),
        )
        .join(INST, INST.c.id == T.c.institution_id)
        .where(T.c.id.in_(ids))
        .order_by(T.c.id)
    )
    return db.session.execute(_unscoped(q)).all()


def _finish(row, **values):
    """Update a claimed row only if our claim still holds (same status and lease token)."""
    result = db.session.execute(
        _unscoped(
            update(T)
            .where(T.c.id == row.id, T.c.status == "sending", T.c.next_attempt_at == row.lease)
            .values(**values)
        )
    )
    db.session.commit()
    if result.rowcount != 1:
        log.warning(
            "outbox %s: claim lost before it was recorded (lease expired?); a second copy "
            "with the same Message-ID may go out",
            row.id,
        )
    return result.rowcount == 1


def _mark_sent(row, message_id, now):
    _finish(
        row, status="sent", sent_at=utcnow(), message_id=message_id, last_error=None, next_attempt_at=None
    )
    log.info(
        "outbox %s sent: template=%s message_id=%s attempt=%s", row.id, row.template, message_id, row.attempts
    )
    return "sent"


def _mark_failed(row, error, now):
    _finish(row, status="failed", last_error=str(error)[:2000], next_attempt_at=None)
    log.error("outbox %s failed for good: %s", row.id, error)
    return "failed"


def _mark_retry(row, error, now):
    if row.attempts >= _cfg()["OUTBOX_MAX_ATTEMPTS"]:
        return _mark_failed(row, f"gave up after {row.attempts} attempts: {error}", now)
    _finish(row, status="pending", last_error=str(error)[:2000], next_attempt_at=now + backoff(row.attempts))
    log.warning("outbox %s: attempt %s failed, will retry: %s", row.id, row.attempts, error)
    return "retry"


def _release(rows, now):
    """Hand back claimed rows we did not try (the batch ran out of time): not an attempt."""
    for row in rows:
        _finish(row, status="pending", attempts=row.attempts - 1, next_attempt_at=now)
    return len(rows)


def mail_context(template, context, institution_id):
    """What a message is rendered with: its stored context, plus the links its template's owner makes
    when it is sent (`app.extensions["mail_links"]`: template -> (context, institution_id) -> dict).
    A link that is a credential (set a password, download an export) is so never stored in the outbox:
    the row keeps only what cannot be turned into one without SECRET_KEY (app/auth/accounts.py,
    app/jobs/services.py)."""
    make = current_app.extensions.get("mail_links", {}).get(template)
    return {**context, **make(context, institution_id)} if make else context


def _deliver(ids, now, deadline=None):
    """Send claimed rows; every outcome is committed row by row. Rows not yet tried when the
    `deadline` (time.monotonic) passes are handed back. Returns {status: count}."""
    report = {"sent": 0, "retry": 0, "failed": 0, "released": 0}
    rows = _load(ids)
    if not rows:
        return report
    cfg = _cfg()
    mail_from = cfg["MAIL_FROM"]
    # never keep using a claim for more than half its lease, so no second sender can take it over
    limit = time.monotonic() + cfg["OUTBOX_LEASE_SECONDS"] / 2
    deadline = min(limit, deadline) if deadline is not None else limit
    try:
        transport = mailer.transport_for(cfg)
    except mailer.ConnectionMailError as exc:
        for row in rows:
            report[_mark_retry(row, exc, now)] += 1
        return report
    with transport:
        for i, row in enumerate(rows):
            if time.monotonic() > deadline:
                report["released"] += _release(rows[i:], now)
                break
            try:
                text, html = mailer.render(
                    row.template, mail_context(row.template, row.context or {}, row.institution_id)
                )
                msg = mailer.build_message(
                    outbox_id=row.id,
                    created_at=row.created_at,
                    to=row.to_address,
                    subject=row.subject,
                    text=text,
                    html=html,
                    mail_from=mail_from,
                    reply_to=row.reply_to,
                )
                transport.send(msg)
            except mailer.PermanentMailError as exc:
                report[_mark_failed(row, exc, now)] += 1
            except mailer.ConnectionMailError as exc:
                # the server is unreachable: every row left in the batch would fail the same way
                for rest in rows[i:]:
                    report[_mark_retry(rest, exc, now)] += 1
                report["connection_error"] = str(exc)
                break
            except Exception as exc:  # a 4xx answer, or anything unexpected while building/sending
                report[_mark_retry(row, f"{type(exc).__name__}: {exc}", now)] += 1
            else:
                report[_mark_sent(row, msg["Message-ID"], now)] += 1
    return report


def send_outbox_email(outbox_id, now=None):
    """Send one message now if it is still pending and due (the claim makes a second call, or a
    dispatcher running at the same time, a no-op). Returns the row's status afterwards."""
    now = _now(now)
    claimed = _claim_one(outbox_id, now, now + timedelta(seconds=_cfg()["OUTBOX_LEASE_SECONDS"]))
    if claimed:
        _deliver(claimed, now)
    return db.session.execute(_unscoped(select(T.c.status).where(T.c.id == outbox_id))).scalar()


def dispatch_outbox(now=None, batch_size=None, max_batches=20, max_seconds=120):
    """Periodic sender: recover expired leases, then claim and send due pending rows in batches until
    none are left, the mail server is unreachable, max_batches, or max_seconds (well inside the task
    time limit and the job's lock; the next run, a minute later, goes on). Returns a report."""
    now = _now(now)
    cfg = _cfg()
    deadline = time.monotonic() + max_seconds
    batch_size = batch_size or cfg["OUTBOX_BATCH_SIZE"]
    report = {"recovered": recover_expired_leases(now), "sent": 0, "retry": 0, "failed": 0, "released": 0}
    for _ in range(max_batches):
        ids = _claim_batch(now, now + timedelta(seconds=cfg["OUTBOX_LEASE_SECONDS"]), batch_size)
        if not ids:
            break
        outcome = _deliver(ids, now, deadline)
        for key in ("sent", "retry", "failed", "released"):
            report[key] += outcome[key]
        if "connection_error" in outcome:
            report["connection_error"] = outcome["connection_error"]
            break
        if outcome["released"] or len(ids) < batch_size or time.monotonic() > deadline:
            break
    if report["sent"] or report["retry"] or report["failed"]:
        log.info("outbox dispatch: %s", report)
    return report


# --------------------------------------------------------------------------------------------------
# Notifications
# --------------------------------------------------------------------------------------------------


def _per_institution(kind, institution_ids, on_date, now, hour_setting, build):
    """Run `build(inst, day)` for each institution in its own transaction. Without an explicit date,
    a school is handled once its local clock has passed `hour_setting` (beat runs these jobs at least
    hourly, so every time zone gets its mail at its own local hour; re-runs are harmless thanks to the
    dedupe keys)."""
    now = _now(now)
    report = {"institutions": 0, "queued": 0, "waiting": [], "errors": {}}
    for inst in _institutions(institution_ids):
        day = on_date
        if day is None:
            local = now.astimezone(zone(inst.timezone))
            if local.hour < _cfg()[hour_setting]:
                report["waiting"].append(inst.id)
                continue
            day = local.date()
        try:
            with institution_scope(inst.id):
                messages = build(inst, day)
                ids = enqueue_emails([m for m in messages if m.get("channel", "email") == "email"])
                sms_ids = sms_services.enqueue_sms([m for m in messages if m.get("channel") == "sms"])
            db.session.commit()
        except Exception as exc:  # one school's bad data must not stop the others
            db.session.rollback()
            log.exception("%s for institution %s failed", kind, inst.id)
            report["errors"][inst.id] = f"{type(exc).__name__}: {exc}"
            continue
        report["institutions"] += 1
        report["queued"] += len(ids)
        report["queued_sms"] = report.get("queued_sms", 0) + len(sms_ids)
        if ids or sms_ids:
            log.info(
                "%s: institution %s, %s: %d e-mail(s), %d SMS queued",
                kind,
                inst.id,
                day,
                len(ids),
                len(sms_ids),
            )
    return report


def _reachable():
    """A guardian the school can reach by the channel they chose (SMS falls back to e-mail without a
    phone number, and e-mail to nothing without an address)."""
    has_email = and_(Guardian.email.is_not(None), Guardian.email != "")
    has_phone = and_(Guardian.phone.is_not(None), Guardian.phone != "")
    return or_(has_email, and_(has_phone, Guardian.notify_by.in_(("sms", "both"))))


def channels(r, what):
    """(send e-mail?, E.164 phone or None) for a guardian row with email, phone and notify_by."""
    phone = sms_services.phone_of(r.phone) if r.notify_by in ("sms", "both") else None
    wants_email = r.notify_by in ("email", "both") or phone is None
    if wants_email and not mailer.valid_address(r.email):
        if r.email:
            log.warning("%s: guardian %s has an unusable email address", what, r.guardian_id)
        wants_email = False
    return wants_email, phone


def _short_date(day):
    return f"{day:%a} {day.day} {day:%b}"


def absence_sms(inst, student, day, whole_day, periods):
    when = (
        "all day"
        if whole_day or not periods
        else ("in period " + ", ".join(str(p["period"]) for p in periods))
    )
    phone = f" Call {inst.phone}." if inst.phone else ""
    return sms.fit(
        f"{inst.name}: {student} was absent from school {when} on {_short_date(day)}.{phone}",
        f"{inst.name}: {student} was absent {when} on {_short_date(day)}.",
        f"{student} was absent on {_short_date(day)}. {inst.name}",
    )


def fee_sms(inst, student, number, outstanding, due_date, today):
    amount = money(outstanding, inst.currency)
    if due_date >= today:
        return sms.fit(
            f"{inst.name}: fees of {amount} for {student} (invoice {number}) are due on {_short_date(due_date)}.",
            f"{inst.name}: {amount} due for {student} on {_short_date(due_date)}.",
            f"Fees {amount} due {_short_date(due_date)}. {inst.name}",
        )
    days = (today - due_date).days
    return sms.fit(
        f"{inst.name}: fees of {amount} for {student} (invoice {number}) are {days} days overdue.",
        f"{inst.name}: {amount} overdue for {student}.",
        f"Fees {amount} overdue. {inst.name}",
    )


def receipt_sms(inst, student, amount, reference, invoice_number, outstanding):
    rest = (
        f" Invoice {invoice_number}: {money(outstanding, inst.currency)} still due." if invoice_number else ""
    )
    return sms.fit(
        f"{inst.name}: received {money(amount, inst.currency)} for {student}, ref {reference}.{rest} Thank you.",
        f"{inst.name}: received {money(amount, inst.currency)} for {student}, ref {reference}.",
        f"Received {money(amount, inst.currency)}, ref {reference}. {inst.name}",
    )


def queue_payment_receipt(payment_id):
    """A receipt to each guardian of the payment's student, by their channel (dedupe receipt:{payment}:
    {guardian}), in its own transaction; sent at once after the commit. Returns the rows queued."""
    payment = db.session.execute(
        select(Payment).where(Payment.id == payment_id).execution_options(skip_tenant=True)
    ).scalar_one_or_none()
    if payment is None or payment.kind != "payment":
        return {"email": 0, "sms": 0}
    with institution_scope(payment.institution_id):
        inst = _institutions([payment.institution_id])[0]
        invoice = db.session.get(Invoice, payment.invoice_id) if payment.invoice_id else None
        rows = db.session.execute(
            select(
                Student.first_name,
                Student.last_name,
                Guardian.id.label("guardian_id"),
                Guardian.first_name.label("g_first"),
                Guardian.last_name.label("g_last"),
                Guardian.email,
                Guardian.phone,
                Guardian.notify_by,
            )
            .join(StudentGuardian, StudentGuardian.student_id == Student.id)
            .join(Guardian, Guardian.id == StudentGuardian.guardian_id)
            .where(Student.id == payment.student_id, Guardian.deleted_at.is_(None), _reachable())
            .order_by(Guardian.id)
        ).all()
        outstanding = max(invoice.total_minor - invoice.paid_minor, 0) if invoice is not None else 0
        received = payment.received_at.astimezone(zone(inst.timezone))
        emails, texts = [], []
        for r in rows:
            wants_email, phone = channels(r, "payment receipt")
            student = _full_name(r.first_name, r.last_name)
            key = f"receipt:{payment.id}:{r.guardian_id}"
            if phone:
                texts.append(
                    {
                        "institution_id": inst.id,
                        "to": phone,
                        "kind": "payment_receipt",
                        "dedupe_key": key,
                        "encoded": receipt_sms(
                            inst,
                            student,
                            payment.amount_minor,
                            payment.reference,
                            invoice.number if invoice else None,
                            outstanding,
                        ),
                    }
                )
            if wants_email:
                emails.append(
                    {
                        "institution_id": inst.id,
                        "to": r.email,
                        "template": "payment_receipt",
                        "dedupe_key": key,
                        "subject": f"Payment received for {student}",
                        "context": {
                            **_school(inst),
                            "guardian_name": _full_name(r.g_first, r.g_last),
                            "student_name": student,
                            "amount_display": money(payment.amount_minor, inst.currency),
                            "reference": payment.reference,
                            "method_label": payment.method.replace("_", " "),
                            "received_display": f"{_date_display(received.date())} {received:%H:%M}",
                            "invoice_number": invoice.number if invoice else None,
                            "outstanding_display": money(outstanding, inst.currency),
                        },
                    }
                )
        email_ids = enqueue_emails(emails)
        sms_ids = sms_services.enqueue_sms(texts)
        for outbox_id in email_ids:
            send_after_commit(outbox_id)
        for outbox_id in sms_ids:
            sms_services.send_after_commit(outbox_id)
    db.session.commit()
    return {"email": len(email_ids), "sms": len(sms_ids)}


def _school(inst):
    return {"school": inst.name, "school_email": inst.email, "school_phone": inst.phone}


def _absence_key(student_id, day, guardian_id):
    return f"absence:{student_id}:{day.isoformat()}:{guardian_id}"


def _absence_messages(inst, day):
    # One statement for the school's day (ix_attendance_institution_date_status), tenant-scoped. The
    # job runs every few minutes (config.BEAT_SCHEDULE), so pairs whose alert is already in the outbox
    # are left out in SQL (a probe of uq_email_outbox_institution_dedupe per absence): a run with
    # nothing new builds, inserts and logs nothing. The key is _absence_key's, written in SQL.
    key = (
        literal("absence:", String)
        + cast(AttendanceRecord.student_id, String)
        + literal(f":{day.isoformat()}:", String)
        + cast(Guardian.id, String)
    )
    queued = select(T.c.id).where(T.c.institution_id == inst.id, T.c.dedupe_key == key).exists()
    S = OutboxSms.__table__
    queued_sms = select(S.c.id).where(S.c.institution_id == inst.id, S.c.dedupe_key == key).exists()
    rows = db.session.execute(
        select(
            AttendanceRecord.student_id,
            AttendanceRecord.period,
            AttendanceRecord.note,
            Subject.name.label("subject"),
            Student.first_name,
            Student.last_name,
            Guardian.id.label("guardian_id"),
            Guardian.first_name.label("g_first"),
            Guardian.last_name.label("g_last"),
            Guardian.email,
            Guardian.phone,
            Guardian.notify_by,
        )
        .join(Student, Student.id == AttendanceRecord.student_id)
        .join(StudentGuardian, StudentGuardian.student_id == Student.id)
        .join(Guardian, Guardian.id == StudentGuardian.guardian_id)
        .outerjoin(Subject, Subject.id == AttendanceRecord.subject_id)
        .where(
            AttendanceRecord.date == day,
            AttendanceRecord.status == "absent",
            Student.deleted_at.is_(None),
            Guardian.deleted_at.is_(None),
            _reachable(),
            ~queued,
            ~queued_sms,
        )
        .order_by(AttendanceRecord.student_id, Guardian.id, AttendanceRecord.period)
    ).all()
    grouped = {}
    for r in rows:
        key = (r.student_id, r.guardian_id)
        if key not in grouped:
            grouped[key] = {"row": r, "periods": [], "whole_day": False, "notes": []}
        entry = grouped[key]
        if r.period == 0:
            entry["whole_day"] = True
        else:
            entry["periods"].append({"period": r.period, "subject": r.subject})
        if r.note:
            entry["notes"].append(r.note)
    messages = []
    for (student_id, guardian_id), e in grouped.items():
        r = e["row"]
        student = _full_name(r.first_name, r.last_name)
        wants_email, phone = channels(r, "absence alert")
        if phone:
            messages.append(
                {
                    "channel": "sms",
                    "institution_id": inst.id,
                    "to": phone,
                    "kind": "absence_alert",
                    "dedupe_key": _absence_key(student_id, day, guardian_id),
                    "encoded": absence_sms(inst, student, day, e["whole_day"], e["periods"]),
                }
            )
        if not wants_email:
            continue
        messages.append(
            {
                "institution_id": inst.id,
                "to": r.email,
                "template": "absence_alert",
                "dedupe_key": _absence_key(student_id, day, guardian_id),
                "subject": f"{student} was absent from school on {_date_display(day)}",
                "context": {
                    **_school(inst),
                    "guardian_name": _full_name(r.g_first, r.g_last),
                    "student_name": student,
                    "student_first_name": r.first_name,
                    "date": day.isoformat(),
                    "date_display": _date_display(day),
                    "whole_day": e["whole_day"],
                    "periods": e["periods"],
                    "notes": e["notes"],
                },
            }
        )
    return messages


def send_absence_alerts(on_date=None, institution_ids=None, now=None):
    """Queue one mail per guardian (with an email) per student marked absent on the school's day, in
    one transaction per institution. Dedupe key absence:{student}:{date}:{guardian}."""
    return _per_institution(
        "absence alerts", institution_ids, on_date, now, "ABSENCE_ALERT_HOUR", _absence_messages
    )


def _fee_messages(inst, today, days):
    # One statement for the school (ix_invoices_institution_status_due): unpaid invoices due within
    # `days` or already overdue, with each guardian who has an email.
    rows = db.session.execute(
        select(
            Invoice.id,
            Invoice.number,
            Invoice.due_date,
            Invoice.total_minor,
            Invoice.paid_minor,
            Student.id.label("student_id"),
            Student.first_name,
            Student.last_name,
            Guardian.id.label("guardian_id"),
            Guardian.first_name.label("g_first"),
            Guardian.last_name.label("g_last"),
            Guardian.email,
            Guardian.phone,
            Guardian.notify_by,
        )
        .join(Student, Student.id == Invoice.student_id)
        .join(StudentGuardian, StudentGuardian.student_id == Student.id)
        .join(Guardian, Guardian.id == StudentGuardian.guardian_id)
        .where(
            Invoice.status.in_(OPEN_INVOICE_STATUSES),
            Invoice.due_date.is_not(None),
            Invoice.due_date <= today + timedelta(days=days),
            Invoice.total_minor > Invoice.paid_minor,
            Student.deleted_at.is_(None),
            Guardian.deleted_at.is_(None),
            _reachable(),
        )
        .order_by(Invoice.id, Guardian.id)
    ).all()
    iso = today.isocalendar()
    week = f"{iso.year}-W{iso.week:02d}"
    messages = []
    for r in rows:
        wants_email, phone = channels(r, "fee reminder")
        student = _full_name(r.first_name, r.last_name)
        outstanding = r.total_minor - r.paid_minor
        if phone:
            due = r.due_date >= today
            messages.append(
                {
                    "channel": "sms",
                    "institution_id": inst.id,
                    "to": phone,
                    "kind": "fee_reminder" if due else "fee_overdue",
                    "dedupe_key": f"fee-due:{r.id}:{r.guardian_id}"
                    if due
                    else f"fee-overdue:{r.id}:{week}:{r.guardian_id}",
                    "encoded": fee_sms(inst, student, r.number, outstanding, r.due_date, today),
                }
            )
        if not wants_email:
            continue
        context = {
            **_school(inst),
            "guardian_name": _full_name(r.g_first, r.g_last),
            "student_name": student,
            "invoice_number": r.number,
            "currency": inst.currency,
            "amount_due": str(Decimal(outstanding).scaleb(-2).quantize(Decimal("0.01"))),
            "amount_due_display": money(outstanding, inst.currency),
            "total_display": money(r.total_minor, inst.currency),
            "paid_display": money(r.paid_minor, inst.currency),
            "due_date": r.due_date.isoformat(),
            "due_date_display": _date_display(r.due_date),
        }
        if r.due_date >= today:
            context["days_left"] = (r.due_date - today).days
            messages.append(
                {
                    "institution_id": inst.id,
                    "to": r.email,
                    "template": "fee_reminder",
                    "dedupe_key": f"fee-due:{r.id}:{r.guardian_id}",
                    "context": context,
                    "subject": f"Fees for {student} are due on {_date_display(r.due_date)}",
                }
            )
        else:
            context["days_overdue"] = (today - r.due_date).days
            messages.append(
                {
                    "institution_id": inst.id,
                    "to": r.email,
                    "template": "fee_overdue",
                    "dedupe_key": f"fee-overdue:{r.id}:{week}:{r.guardian_id}",
                    "context": context,
                    "subject": f"Overdue fees for {student}: invoice {r.number}",
                }
            )
    return messages


def send_fee_reminders(on_date=None, institution_ids=None, now=None, days=None):
    """Queue fee reminders to each guardian of a student with an unpaid invoice: once when the due date
    is FEE_REMINDER_DAYS away or nearer (dedupe fee-due:{invoice}:{guardian}), then once a week while
    it is overdue (fee-overdue:{invoice}:{ISO week}:{guardian}). The key carries the guardian because
    each guardian gets their own message."""
    days = _cfg()["FEE_REMINDER_DAYS"] if days is None else days
    return _per_institution(
        "fee reminders",
        institution_ids,
        on_date,
        now,
        "FEE_REMINDER_HOUR",
        lambda inst, day: _fee_messages(inst, day, days),
    )


def notify_export_ready(job_id, download_url=None):
    """Queue "your export is ready" to the user who asked for it, in the caller's transaction (call it
    where the job is marked done). Dedupe key export-ready:{job}. Returns the outbox id, or None when
    the job/user is unknown, the user has no usable address, or it was already queued."""
    job = db.session.execute(select(Job).where(Job.id == job_id)).scalar_one_or_none()
    if job is None or job.requested_by_id is None:
        return None
    with institution_scope(job.institution_id):
        user = db.session.execute(
            select(User).where(User.id == job.requested_by_id, User.deleted_at.is_(None))
        ).scalar_one_or_none()
        inst = db.session.get(Institution, job.institution_id)
        if user is None or not user.is_active or not mailer.valid_address(user.email):
            return None
        expires = job.expires_at
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        context = {
            "school": inst.name,
            "school_email": inst.email,
            "school_phone": inst.phone,
            "user_name": _full_name(user.first_name, user.last_name),
            "kind": job.kind,
            "kind_label": job.kind.replace("_", " "),
            "format": (job.format or "").upper(),
            "row_count": job.row_count,
            "job_id": job.id,
            "expires_at": expires.isoformat() if expires else None,
            "expires_display": expires.astimezone(UTC).strftime("%d %B %Y %H:%M UTC") if expires else None,
            "download_url": download_url,
        }
        outbox_id = enqueue_email(
            job.institution_id,
            f"export-ready:{job.id}",
            user.email,
            "export_ready",
            context,
            f"Your {context['kind_label']} export is ready",
        )
    if outbox_id is not None:
        send_after_commit(outbox_id)
    return outbox_id


def send_after_commit(outbox_id):
    """Ask a worker to send this message as soon as the caller's transaction commits (nothing is sent
    if it rolls back). Only a shortcut: the every-minute dispatcher sends it anyway if this message is
    lost. In the embedded default (tasks in-process) this is what delivers it, since no beat runs."""
    enqueue_after_commit(SEND_TASK, outbox_id)


def outbox_counts():
    """{status: count} across the deployment, for operators and health checks."""
    rows = db.session.execute(_unscoped(select(T.c.status, func.count()).group_by(T.c.status))).all()
    return {status: n for status, n in rows}


__all__ = [
    "enqueue_email",
    "enqueue_emails",
    "send_outbox_email",
    "dispatch_outbox",
    "recover_expired_leases",
    "send_absence_alerts",
    "send_fee_reminders",
    "notify_export_ready",
    "mail_context",
    "send_after_commit",
    "backoff",
    "institution_scope",
    "outbox_counts",
    "money",
]
