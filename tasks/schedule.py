"""The beat schedule (config's Celery block sets `beat_schedule` from BEAT_SCHEDULE).

Run exactly ONE beat process per deployment (`celery -A celery_worker beat`, the Procfile's `beat`):
beat keeps no shared state, so two beats would each send every entry. Even then nothing doubles up —
each job takes a Redis lock while it runs (app/maintenance/locks.py), the outbox claims each message
once, and every notification has a dedupe key — but the work would be done twice for nothing.

Crontab times are in Celery's `timezone` (UTC unless configured). Notification jobs run hourly and
each school is handled at its own local hour (ABSENCE_ALERT_HOUR, FEE_REMINDER_HOUR), so schools in
different time zones get their mail at the right time of their day. `expires` drops a run that waited
in the queue longer than its period (workers down), so a backlog of identical runs never piles up.
"""

from datetime import timedelta

from celery.schedules import crontab

BEAT_SCHEDULE = {
    "outbox-dispatch": {
        "task": "tasks.notifications.dispatch_outbox",
        "schedule": timedelta(minutes=1),
        "options": {"queue": "notifications", "expires": 55},
    },
    "absence-alerts": {
        "task": "tasks.notifications.absence_alerts",
        "schedule": crontab(minute=5),  # hourly; each school at ABSENCE_ALERT_HOUR local (default 16:00)
        "options": {"queue": "notifications", "expires": 3000},
    },
    "fee-reminders": {
        "task": "tasks.notifications.fee_reminders",
        "schedule": crontab(minute=10),  # hourly; each school at FEE_REMINDER_HOUR local (default 09:00)
        "options": {"queue": "notifications", "expires": 3000},
    },
    "cache-warming": {
        "task": "tasks.maintenance.warm_caches",
        "schedule": crontab(minute="*/15"),
        "options": {"queue": "maintenance", "expires": 600},
    },
    "index-maintenance": {
        "task": "tasks.maintenance.index_maintenance",
        "schedule": crontab(hour=3, minute=30),  # nightly, when traffic is lowest
        "options": {"queue": "maintenance", "expires": 3 * 3600},
    },
    # Same key as app/celery_app.JOBS_SCHEDULE's entry, which this one replaces when the schedules are
    # merged: one hourly clean-up (the same app.jobs.services.remove_expired_exports), under a lock.
    "exports-cleanup-expired": {
        "task": "tasks.maintenance.cleanup_expired_exports",
        "schedule": crontab(minute=20),
        "options": {"queue": "maintenance", "expires": 3000},
    },
}
