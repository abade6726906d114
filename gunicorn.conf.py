"""gunicorn settings for `web` (Procfile) and `make bench`.

Worker model: sync workers, one more than the cores (3 on the 2-core benchmark machine). Measured with
`make bench-workers` (docs/BENCHMARKS.md, "Worker classes and counts"): against 2, 4 and 6 sync workers
and 2 or 4 gthread workers of 4 threads, 3 sync workers served the uncached roster fastest and had
the lowest p99 on cached reads, and cached throughput was within the run's noise of the best. The
requests are short and CPU-bound (PostgreSQL and Redis answer in well under a millisecond on the same
box), so extra workers or threads mostly add switching. WEB_CONCURRENCY / GUNICORN_WORKER_CLASS /
GUNICORN_THREADS override; re-run `make bench-workers` on other hardware.
"""

import multiprocessing
import os
import shutil
import tempfile

bind = os.environ.get("BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# The app is imported and created once in the master and forked, so a worker that max_requests
# recycles is serving again at once instead of importing and creating the app again (~1 s of CPU:
# docs/BENCHMARKS.md).
preload_app = os.environ.get("GUNICORN_PRELOAD", "true").lower() in ("1", "true", "yes")
backlog = 2048  # a burst of 2,000 connections queues instead of being refused
keepalive = 5
timeout = 30
graceful_timeout = 20
# Recycle workers now and then, bounding any leak. At 20,000 a worker serving ~700 req/s (make bench)
# restarted every half minute, each time with cold per-process caches (compiled SQL, connections).
max_requests = 100000
max_requests_jitter = 10000
accesslog = os.environ.get("GUNICORN_ACCESS_LOG")  # off by default: JSON app logs carry what matters
errorlog = "-"
# Above the app's own bounds (app/core/requestctx.py: 4 KiB URL, 8190-byte header line), so the app
# answers those with its request id; beyond these, gunicorn answers (414/431) through _problem_error.
limit_request_line = 8190  # gunicorn's largest (a larger value is cut to it)
limit_request_field_size = 16380


_GUNICORN_DETAILS = {
    414: f"The request line is longer than {limit_request_line} bytes.",
    431: "A request header is too large, or there are too many headers.",
    500: "An unexpected error occurred.",
}


def _problem_error(sock, status_int, reason, mesg):
    """gunicorn's answer to a request it cannot read (a line or header over the limits above, a
    malformed request) in the API's problem+json shape (app/core/errors.py) instead of its HTML page.
    `mesg` echoes the request's own bytes, so it is logged by gunicorn but not sent."""
    import json
    import uuid

    from gunicorn import util

    from app.core.errors import PROBLEM, TITLES, TYPE_BASE

    body = json.dumps(
        {
            "type": TYPE_BASE + str(status_int),
            "title": TITLES.get(status_int, reason),
            "status": status_int,
            "detail": _GUNICORN_DETAILS.get(status_int, "The server could not read this request."),
            "request_id": uuid.uuid4().hex,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: {PROBLEM}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


def on_starting(server):
    # The one hook before any worker forks: every worker's error writer is the one above.
    from gunicorn import util

    util.write_error = _problem_error


# Prometheus metrics from every worker are aggregated through files in one directory, which must
# exist (and be empty) before anything imports prometheus_client: with preload_app that is the master,
# right after this file is read, so it is prepared here (gunicorn's on_starting would come too late).
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(
    tempfile.gettempdir(), f"schoolhouse-metrics-{os.getpid()}"
)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
if os.environ.get("SCHOOLHOUSE_METRICS_OWNER") != str(os.getpid()):  # not on a HUP reload of this master
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)
    os.environ["SCHOOLHOUSE_METRICS_OWNER"] = str(os.getpid())


def pre_fork(server, worker):
    # Objects created before the fork (the preloaded app: Flask, SQLAlchemy, the models) move to a
    # permanent generation, so the workers' garbage collections do not walk them again and again,
    # and copy-on-write memory stays shared (the recipe in the documentation of gc.freeze).
    if preload_app:
        import gc

        gc.freeze()


def post_fork(server, worker):
    # A forked worker must not share pooled database sockets with the master or its siblings (none
    # are opened before the fork today; this keeps it true). Redis clients re-create theirs on pid change.
    if not preload_app:
        return
    app = server.app.wsgi()
    if "sqlalchemy" in getattr(app, "extensions", {}):
        from app.extensions import db

        with app.app_context():
            for engine in db.engines.values():
                engine.dispose(close=False)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
