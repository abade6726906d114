"""Dead pooled connections: ping a connection before use when it sat idle in the pool, and run a read
again when its connection died under it.

SQLAlchemy's `pool_pre_ping` pings on every checkout: a round trip and its CPU on every request
(its share of an uncached read: docs/BENCHMARKS.md). Connections die while they
sit unused (a PostgreSQL restart, a firewall's idle timeout), so this pings only a connection idle for
more than DB_PING_AFTER_IDLE_S (1 s by default; 0 restores pre-ping on every checkout). A failed ping
discards the connection and the pool hands out a fresh one, as with pre-ping.

What the ping does not cover: a connection killed while in use, or in the pool for less than the idle
time, fails its next statement (SQLAlchemy then marks every connection the pool holds as stale). A read
(GET, HEAD) has written nothing, so app/core/errors.py runs it once more (`rerun_read`) on a fresh
connection; a write may have committed or not, so it answers 503 with Retry-After and the client decides.
A connection that dies after the answer is made costs nothing (`end_session`).
"""

import time

from flask import current_app, g, request
from sqlalchemy import event, exc

from app.extensions import db

READS = frozenset({"GET", "HEAD"})
_RERUN = "schoolhouse.read_rerun"


def ping_after_idle(engine, idle_seconds):
    if idle_seconds <= 0 or getattr(engine, "_schoolhouse_idle_ping", False):
        return
    engine._schoolhouse_idle_ping = True

    @event.listens_for(engine.pool, "checkin")
    def _stamp(dbapi_conn, record):
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _ping_if_idle(dbapi_conn, record, proxy):
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < idle_seconds:
            return  # fresh from connect(), or back in the pool a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as e:
            # The pool discards this connection and checks out another (a few attempts).
            raise exc.DisconnectionError("idle connection failed its ping") from e


def end_session(error=None):
    """Teardown, before Flask-SQLAlchemy's: a connection that died after the answer was made (its
    statements and any commit done) fails the rollback that closing the session does. Nothing is left
    to roll back, so the answer stands; closing again only hands the invalidated connection back."""
    try:
        db.session.remove()
    except exc.DBAPIError as e:
        if not e.connection_invalidated:
            raise
        db.session.remove()


def register_connection_loss(app):
    app.teardown_appcontext(end_session)  # teardowns run last-registered first: before the extension's


def rerun_read():
    """The request once more from its before-request hooks (the caller, the session check and the cache
    lookup run again), on a fresh connection; what its view returns. Same request id and start time."""
    db.session.rollback()  # gives the dead connection back; the next statement checks out a fresh one
    request.environ[_RERUN] = True  # on the request itself: g can outlive a request (tests, the CLI)
    started, request_id = g.get("started"), g.get("request_id")
    if request_id:
        request.environ["HTTP_X_REQUEST_ID"] = request_id  # begin_request keeps a client's id
    rv = current_app.preprocess_request()
    if started is not None:
        g.started = started
    return current_app.dispatch_request() if rv is None else rv


def may_rerun() -> bool:
    """A read that has not been run again yet."""
    return request.method in READS and not request.environ.get(_RERUN, False)
