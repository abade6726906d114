"""Celery tasks for email: thin shells around app.notifications.services (ids in, rows re-read).

Bound with `shared_task`, so they attach to whichever Celery app the factory creates (see
app/celery_app.py), and go to the `notifications` queue by the `tasks.notifications.*` route in
config's Celery settings; the periodic ones run under a lock (app/core/locks.py) so overlapping
runs never double up. Retries are not Celery retries: a failed message goes back to the outbox with
its own backoff, so no long countdown ever sits in the broker.
"""

from datetime import date

from celery import shared_task

from app.core.locks import run_locked
from app.notifications import services, sms_services

# Lock timeouts: longer than a run may take, short enough that a killed run frees the job soon.
DISPATCH_LOCK_SECONDS = 300
ALERTS_LOCK_SECONDS = 1800
ABSENCE_LOCK_SECONDS = 300  # runs every 3 minutes: a killed run must not hold back the next ones long


@shared_task(name="tasks.notifications.send_outbox_email", ignore_result=True)
def send_outbox_email(outbox_id):
    """Send one queued message now (e.g. enqueued after the commit that created it)."""
    return services.send_outbox_email(int(outbox_id))


@shared_task(name="tasks.notifications.dispatch_outbox")
def dispatch_outbox():
    """Every minute: recover rows stuck in "sending", then send every due pending row."""
    return run_locked("dispatch_outbox", DISPATCH_LOCK_SECONDS, services.dispatch_outbox)


def _schools(institution_id):
    return [int(institution_id)] if institution_id is not None else None


@shared_task(name="tasks.notifications.absence_alerts")
def absence_alerts(on_date=None, institution_id=None):
    """Every 3 minutes: queue today's absence alerts for each school whose local time has passed
    ABSENCE_ALERT_HOUR (`on_date`, ISO, to (re)run one day; `institution_id`: one school only)."""
    day = date.fromisoformat(on_date) if on_date else None
    return run_locked(
        "absence_alerts",
        ABSENCE_LOCK_SECONDS,
        services.send_absence_alerts,
        on_date=day,
        institution_ids=_schools(institution_id),
    )


@shared_task(name="tasks.notifications.fee_reminders")
def fee_reminders(on_date=None, institution_id=None):
    """Hourly: queue fee reminders (due soon, overdue weekly) for each school past FEE_REMINDER_HOUR."""
    day = date.fromisoformat(on_date) if on_date else None
    return run_locked(
        "fee_reminders",
        ALERTS_LOCK_SECONDS,
        services.send_fee_reminders,
        on_date=day,
        institution_ids=_schools(institution_id),
    )


@shared_task(name="tasks.notifications.send_outbox_sms", ignore_result=True)
def send_outbox_sms(outbox_id):
    """Send one queued SMS now (enqueued after the commit that created it)."""
    return sms_services.send_outbox_sms(int(outbox_id))


@shared_task(name="tasks.notifications.dispatch_sms_outbox")
def dispatch_sms_outbox():
    """Every minute: recover SMS stuck in "sending", then send every due pending one."""
    return run_locked("dispatch_sms_outbox", DISPATCH_LOCK_SECONDS, sms_services.dispatch_sms_outbox)


@shared_task(name="tasks.notifications.payment_receipt", ignore_result=True)
def payment_receipt(payment_id):
    """Queue (and send) the receipt of a payment to the student's guardians, by their channel."""
    return services.queue_payment_receipt(int(payment_id))
