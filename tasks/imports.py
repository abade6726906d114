"""Import jobs. Thin shells: the work is in app/jobs/services.py (run_import), app/jobs/importers.py
and app/jobs/people_import.py."""

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
    # Every import kind (students, teachers, guardians): the job row names it. The task keeps the name
    # it had when students were the only kind, so messages already queued still find it.
    return self.run_job(services.run_import, job_id)
