"""One run of an export or import job inside a task: who may run it, progress, and how it ends.

The job row in PostgreSQL is the authority, Redis only helps:
- a job that is done, failed or expired is never run again (a duplicate delivery just returns);
- one run at a time: a Redis lock per job (`sh:job:<id>`), refreshed by the task heartbeat. A second
  delivery while the first run is alive finds the lock and checks again later; a lock whose holder
  died on this host is taken over at once, elsewhere when its TTL runs out;
- every start counts an attempt; past JOB_MAX_ATTEMPTS the job fails instead of killing workers forever;
- a run finishes with a compare-and-set on (status, attempts): if another attempt took over meanwhile,
  this one's result is thrown away. So one output file and one "done", however often a task is delivered.
"""

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis
from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from app.core import locks
from app.core.background import heartbeat_interval, in_process, on_heartbeat
from app.core.models import utcnow
from app.core.tenancy import set_current_institution
from app.extensions import db
from app.jobs.models import Job

log = logging.getLogger("schoolhouse.jobs")

FINISHED = ("done", "failed", "expired")
ACTIVE = ("queued", "running")
# Worth another try: the database or Redis went away for a moment.
TRANSIENT = (OperationalError, redis.ConnectionError, redis.TimeoutError)


class Busy(Exception):
    """Another run of this job holds its lock; try again in `retry_in` seconds."""

    def __init__(self, retry_in):
        super().__init__(f"job is running elsewhere; retry in {retry_in:.0f} s")
        self.retry_in = retry_in


class LockLost(Exception):
    """This run's lock went to another run (e.g. Redis was unreachable for longer than the TTL)."""


def is_transient(exc):
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, TRANSIENT)


def job_lock(job_id):
    # Refreshed at every task heartbeat: a run whose heartbeat stopped for three beats loses it.
    return locks.lock(current_app, f"sh:job:{job_id}", 3 * heartbeat_interval())


# --- a run ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    job: Job
    attempt: int
    lock: locks.Lock
    eager: bool
    every: int
    estimate: int = 0
    _next: int = field(default=0)
    _at: float = field(default=0.0)

    def __post_init__(self):
        self.job_id = self.job.id  # kept: the job object expires at every commit

    def progress(self, rows_done, total=None):
        """Called often; writes to the job row only every EXPORT_PROGRESS_EVERY rows (or, for slow
        kinds such as PDFs, every couple of seconds). Uses its own short transaction so the API sees it
        while the export's long read transaction is still open."""
        if self.lock.lost:
            raise LockLost(f"job {self.job_id}: lock taken over by another run")
        now = time.monotonic()
        if rows_done < self._next and now - self._at < 2:
            return
        self._next, self._at = rows_done + self.every, now
        if self.eager:  # in-process: nobody can watch, and SQLite would block on a second writer
            return
        total = total or self.estimate
        percent = min(99, int(100 * rows_done / total)) if total else 0
        table = Job.__table__
        with db.engine.begin() as conn:
            conn.execute(
                table.update()
                .where(table.c.id == self.job_id, table.c.attempts == self.attempt)
                .values(rows_done=rows_done, progress_percent=percent, updated_at=utcnow())
            )


def _load(job_id, job_type):
    return db.session.execute(
        select(Job).where(Job.id == job_id, Job.job_type == job_type), execution_options={"skip_tenant": True}
    ).scalar_one_or_none()


@contextmanager
def running_job(job_id, job_type):
    """Claim the job for this run: yields a Run, or None when there is nothing to do."""
    job = _load(job_id, job_type)
    if job is None or job.status in FINISHED:
        db.session.rollback()
        log.info("job %s: nothing to do (%s)", job_id, "missing" if job is None else job.status)
        yield None
        return
    set_current_institution(job.institution_id)  # every query of this run is scoped to the job's school
    lock = job_lock(job_id)
    if not lock.acquire():
        db.session.rollback()
        raise Busy(lock.remaining())
    try:
        attempt = db.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(ACTIVE))
            .values(
                status="running",
                attempts=Job.attempts + 1,
                error=None,
                updated_at=utcnow(),
                started_at=func.coalesce(Job.started_at, utcnow()),
            )
            .returning(Job.attempts)
        ).scalar_one_or_none()
        if attempt is None:
            db.session.rollback()
            yield None
            return
        limit = current_app.config["JOB_MAX_ATTEMPTS"]
        if attempt > limit:
            _fail(job_id, f"Stopped after {limit} attempts: the job kept interrupting the worker.")
            db.session.commit()
            log.error("job %s: gave up after %s attempts", job_id, limit)
            yield None
            return
        db.session.commit()
        db.session.refresh(job)
        log.info("job %s (%s %s): attempt %s started", job_id, job.job_type, job.kind, attempt)
        with on_heartbeat(lock.refresh):
            yield Run(
                job,
                attempt,
                lock,
                in_process(),
                current_app.config["EXPORT_PROGRESS_EVERY"],
                job.row_count or 0,
            )
    finally:
        lock.release()


def finish(run: Run, **values):
    """Mark the run's job done, if this run still owns it; False when another attempt took over."""
    now = utcnow()
    values.setdefault("finished_at", now)
    values.setdefault("updated_at", now)
    result = db.session.execute(
        update(Job)
        .where(Job.id == run.job.id, Job.status == "running", Job.attempts == run.attempt)
        .values(status="done", progress_percent=100, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _fail(job_id, message):
    db.session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(ACTIVE))
        .values(status="failed", error=message, finished_at=utcnow(), updated_at=utcnow())
        .execution_options(synchronize_session=False, skip_tenant=True)
    )


def mark_failed(job_id, message):
    """A job that cannot succeed: its row says why (in words for the user; details go to the log)."""
    db.session.rollback()
    _fail(job_id, message)
    db.session.commit()


def mark_retrying(job_id, message):
    db.session.rollback()
    db.session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "running")
        .values(status="queued", error=message, updated_at=utcnow())
        .execution_options(synchronize_session=False, skip_tenant=True)
    )
    db.session.commit()
