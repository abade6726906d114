"""Year-end rollover jobs. A thin shell: the work is in app/rollover/services.py (run_rollover)."""

from celery import shared_task

from app.celery_app import JobTask
from app.jobs.runner import TRANSIENT
from app.rollover import services


class RolloverTask(JobTask):
    what = "rollover"


@shared_task(
    bind=True,
    base=RolloverTask,
    name="tasks.rollover.run_rollover",
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=10,
)
def run_rollover(self, job_id):
    return self.run_job(services.run_rollover, job_id)
