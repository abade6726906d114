"""Dead pooled connections: ping a connection before use when it sat idle in the pool; sessions in UTC.

SQLAlchemy's `pool_pre_ping` pings on every checkout: a round trip and its CPU on every request
(its share of an uncached read: docs/BENCHMARKS.md). Connections die while they
sit unused (a PostgreSQL restart, a firewall's idle timeout), so this pings only a connection idle for
more than DB_PING_AFTER_IDLE_S (1 s by default; 0 restores pre-ping on every checkout). A failed ping
discards the connection and the pool hands out a fresh one, as with pre-ping. What neither covers:
a restart while a connection is in use fails that one statement (only idempotent work may retry it),
and SQLAlchemy then replaces every connection the pool holds.
"""

import time

from sqlalchemy import event, exc


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
