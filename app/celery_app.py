"""Celery wired to the Flask app (Flask docs, patterns/celery): `celery_init_app(app)`, and the task
base classes the tasks in tasks/ use.

- Every task runs inside an app context (one per task; an already active context is reused, e.g. an
  in-process run inside a request), and its database session is removed afterwards.
- Each worker process disposes the engine it inherited when it was forked.
- While a task delivered by the Redis broker runs, a heartbeat thread keeps its entry in kombu's
  `unacked_index` fresh, so a task that runs longer than the visibility timeout is not handed to a second
  worker; when the process dies the heartbeat stops and the task comes back after the visibility timeout
  (about a minute, config.celery_settings). Jobs add their own lock refresh to the same heartbeat
  (app.core.background.on_heartbeat).
- `JobTask` runs an export/import job (app/jobs/runner.py holds the job's state rules) and turns its
  errors into retries or a failed job row.

- The embedded beat: where tasks run in-process (no REDIS_URL, so no broker and no `celery beat`),
  `start_embedded_beat` runs the beat schedule on a thread of the serving process (see there).

Services send tasks by name with app.core.background.enqueue_after_commit. Settings, the task modules
(`include`), the queues and the beat schedule: config.Config.celery_settings. Worker: celery_worker.py.
"""

import logging
import os
import threading
import time

import click
import redis
from celery import Celery, Task, signals
from celery import current_app as current_celery
from celery.beat import EmbeddedService
from celery.exceptions import MaxRetriesExceededError, SoftTimeLimitExceeded
from flask import has_app_context
from flask.cli import get_debug_flag, run_command

from app.core import background
from app.core.redisconn import BROKER_DB, shared_client
from app.extensions import db
from app.jobs.runner import Busy, LockLost, is_transient, mark_failed, mark_retrying

log = logging.getLogger("schoolhouse.tasks")


class FlaskTask(Task):
    """Runs the task body inside the Flask app context; heartbeats while it runs on a Redis broker."""

    def __call__(self, *args, **kwargs):
        if has_app_context():  # in-process (eager) run or a direct call: one app context is enough
            return self._run(args, kwargs)
        with self.app.flask_app.app_context():
            try:
                return self._run(args, kwargs)
            finally:
                db.session.remove()

    def _run(self, args, kwargs):
        beat = Heartbeat.for_task(self)
        if beat is None:
            return self.run(*args, **kwargs)
        with beat:
            return self.run(*args, **kwargs)


class Heartbeat(threading.Thread):
    """Keeps a running task's broker delivery invisible to other workers, plus any extra callbacks
    (job locks). Stops with the task; dies with the process, which is the point."""

    def __init__(self, client, index_key, tag, interval):
        super().__init__(name="task-heartbeat", daemon=True)
        self.client, self.index_key, self.tag, self.interval = client, index_key, tag, interval
        self.callbacks = []
        self._stop_event = threading.Event()

    @classmethod
    def for_task(cls, task):
        request = task.request
        if request.is_eager or task.app.conf.task_always_eager:
            return None
        if not (task.app.conf.broker_url or "").startswith(("redis://", "rediss://", "unix://")):
            return None
        tag = (request.properties or {}).get("delivery_tag") or getattr(request, "delivery_tag", None)
        client = shared_client(task.app.flask_app, BROKER_DB)
        if tag is None or client is None:
            return None
        opts = task.app.conf.broker_transport_options or {}
        key = opts.get("global_keyprefix", "") + opts.get("unacked_index_key", "unacked_index")
        return cls(client, key, tag, background.heartbeat_interval(task.app))

    def beat(self):
        try:
            # XX: only refresh an entry that is still ours; a restored (re-queued) delivery stays restored.
            self.client.zadd(self.index_key, {self.tag: time.time()}, xx=True)
        except redis.RedisError as exc:
            log.warning("task heartbeat failed: %s", exc)
        for callback in list(self.callbacks):
            try:
                callback()
            except Exception:  # noqa: BLE001 - a failing callback must not stop the heartbeat
                log.exception("heartbeat callback failed")

    def run(self):
        while not self._stop_event.wait(self.interval):
            self.beat()

    def __enter__(self):
        background.set_heartbeat_callbacks(self.callbacks)
        self.beat()
        self.start()
        return self

    def __exit__(self, *exc):
        self._stop_event.set()
        self.join(timeout=5)
        background.set_heartbeat_callbacks(None)
        return False


