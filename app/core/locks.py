"""The one lock of background work: an export/import job run (app/jobs/runner.py) and a periodic job
(`run_locked`, tasks/) hold one while they run, so two runs never overlap.

With Redis: redis-py's `Lock` (SET NX PX with a token; refreshed and released only by its owner) on
the broker's database (db 2, `noeviction`: a lock is never evicted like a cache entry would be). It
expires after `timeout` seconds, so a run whose worker was killed frees it by itself; the token names
the host and process, so a lock whose holder died on this host (a pool child killed by the OOM killer)
is taken over at once. Without Redis (embedded default) a process-local lock does the same within the
one process.
"""

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

import redis
from flask import Flask, current_app
from redis.exceptions import LockError, LockNotOwnedError
from sqlalchemy.engine import make_url

from app.core.redisconn import BROKER_DB, shared_client

log = logging.getLogger("schoolhouse.jobs")

PERIODIC_PREFIX = "sh:lock:periodic:"


class Lock(Protocol):
    lost: bool

    def acquire(self) -> bool: ...
    def refresh(self) -> None: ...
    def release(self) -> None: ...
    def remaining(self) -> float: ...
    def held_by_anyone(self) -> bool: ...


class RedisLock:
    """Non-blocking; `refresh` (from any thread: the task heartbeat's) sets `lost` when another run
    holds the key."""

    def __init__(self, client: redis.Redis, key: str, timeout: float):
        self.client, self.key, self.timeout = client, key, timeout
        # thread_local=False: the heartbeat thread refreshes the lock that the task's thread took
        self._lock = client.lock(key, timeout=timeout, blocking=False, thread_local=False)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.lost = False

    def acquire(self) -> bool:
        if self._lock.acquire(token=self.token):
            return True
        raw = self.client.get(self.key)
        holder = raw.decode() if isinstance(raw, bytes) else None
        if holder and _holder_is_dead(holder):
            with suppress(LockNotOwnedError):  # deletes the key only while that dead holder has it
                self._lock.do_release(holder)
            return bool(self._lock.acquire(token=self.token))
        return False

    def refresh(self) -> None:
        try:
            self._lock.reacquire()
        except LockNotOwnedError:
            # Redis lost the key (a restart without persistence): take it again; someone else's is lost
            if not self._lock.acquire(token=self.token):
                self.lost = True
        except LockError:  # released meanwhile: the heartbeat raced the end of the run
            pass

    def release(self) -> None:
        try:
            self._lock.release()
        except LockNotOwnedError:
            if not self.lost:
                log.warning(
                    "lock %s expired before its run ended (timeout %ss too short?)", self.key, self.timeout
                )
        except LockError:  # never acquired, or released already
            pass
        except redis.RedisError as exc:  # the lock expires on its own
            log.warning("could not release %s: %s", self.key, exc)

    def remaining(self) -> float:
        ms = self.client.pttl(self.key)
        return max(1.0, ms / 1000) if isinstance(ms, int) and ms > 0 else 1.0

    def held_by_anyone(self) -> bool:
        return bool(self._lock.locked())


_local_held: set[str] = set()
_local_guard = threading.Lock()


class LocalLock:
    """The same within one process (no Redis: the embedded default runs tasks in-process)."""

    lost = False

    def __init__(self, key: str):
        self.key, self._mine = key, False

    def acquire(self) -> bool:
        with _local_guard:
            if self.key in _local_held:
                return False
            _local_held.add(self.key)
            self._mine = True
            return True

    def refresh(self) -> None:
        pass

    def release(self) -> None:
        if self._mine:
            with _local_guard:
                _local_held.discard(self.key)
            self._mine = False

    def remaining(self) -> float:
        return 1.0

    def held_by_anyone(self) -> bool:
        return self.key in _local_held


def _holder_is_dead(holder: str) -> bool:
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


def lock(app: Flask, key: str, timeout: float) -> Lock:
    client = shared_client(app, BROKER_DB)
    return LocalLock(key) if client is None else RedisLock(client, key, timeout)


# --- periodic jobs -------------------------------------------------------------------------------------


def lock_key(app: Flask, name: str) -> str:
    """Redis key of a periodic job's lock. It names the database the job works on: deployments (or
    test runs) sharing one Redis but not one database never block each other."""
    database = make_url(app.config["SQLALCHEMY_DATABASE_URI"]).database or "default"
    return f"{PERIODIC_PREFIX}{Path(database).name}:{name}"


@contextmanager
def periodic_lock(name: str, timeout: float):
    """`with periodic_lock("job", 300) as acquired:` — acquired is False when another run holds it.
    If Redis is configured but unreachable the run is skipped: the broker lives there too, so nothing
    would run anyway, and skipping can never double up a job."""
    held = lock(current_app, lock_key(current_app, name), timeout)
    try:
        acquired = held.acquire()
    except redis.RedisError as exc:
        log.warning("periodic job %s: cannot reach Redis for its lock (%s); skipping this run", name, exc)
        acquired = False
    try:
        yield acquired
    finally:
        if acquired:
            held.release()


def run_locked(name: str, timeout: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run fn under the job's lock; a run that finds the lock taken returns {"skipped": "locked"}."""
    with periodic_lock(name, timeout) as acquired:
        if not acquired:
            log.info("periodic job %s skipped: another run holds its lock", name)
            return {"skipped": "locked", "job": name}
        return fn(*args, **kwargs)
