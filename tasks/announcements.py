"""Celery task for announcements: a thin shell around app.announcements.services.deliver (an id in, the
row re-read). Safe to run twice: recipients and messages are keyed (app/announcements/services.py).
Routed to the `notifications` queue by `tasks.announcements.*` in config.py's TASK_ROUTES."""

from celery import shared_task

from app.announcements import services


@shared_task(name="tasks.announcements.deliver", ignore_result=True)
def deliver(announcement_id):
    """Fan an announcement out to its audience (enqueued after the commit that posted it)."""
    return services.deliver(int(announcement_id))
