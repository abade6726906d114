"""Locks for periodic jobs, so overlapping runs never double up (DESIGN §6: "long jobs hold a Redis lock").

A run takes a Redis lock (redis-py `Lock`: SET NX PX with a random token, released only by its owner)
on the broker's database (db 2, `noeviction`: a lock is never evicted like a cache entry would be).
A second run while the first holds it logs and returns at once. The lock expires after `timeout`
seconds, so a run whose worker was killed frees the job by itself; each job's timeout is longer than it
may run. With no Redis (embedded default) a process-local lock does the same within the one process.
If Redis is configured but unreachable, the run is skipped: the broker lives there too, so nothing
would run anyway, and skipping can never double up a job.
"""

import logging
import threading
from contextlib import contextmanager
from pathlib import Path

import redis
from flask import current_app
from sqlalchemy.engine import make_url

from app.core.redisconn import BROKER_DB, make_client
from config import redis_db_url

log = logging.getLogger("schoolhouse.jobs")

KEY_PREFIX = "sh:lock:periodic:"
_local_locks = {}
_local_guard = threading.Lock()


def _client(app):
    url = redis_db_url(app.config.get("REDIS_URL"), BROKER_DB)
    if not url:
        return None
    clients = app.extensions.setdefault("periodic_lock_clients", {})
    if url not in clients:
        clients[url] = make_client(app, BROKER_DB)
    return clients[url]


def lock_key(app, name):
    """Redis key of a job's lock. It names the database the job works on: deployments (or test runs)
    sharing one Redis but not one database never block each other."""
    database = make_url(app.config["SQLALCHEMY_DATABASE_URI"]).database or "default"
    return f"{KEY_PREFIX}{Path(database).name}:{name}"


def _local_lock(name):
    with _local_guard:
        return _local_locks.setdefault(name, threading.Lock())


@contextmanager
def periodic_lock(name, timeout):
    """`with periodic_lock("job", 300) as acquired:` — acquired is False when another run holds it."""
    client = _client(current_app)
    if client is None:
        lock = _local_lock(name)
        acquired = lock.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired:
                lock.release()
        return
    lock = client.lock(lock_key(current_app, name), timeout=timeout, blocking=False)
    try:
        acquired = lock.acquire(blocking=False)
    except redis.RedisError as exc:
        log.warning("periodic job %s: cannot reach Redis for its lock (%s); skipping this run", name, exc)
        acquired = False
    try:
        yield acquired
    finally:
        if acquired:
            try:
                lock.release()
            except redis.exceptions.LockNotOwnedError:
                log.warning(
                    "periodic job %s ran longer than its lock timeout (%ss): raise the timeout", name, timeout
                )
            except redis.RedisError as exc:  # the lock expires on its own
                log.warning("periodic job %s: could not release its lock: %s", name, exc)


def run_locked(name, timeout, fn, *args, **kwargs):
    """Run fn under the job's lock; a run that finds the lock taken returns {"skipped": "locked"}."""
    with periodic_lock(name, timeout) as acquired:
        if not acquired:
            log.info("periodic job %s skipped: another run holds its lock", name)
            return {"skipped": "locked", "job": name}
        return fn(*args, **kwargs)
