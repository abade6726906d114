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
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis
from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError, OperationalError

from app.celery_app import broker_redis, current_heartbeat, heartbeat_interval
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


# --- the lock ------------------------------------------------------------------------------------------

_REFRESH = """
local v = redis.call('get', KEYS[1])
if v == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not v then redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class JobLock:
    def __init__(self, client, job_id, ttl_seconds):
        self.client, self.key, self.ttl_ms = client, f"sh:job:{job_id}", int(ttl_seconds * 1000)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.lost = False

    def acquire(self):
        if self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return True
        holder = self.client.get(self.key)
        if holder and _holder_is_dead(holder.decode()):
            # Its process is gone (e.g. a pool child killed by the OOM killer): take over now.
            self.client.eval(_RELEASE, 1, self.key, holder)
            return bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        return False

    def remaining(self):
        ms = self.client.pttl(self.key)
        return max(1.0, ms / 1000) if ms and ms > 0 else 1.0

    def refresh(self):
        # Re-creates the key when Redis lost it (a restart without persistence); refuses a foreign one.
        if not self.client.eval(_REFRESH, 1, self.key, self.token, self.ttl_ms):
            self.lost = True

    def release(self):
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except redis.RedisError as exc:
            log.warning("could not release %s: %s", self.key, exc)

    def held_by_anyone(self):
        return bool(self.client.exists(self.key))


class NullLock:
    """No Redis (embedded default): tasks run in-process, one at a time per call."""

    lost = False

    def acquire(self):
        return True

    def refresh(self):
        pass

    def release(self):
        pass

    def remaining(self):
        return 1.0

    def held_by_anyone(self):
        return False


def _holder_is_dead(holder):
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def job_lock(job_id):
    client = broker_redis()
    if client is None:
        return NullLock()
    celery = current_app.extensions["celery"]
    return JobLock(client, job_id, 3 * heartbeat_interval(celery))


# --- a run ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    job: Job
    attempt: int
    lock: object
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
    beat = current_heartbeat()
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
        if beat is not None:
            beat.callbacks.append(lock.refresh)
        celery = current_app.extensions["celery"]
        log.info("job %s (%s %s): attempt %s started", job_id, job.job_type, job.kind, attempt)
        yield Run(
            job,
            attempt,
            lock,
            bool(celery.conf.task_always_eager),
            current_app.config["EXPORT_PROGRESS_EVERY"],
            job.row_count or 0,
        )
    finally:
        if beat is not None and lock.refresh in beat.callbacks:
            beat.callbacks.remove(lock.refresh)
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


# --- the task base -------------------------------------------------------------------------------------

from celery.exceptions import MaxRetriesExceededError, SoftTimeLimitExceeded  # noqa: E402
from flask import has_app_context  # noqa: E402

from app.celery_app import FlaskTask  # noqa: E402


class JobTask(FlaskTask):
    """Runs a job function with the rules above; transient errors retry with backoff (autoretry_for)."""

    abstract = True
    what = "job"

    def run_job(self, fn, job_id):
        try:
            return fn(job_id)
        except Busy as busy:
            # Another run holds the lock: look again when it would have expired (always below the
            # visibility timeout, PITFALLS §2). If that run is alive it will have finished the job by then.
            visibility = (self.app.conf.broker_transport_options or {}).get("visibility_timeout", 60)
            try:
                raise self.retry(countdown=min(busy.retry_in + 1, visibility * 0.8), max_retries=500)
            except MaxRetriesExceededError:
                log.warning(
                    "job %s: still locked after many checks; leaving it to the stale-job sweep", job_id
                )
                return None
        except LockLost as exc:
            log.warning("%s; this attempt stops", exc)
            db.session.rollback()
            return None
        except SoftTimeLimitExceeded:
            limit = self.soft_time_limit or self.app.conf.task_soft_time_limit
            _safely(
                mark_failed,
                job_id,
                f"The {self.what} took longer than {limit} seconds and was stopped; "
                f"narrow it (fewer dates or one class) and try again.",
            )
            return None
        except Exception as exc:
            if is_transient(exc):
                _safely(
                    mark_retrying,
                    job_id,
                    f"A temporary problem interrupted this {self.what} "
                    f"({type(exc).__name__}); it will be retried.",
                )
                raise  # autoretry_for: exponential backoff with jitter
            log.exception("job %s failed", job_id)
            _safely(
                mark_failed,
                job_id,
                f"The {self.what} failed because of an internal error "
                f"(job {job_id}); the details are in the worker log.",
            )
            return None

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # Only transient errors reach here, once their retries are used up.
        if not args:
            return
        message = (
            f"The {self.what} failed: a temporary problem ({type(exc).__name__}) "
            f"persisted through {self.max_retries} retries."
        )
        if has_app_context():
            _safely(mark_failed, args[0], message)
        else:
            with self.app.flask_app.app_context():
                _safely(mark_failed, args[0], message)
                db.session.remove()


def _safely(fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - the database may be the thing that is down
        db.session.rollback()
        log.warning("could not update job %s: %s", args[0], exc)
