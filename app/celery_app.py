"""Celery wired to the Flask app (Flask docs, patterns/celery): `celery_init_app(app)`.

- Every task runs inside an app context (one per task; an already active context is reused, e.g. an
  in-process run inside a request), and its database session is removed afterwards.
- Each worker process disposes the engine it inherited when it was forked (PITFALLS §7).
- While a task delivered by the Redis broker runs, a heartbeat thread keeps its entry in kombu's
  `unacked_index` fresh, so a task that runs longer than the visibility timeout is not handed to a second
  worker; when the process dies the heartbeat stops and the task comes back after the visibility timeout
  (about a minute, config.celery_settings). Jobs add their own lock refresh to the same heartbeat.
- `enqueue_after_commit(task, *args)`: the task is sent only once the transaction that created its
  rows has committed (a worker never looks for a row that is not there yet), and never after a rollback.

Settings: config.Config.celery_settings. Worker entry point: celery_worker.py.
"""

import importlib
import importlib.util
import logging
import os
import pkgutil
import threading
import time

import redis
from celery import Celery, Task, signals
from flask import current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.extensions import db

log = logging.getLogger("schoolhouse.tasks")

# Periodic work of the jobs package; the rest is in tasks/schedule.py (BEAT_SCHEDULE), including the
# hourly expired-export clean-up (tasks.maintenance.cleanup_expired_exports -> remove_expired_exports).
JOBS_SCHEDULE = {
    "jobs-requeue-stale": {
        "task": "tasks.exports.requeue_stale",
        "schedule": 60.0,
        "options": {"queue": "maintenance", "expires": 55},
    },
}
_PENDING = "schoolhouse_enqueue_after_commit"
_local = threading.local()


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
        tag = (request.properties or {}).get("delivery_tag") or getattr(request, "delivery_tag", None)
        client = broker_redis(task.app)
        if tag is None or client is None:
            return None
        opts = task.app.conf.broker_transport_options or {}
        key = opts.get("global_keyprefix", "") + opts.get("unacked_index_key", "unacked_index")
        return cls(client, key, tag, heartbeat_interval(task.app))

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
        _local.heartbeat = self
        self.beat()
        self.start()
        return self

    def __exit__(self, *exc):
        self._stop_event.set()
        self.join(timeout=5)
        _local.heartbeat = None
        return False


def current_heartbeat():
    """The heartbeat of the task running in this thread (None in-process or off Redis)."""
    return getattr(_local, "heartbeat", None)


def heartbeat_interval(celery):
    visibility = (celery.conf.broker_transport_options or {}).get("visibility_timeout", 3600)
    return max(0.5, visibility / 4)


_clients = {}


def broker_redis(celery=None):
    """A redis-py client on the broker database (db 2: noeviction, so job locks are never evicted);
    None without Redis. One per process (worker children get their own after the fork)."""
    celery = celery or current_app.extensions["celery"]
    url = celery.conf.broker_url
    if not url or not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=10
        )
    return client


def enqueue(task, *args):
    """Send `task(*args)` with the current app's Celery (in-process when eager). A broker outage is
    logged, not raised: the job row is committed and `requeue_stale_jobs` sends it again later."""
    celery = current_app.extensions["celery"]
    bound = celery.tasks[task if isinstance(task, str) else task.name]
    try:
        return bound.apply_async(args=args)
    except Exception as exc:  # noqa: BLE001 - kombu/redis connection errors of every kind
        log.warning("could not enqueue %s%r: %s: %s", bound.name, args, type(exc).__name__, exc)
        return None


def enqueue_after_commit(task, *args):
    """Send the task when the current transaction commits (at once if none is open)."""
    session = db.session()
    if not session.in_transaction():
        return enqueue(task, *args)
    session.info.setdefault(_PENDING, []).append((task if isinstance(task, str) else task.name, args))
    return None


def _after_commit(session):
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    if not has_app_context():  # nothing to send them with; the stale-job sweep will find their rows
        log.warning("tasks not sent (commit outside an app context): %s", pending)
        return
    app = current_app._get_current_object()
    eager = app.extensions["celery"].conf.task_always_eager
    for name, args in pending:
        if eager:
            # This session is mid-commit and cannot run SQL: an in-process task gets its own context.
            with app.app_context():
                enqueue(name, *args)
        else:
            enqueue(name, *args)


def _after_rollback(session):
    session.info.pop(_PENDING, None)


def _task_modules():
    import tasks  # noqa: PLC0415

    return [f"tasks.{m.name}" for m in pkgutil.iter_modules(tasks.__path__) if m.name != "schedule"]


def _beat_schedule():
    schedule = dict(JOBS_SCHEDULE)
    if importlib.util.find_spec("tasks.schedule") is not None:
        schedule.update(importlib.import_module("tasks.schedule").BEAT_SCHEDULE)
    return schedule


def celery_init_app(app):
    celery = Celery(app.name, task_cls=FlaskTask)
    celery.config_from_object(app.config["CELERY"])
    celery.conf.include = _task_modules()
    celery.conf.beat_schedule = _beat_schedule()
    celery.flask_app = app
    celery.set_default()
    app.extensions["celery"] = celery
    if not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)
    for module in celery.conf.include:  # registers the shared tasks with this app
        importlib.import_module(module)
    return celery


@signals.worker_process_init.connect(dispatch_uid="schoolhouse-dispose-engine")
def _dispose_engine(**_):
    # A forked pool process must not reuse the parent's pooled connections (PITFALLS §7); close=False
    # leaves the parent's sockets alone and just forgets them here.
    from celery import current_app as celery  # noqa: PLC0415

    flask_app = getattr(celery, "flask_app", None)
    if flask_app is not None:
        with flask_app.app_context():
            db.engine.dispose(close=False)


@signals.task_postrun.connect(dispatch_uid="schoolhouse-remove-session")
def _remove_session(task=None, **_):
    # The task's own app context already removed its session; this covers tasks run in a context that
    # outlives them in a worker. Never in-process: that session belongs to the caller (a request).
    if task is not None and not task.request.is_eager and has_app_context():
        db.session.remove()
