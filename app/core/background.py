"""Background work as services see it: send a task, by name, once the transaction commits; and do
something at every heartbeat of the task this thread runs. The Celery app (app/celery_app.py) is
reached at run time through `current_app.extensions["celery"]`, so no service imports the wiring or
the tasks (the import contracts in pyproject.toml).

`enqueue_after_commit(name, *args)`: the task is sent only once the transaction that created its rows
has committed (a worker never looks for a row that is not there yet), and never after a rollback.
"""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.extensions import db

log = logging.getLogger("schoolhouse.tasks")

_PENDING = "schoolhouse_enqueue_after_commit"
_local = threading.local()


def celery() -> Any:
    return current_app.extensions["celery"]


def in_process() -> bool:
    """Tasks run in the caller's process (no broker: the embedded default)."""
    return bool(celery().conf.task_always_eager)


def enqueue(task_name: str, *args: Any, **options: Any) -> Any:
    """Send the task now (in-process when eager). A broker outage is logged, not raised: the rows are
    committed and the periodic sweeps send the work again later. Looked up by name in the app's
    registry, not `send_task`, which would ignore task_always_eager."""
    task = celery().tasks[task_name]
    try:
        return task.apply_async(args=args, **options)
    except Exception as exc:  # noqa: BLE001 - kombu/redis connection errors of every kind
        log.warning("could not enqueue %s%r: %s: %s", task_name, args, type(exc).__name__, exc)
        return None


def enqueue_after_commit(task_name: str, *args: Any, **options: Any) -> Any:
    """Send the task when the current transaction commits (at once if none is open)."""
    session = db.session()
    if not session.in_transaction():
        return enqueue(task_name, *args, **options)
    session.info.setdefault(_PENDING, []).append((task_name, args, options))
    return None


def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    if not has_app_context():  # nothing to send them with; the periodic sweeps will find their rows
        log.warning("tasks not sent (commit outside an app context): %s", pending)
        return
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    eager = in_process()
    for name, args, options in pending:
        if eager:
            # This session is mid-commit and cannot run SQL: an in-process task gets its own context.
            with app.app_context():
                enqueue(name, *args, **options)
        else:
            enqueue(name, *args, **options)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


def register_after_commit() -> None:
    if not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)


# --- the running task's heartbeat ------------------------------------------------------------------------


def heartbeat_interval(app_celery: Any = None) -> float:
    """Seconds between heartbeats of a running task: a quarter of the broker's visibility timeout."""
    options = (app_celery or celery()).conf.broker_transport_options or {}
    return max(0.5, options.get("visibility_timeout", 3600) / 4)


def set_heartbeat_callbacks(callbacks: list[Callable[[], None]] | None) -> None:
    """For the Celery wiring: the list its heartbeat calls while a task runs in this thread."""
    _local.callbacks = callbacks


@contextmanager
def on_heartbeat(callback: Callable[[], None]) -> Iterator[None]:
    """Call `callback` (in the heartbeat's thread) at every heartbeat of the task running in this
    thread, while the block runs. Nothing happens without one (in-process, or not on Redis)."""
    callbacks = getattr(_local, "callbacks", None)
    if callbacks is None:
        yield
        return
    callbacks.append(callback)
    try:
        yield
    finally:
        callbacks.remove(callback)
