"""Export jobs and their housekeeping. Thin shells: the work is in app/jobs/services.py."""

from celery import shared_task

from app.celery_app import JobTask
from app.jobs import services
from app.jobs.runner import TRANSIENT


class ExportTask(JobTask):
    what = "export"


@shared_task(
    bind=True,
    base=ExportTask,
    name="tasks.exports.run_export",
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=10,
)
def run_export(self, job_id):
    """Write one export file (job id only: the row says what; personal data never travels in a message)."""
    return self.run_job(services.run_export, job_id)


@shared_task(name="tasks.exports.requeue_stale")
def requeue_stale():
    """Beat, every minute: send again the jobs whose message was lost (Redis restart, failed publish)."""
    return services.requeue_stale_jobs()
