"""Privacy tasks: the subject-access export and the nightly retention job. Thin shells: the work is in
app/privacy/services.py."""

from celery import shared_task

from app.celery_app import JobTask
from app.core.locks import run_locked
from app.jobs.runner import TRANSIENT
from app.privacy import services

RETENTION_LOCK_SECONDS = 3 * 3600


class SubjectAccessTask(JobTask):
    what = "export"


@shared_task(
    bind=True,
    base=SubjectAccessTask,
    name="tasks.privacy.run_subject_access",
    autoretry_for=TRANSIENT,
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=10,
)
def run_subject_access(self, job_id):
    """Write one subject-access zip (job id only: the row names the person, the message never does)."""
    return self.run_job(services.run_subject_access, job_id)


@shared_task(name="tasks.privacy.apply_retention", soft_time_limit=3 * 3600, time_limit=3 * 3600 + 600)
def apply_retention():
    """Nightly: delete audit entries, outbox messages, job rows, idempotency keys and files older than
    their RETENTION_* setting."""
    return run_locked("privacy_retention", RETENTION_LOCK_SECONDS, services.apply_retention)


@shared_task(name="tasks.privacy.flush_disclosures", soft_time_limit=300, time_limit=360)
def flush_disclosures():
    """Every minute: the reads of sensitive records Redis holds, into the record of disclosures."""
    return services.flush_disclosures()
