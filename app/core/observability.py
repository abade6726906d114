"""Metrics, slow-query and slow-request logs, JSON logs with the request id, pool accounting.

Prometheus metrics work under several gunicorn workers: gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR
before the workers import this module, and /metrics and /api/v1/performance aggregate every worker's
files. Without it (flask run, tests) the in-process registry is used.
"""

import logging
import os
import re
import time
from typing import Any

import orjson
from flask import current_app, g, has_request_context, request
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import event

from app.core.admission import cache_outcome

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)

REQUESTS = Counter("schoolhouse_http_requests_total", "HTTP requests", ["method", "endpoint", "status"])
LATENCY = Histogram(
    "schoolhouse_http_request_duration_seconds", "Request latency", ["endpoint"], buckets=LATENCY_BUCKETS
)
SLOW_REQUESTS = Counter("schoolhouse_http_slow_requests_total", "Requests slower than SLOW_REQUEST_MS")
CACHE = Counter("schoolhouse_cache_requests_total", "Response cache lookups", ["namespace", "result"])
DB_QUERIES = Histogram("schoolhouse_db_query_duration_seconds", "SQL statement time", buckets=LATENCY_BUCKETS)
DB_SLOW = Counter("schoolhouse_db_slow_queries_total", "Statements slower than SLOW_QUERY_MS")
POOL_CHECKOUTS = Counter("schoolhouse_db_pool_checkouts_total", "Connections taken from the pool")
POOL_CONNECTS = Counter("schoolhouse_db_pool_connects_total", "New database connections opened")
POOL_OVERFLOW_CHECKOUTS = Counter(
    "schoolhouse_db_pool_overflow_checkouts_total",
    "Checkouts beyond pool_size (the pool is too small, or requests wait)",
)
POOL_CHECKED_OUT = Gauge("schoolhouse_db_pool_checked_out", "Connections in use", multiprocess_mode="livesum")
POOL_SIZE = Gauge("schoolhouse_db_pool_capacity", "pool_size + max_overflow", multiprocess_mode="livesum")

log = logging.getLogger("schoolhouse.perf")
_STARTED = time.time()


def uptime_seconds():
    return time.time() - _STARTED


# ANSI escape sequences (colours, cursor moves): ESC followed by one character, or by `[`, parameters and
# a final byte (ECMA-48). werkzeug colours its request lines, Celery its banner; in JSON they are noise.
ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    return ANSI_ESCAPE.sub("", text) if "\x1b" in text else text


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the request id (orjson is already here for responses)."""

    def format(self, record):
        data = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": strip_ansi(record.getMessage()),
        }
        if has_request_context():
            data["request_id"] = g.get("request_id")
            data["path"] = request.path
        if record.exc_info:
            data["exc"] = strip_ansi(self.formatException(record.exc_info))
        return orjson.dumps(data).decode()


def configure_logging(app):
    root = logging.getLogger()
    root.setLevel(app.config["LOG_LEVEL"])
    if not any(getattr(h, "schoolhouse", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.schoolhouse = True  # type: ignore[attr-defined]  # marks our handler: configure once
        handler.setFormatter(
            JsonFormatter()
            if app.config.get("LOG_JSON", True)
            else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        )
        root.handlers = [handler]


_children: dict = {}  # label values -> metric child: labels() takes a lock and builds a tuple on every call


def _child(metric, *labels):
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def observe_request(response):
    ctx = g._get_current_object()
    started = getattr(ctx, "started", None)
    if started is None:
        return response
    elapsed = time.perf_counter() - started
    req = request._get_current_object()  # type: ignore[attr-defined]
    endpoint = req.endpoint or "unmatched"
    _child(REQUESTS, req.method, endpoint, response.status_code).inc()
    _child(LATENCY, endpoint).observe(elapsed)
    outcome = cache_outcome()
    if outcome:
        namespace, status = outcome
        _child(CACHE, namespace, "hit" if status.startswith("hit") else "miss").inc()
    if elapsed * 1000 > current_app.config["SLOW_REQUEST_MS"]:
        SLOW_REQUESTS.inc()
        log.warning("slow request %s %s took %.0f ms", req.method, req.path, elapsed * 1000)
    return response


def observe_statement(elapsed, statement, slow_ms):
    """A statement's time in the histogram; a slow one counted and logged with its SQL (statement: the
    SQL, or an object whose str() is)."""
    DB_QUERIES.observe(elapsed)
    if elapsed * 1000 > slow_ms:
        DB_SLOW.inc()
        log.warning("slow query took %.0f ms: %s", elapsed * 1000, " ".join(str(statement).split())[:2000])


def observe_lone_read(elapsed, statement):
    """The reads engine's statements (app/core/tenancy.py times them itself), against the app's
    SLOW_QUERY_MS."""
    observe_statement(elapsed, statement, current_app.config["SLOW_QUERY_MS"])


def instrument_engine(engine, slow_ms, pool_capacity, statements=True):
    """Statement timing + slow-query log, and pool accounting, on one engine (idempotent).

    statements=False leaves out the statement events: for the reads engine, whose lone reads
    app/core/tenancy.py times itself. Any statement listener on an engine makes SQLAlchemy join an event
    dispatcher to every connection it hands out, and walk it at each step of every execution: 132k of
    the 3,349k instructions of an uncached roster read (docs/BENCHMARKS.md)."""
    if getattr(engine, "_schoolhouse_instrumented", False):
        return
    engine._schoolhouse_instrumented = True

    if statements:

        @event.listens_for(engine, "before_cursor_execute")
        def _start(conn, cursor, statement, params, context, executemany):
            conn.info.setdefault("query_start", []).append(time.perf_counter())

        @event.listens_for(engine, "after_cursor_execute")
        def _end(conn, cursor, statement, params, context, executemany):
            observe_statement(time.perf_counter() - conn.info["query_start"].pop(), statement, slow_ms)

    pool = engine.pool

    @event.listens_for(pool, "first_connect")
    def _capacity(dbapi_conn, record):
        # Counted by the process that uses the pool (a gunicorn worker), not by the master that created
        # the app before forking (preload_app) and never connects.
        POOL_SIZE.inc(pool_capacity)

    @event.listens_for(pool, "connect")
    def _connect(dbapi_conn, record):
        POOL_CONNECTS.inc()

    @event.listens_for(pool, "checkout")
    def _checkout(dbapi_conn, record, proxy):
        POOL_CHECKOUTS.inc()
        POOL_CHECKED_OUT.inc()
        size = getattr(pool, "size", None)
        if callable(size) and pool.checkedout() > size():
            POOL_OVERFLOW_CHECKOUTS.inc()

    @event.listens_for(pool, "checkin")
    def _checkin(dbapi_conn, record):
        POOL_CHECKED_OUT.dec()


def pool_status(engine):
    pool = engine.pool
    status: dict[str, Any] = {"class": type(pool).__name__}
    for name in ("size", "checkedin", "checkedout", "overflow"):
        fn = getattr(pool, name, None)
        if callable(fn):
            status[name] = fn()
    max_overflow = getattr(pool, "_max_overflow", 0)
    if "size" in status:
        capacity = status["size"] + max(max_overflow, 0)
        status["capacity"] = capacity
        status["utilisation_percent"] = (
            round(100 * status.get("checkedout", 0) / capacity, 1) if capacity else 0
        )
    return status


def multiprocess_dir():
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")
