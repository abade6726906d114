"""The SMS outbox: the e-mail outbox's exactly-once rules (app/notifications/services.py explains them)
for text messages.

1. Creation in the caller's transaction, INSERT ... ON CONFLICT (institution_id, dedupe_key) DO NOTHING;
   the text is rendered then, so the row records its encoding and segment count.
2. Claim pending -> sending in one conditional UPDATE (SKIP LOCKED for a batch), with a lease.
3. Send, then mark sent in its own commit, keeping the provider's message id (delivery reports name it).
4. A failure goes back to pending with backoff, or to failed (permanent refusal, attempts used up).
5. A sender that died leaves "sending" rows; the dispatcher returns them to pending after the lease.

The residual window is the e-mail one: a worker dying after the provider accepted the message but before
the "sent" commit sends it again after the lease. The file backend overwrites one file per row.
"""

import hmac
import logging
import random
import time
from datetime import timedelta
from hashlib import sha256

from flask import current_app
from sqlalchemy import or_, select, update

from app.core.background import enqueue_after_commit
from app.core.models import utcnow
from app.core.tenancy import current_institution_id
from app.core.upsert import insert_for
from app.extensions import db
from app.notifications import sms
from app.notifications.models import OutboxSms

log = logging.getLogger("schoolhouse.sms")

T = OutboxSms.__table__
SEND_TASK = "tasks.notifications.send_outbox_sms"


def _cfg():
    return current_app.config


def _unscoped(stmt):
    return stmt.execution_options(skip_tenant=True)


def _backoff(attempts):
    cfg = _cfg()
    ceiling = min(
        cfg["OUTBOX_RETRY_MAX_SECONDS"], cfg["OUTBOX_RETRY_BASE_SECONDS"] * 2 ** max(0, attempts - 1)
    )
    return timedelta(seconds=ceiling * random.uniform(0.5, 1.0))


def phone_of(raw):
    return sms.e164(raw, _cfg()["SMS_DEFAULT_COUNTRY_CODE"])


def enqueue_sms(messages) -> list[int]:
    """Add SMS outbox rows in the caller's transaction (never commits). `messages`: dicts with
    institution_id, dedupe_key, to (any phone spelling), kind, and `encoded` (sms.Encoded) or `text`.
    A key already queued for the institution is skipped; a number that is no phone number is skipped
    with a warning. Returns the ids of the rows created."""
    scope = current_institution_id()
    now = utcnow()
    rows, seen = [], set()
    for m in messages:
        iid = m["institution_id"]
        if scope is not None and iid != scope:
            raise PermissionError("refusing to queue an SMS for another institution")
        to = phone_of(m["to"])
        if to is None:
            log.warning("SMS %s skipped: %r is not a phone number", m["dedupe_key"], m["to"])
            continue
        key = str(m["dedupe_key"])
        if not key or len(key) > 200:
            raise ValueError("dedupe_key must be 1-200 characters")
        if (iid, key) in seen:
            continue
        seen.add((iid, key))
        encoded = m.get("encoded") or sms.encode(m["text"])
        rows.append(
            {
                "institution_id": iid,
                "dedupe_key": key,
                "to_number": to,
                "kind": m["kind"],
                "body": encoded.text,
                "encoding": encoded.encoding,
                "segments": encoded.segments,
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
            }
        )
    if not rows:
        return []
    stmt = (
        insert_for(T)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["institution_id", "dedupe_key"])
        .returning(T.c.id)
    )
    return list(db.session.execute(stmt).scalars().all())


def send_after_commit(outbox_id):
    enqueue_after_commit(SEND_TASK, outbox_id)


# -- delivery --------------------------------------------------------------------------------------------


def _due(now):
    return or_(T.c.next_attempt_at.is_(None), T.c.next_attempt_at <= now)


def recover_expired_leases(now):
    stuck = (T.c.status == "sending") & (T.c.next_attempt_at < now)
    gave_up = db.session.execute(
        _unscoped(
            update(T)
            .where(stuck, T.c.attempts >= _cfg()["OUTBOX_MAX_ATTEMPTS"])
            .values(status="failed", next_attempt_at=None, last_error="gave up: sender lost (lease expired)")
        )
    ).rowcount
    back = db.session.execute(
        _unscoped(
            update(T)
            .where(stuck)
            .values(status="pending", next_attempt_at=now, last_error="lease expired: retrying")
        )
    ).rowcount
    db.session.commit()
    return back + gave_up


