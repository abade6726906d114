"""Import jobs. Thin shells: the work is in app/jobs/services.py and app/jobs/importers.py."""

from celery import shared_task

from app.celery_app import JobTask
from app.jobs import services
from app.jobs.runner import TRANSIENT


class ImportTask(JobTask):
    what = "import"


@shared_task(
    bind=True,
    base=ImportTask,
    name="tasks.imports.run_student_import",
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=10,
)
def run_student_import(self, job_id):
    return self.run_job(services.run_import, job_id)