class JobTask(FlaskTask):
    """Runs a job function (app/jobs/services.py: run_export, run_import) under the rules of
    app/jobs/runner.py; transient errors retry with backoff (the task's autoretry_for)."""

    abstract = True
    what = "job"

    def run_job(self, fn, job_id):
        try:
            return fn(job_id)
        except Busy as busy:
            # Another run holds the lock: look again when it would have expired (always below the
            # visibility timeout). If that run is alive it will have finished the job by then.
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


def celery_init_app(app):
    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object(app.config["CELERY"])  # with `include`: the task modules in tasks/
    celery.flask_app = app
    celery.set_default()
    app.extensions["celery"] = celery
    background.register_after_commit()
    celery.loader.import_default_modules()  # registers the shared tasks with this app
    return celery


@signals.worker_process_init.connect(dispatch_uid="schoolhouse-dispose-engine")
def _dispose_engine(**_):
    # A forked pool process must not reuse the parent's pooled connections; close=False leaves the
    # parent's sockets alone and just forgets them here.
    flask_app = getattr(current_celery, "flask_app", None)
    if flask_app is not None:
        with flask_app.app_context():
            for engine in db.engines.values():
                engine.dispose(close=False)


@signals.task_postrun.connect(dispatch_uid="schoolhouse-remove-session")
def _remove_session(task=None, **_):
    # The task's own app context already removed its session; this covers tasks run in a context that
    # outlives them in a worker. Never in-process: that session belongs to the caller (a request).
    if task is not None and not task.request.is_eager and has_app_context():
        db.session.remove()


# --- the embedded beat ------------------------------------------------------------------------------------
#
# Without Redis there is no broker and no `celery beat` process, so nothing would run BEAT_SCHEDULE
# (config.py): no absence alert, no outbox dispatch. Here Celery's own beat runs on a daemon thread of
# the serving process (`celery.beat.EmbeddedService(thread=True)`, what `celery worker -B` uses): the
# same schedule objects (crontab and intervals), the same task names; with tasks in-process
# (task_always_eager) each due task runs on that thread, in its own app context (FlaskTask). The
# scheduler keeps its state in memory (`celery.beat:Scheduler`, no schedule file): after a restart an
# interval job first runs one interval later, a crontab job at its next time. Periodic jobs take their
# process-local lock (app/core/locks.py), so a run by hand in the same process never overlaps one.

_embedded_beat = None
_embedded_beat_guard = threading.Lock()


def embedded_beat_wanted(app) -> bool:
    """Whether this process runs the beat schedule itself. Never with a broker (`celery beat` does,
    the Procfile's `beat`), never in the Flask reloader's parent (it only watches files and restarts its
    child, which serves: WERKZEUG_RUN_MAIN is set there). Then EMBEDDED_BEAT decides; unset, it is on
    only while `flask run` serves (`make run`), so CLI commands, scripts, tests and gunicorn workers
    (several per deployment) never start one."""
    if not app.config["CELERY_ALWAYS_EAGER"]:
        return False
    ctx = click.get_current_context(silent=True)
    serving = ctx is not None and ctx.command is run_command
    if serving and os.environ.get("WERKZEUG_RUN_MAIN") != "true":
        reload = ctx.params.get("reload")
        if reload if reload is not None else get_debug_flag():
            return False  # the reloader's parent
    wanted = app.config.get("EMBEDDED_BEAT")
    if wanted is not None:
        return bool(wanted)
    return serving and not app.testing


def start_embedded_beat(app):
    """Start the beat thread for this app's Celery, once per process (a second app created in the same
    process gets the running one). Returns the thread (`stop_embedded_beat` ends it)."""
    global _embedded_beat
    with _embedded_beat_guard:
        if _embedded_beat is not None and _embedded_beat.is_alive():
            return _embedded_beat
        beat = EmbeddedService(app.extensions["celery"], thread=True, scheduler_cls="celery.beat:Scheduler")
        beat.name = "embedded-beat"
        beat.start()
        _embedded_beat = beat
    names = ", ".join(sorted(app.config["CELERY"]["beat_schedule"]))
    log.info("embedded beat started in process %s: %s", os.getpid(), names)
    return beat


def stop_embedded_beat(timeout=10.0):
    """Stop this process's beat thread, if any, after the task it may be running."""
    global _embedded_beat
    with _embedded_beat_guard:
        beat, _embedded_beat = _embedded_beat, None
    if beat is not None:
        beat.service.stop()
        beat.join(timeout)