def _claim(now, lease_until, limit, outbox_id=None):
    if outbox_id is not None:
        result = db.session.execute(
            _unscoped(
                update(T)
                .where(T.c.id == outbox_id, T.c.status == "pending", _due(now))
                .values(status="sending", attempts=T.c.attempts + 1, next_attempt_at=lease_until)
            )
        )
        db.session.commit()
        return [outbox_id] if result.rowcount == 1 else []
    pick = (
        select(T.c.id)
        .where(T.c.status == "pending", _due(now))
        .order_by(T.c.next_attempt_at, T.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = (
        db.session.execute(
            _unscoped(
                update(T)
                .where(T.c.id.in_(pick.scalar_subquery()), T.c.status == "pending")
                .values(status="sending", attempts=T.c.attempts + 1, next_attempt_at=lease_until)
                .returning(T.c.id)
            )
        )
        .scalars()
        .all()
    )
    db.session.commit()
    return sorted(ids)


def _finish(row, **values):
    result = db.session.execute(
        _unscoped(
            update(T)
            .where(T.c.id == row.id, T.c.status == "sending", T.c.next_attempt_at == row.lease)
            .values(**values)
        )
    )
    db.session.commit()
    if result.rowcount != 1:
        log.warning("sms outbox %s: claim lost before it was recorded (lease expired?)", row.id)
    return result.rowcount == 1


def _retry(row, error, now):
    if row.attempts >= _cfg()["OUTBOX_MAX_ATTEMPTS"]:
        _finish(row, status="failed", last_error=str(error)[:2000], next_attempt_at=None)
        return "failed"
    _finish(row, status="pending", last_error=str(error)[:2000], next_attempt_at=now + _backoff(row.attempts))
    return "retry"


def _deliver(ids, now):
    report = {"sent": 0, "retry": 0, "failed": 0}
    rows = db.session.execute(
        _unscoped(
            select(T.c.id, T.c.to_number, T.c.body, T.c.attempts, T.c.next_attempt_at.label("lease"))
            .where(T.c.id.in_(ids))
            .order_by(T.c.id)
        )
    ).all()
    try:
        transport = sms.sms_transport_for(_cfg())
    except sms.ConnectionSmsError as exc:
        for row in rows:
            report[_retry(row, exc, now)] += 1
        return report
    with transport:
        for i, row in enumerate(rows):
            try:
                message_id, cost = transport.send(row.id, row.to_number, row.body)
            except sms.PermanentSmsError as exc:
                _finish(row, status="failed", last_error=str(exc)[:2000], next_attempt_at=None)
                report["failed"] += 1
            except sms.ConnectionSmsError as exc:
                for rest in rows[i:]:
                    report[_retry(rest, exc, now)] += 1
                break
            except Exception as exc:  # a transient refusal, or anything unexpected while sending
                report[_retry(row, f"{type(exc).__name__}: {exc}", now)] += 1
            else:
                _finish(
                    row,
                    status="sent",
                    sent_at=utcnow(),
                    provider_message_id=(message_id or None),
                    cost=(str(cost)[:30] if cost else None),
                    last_error=None,
                    next_attempt_at=None,
                )
                report["sent"] += 1
    return report


def send_outbox_sms(outbox_id, now=None):
    """Send one queued SMS now if it is still pending and due. Returns its status afterwards."""
    now = now or utcnow()
    claimed = _claim(now, now + timedelta(seconds=_cfg()["OUTBOX_LEASE_SECONDS"]), 1, outbox_id)
    if claimed:
        _deliver(claimed, now)
    return db.session.execute(_unscoped(select(T.c.status).where(T.c.id == outbox_id))).scalar()


def dispatch_sms_outbox(now=None, max_batches=20, max_seconds=120):
    now = now or utcnow()
    cfg = _cfg()
    deadline = time.monotonic() + max_seconds
    report = {"recovered": recover_expired_leases(now), "sent": 0, "retry": 0, "failed": 0}
    for _ in range(max_batches):
        ids = _claim(now, now + timedelta(seconds=cfg["OUTBOX_LEASE_SECONDS"]), cfg["OUTBOX_BATCH_SIZE"])
        if not ids:
            break
        for key, n in _deliver(ids, now).items():
            report[key] += n
        if len(ids) < cfg["OUTBOX_BATCH_SIZE"] or time.monotonic() > deadline:
            break
    if report["sent"] or report["retry"] or report["failed"]:
        log.info("sms outbox dispatch: %s", report)
    return report


# -- delivery reports (Africa's Talking posts them to the URL `flask sms report-url` prints) --------------


def report_token() -> str:
    cfg = _cfg()
    if cfg.get("SMS_CALLBACK_TOKEN"):
        return str(cfg["SMS_CALLBACK_TOKEN"])
    return hmac.new(str(cfg["SECRET_KEY"]).encode(), b"sms delivery reports", sha256).hexdigest()[:40]


def report_token_ok(token: str) -> bool:
    return hmac.compare_digest((token or "").encode(), report_token().encode())


def record_delivery_report(message_id: str, status: str, failure_reason: str | None = None) -> bool:
    """Store the provider's delivery status on the row it names. True when a row was found."""
    if not message_id or len(message_id) > 100:
        return False
    values = {"delivery_status": (status or "unknown")[:30]}
    if status == "Success":
        values["delivered_at"] = utcnow()
    if failure_reason:
        values["last_error"] = f"delivery: {failure_reason}"[:2000]
    result = db.session.execute(
        _unscoped(update(T).where(T.c.provider_message_id == message_id).values(**values))
    )
    db.session.commit()
    return result.rowcount > 0
