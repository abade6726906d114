"""gunicorn settings for `web` (Procfile) and `make bench`.

Worker model: sync workers, 2 per core. The API is short requests against PostgreSQL/Redis on the
same box with sub-millisecond I/O, so threads or greenlets would mostly add switching cost, and 2 per
core keeps both cores busy while one worker waits on a socket. This is reasoning, not yet a
measurement: `make bench` records the settings it ran with, but has not compared worker classes or
counts. WEB_CONCURRENCY / GUNICORN_WORKER_CLASS / GUNICORN_THREADS override.
"""
import multiprocessing
import os
import shutil
import tempfile

bind = os.environ.get("BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# The app is imported and created once in the master and forked, so a worker that max_requests
# recycles is serving again at once (a cold start is ~1 s of CPU, a cost every recycle would pay).
preload_app = os.environ.get("GUNICORN_PRELOAD", "true").lower() in ("1", "true", "yes")
backlog = 2048               # a burst of 2,000 connections queues instead of being refused
keepalive = 5
timeout = 30
graceful_timeout = 20
max_requests = 20000         # recycle workers slowly, bounding any leak
max_requests_jitter = 2000
accesslog = os.environ.get("GUNICORN_ACCESS_LOG")  # off by default: JSON app logs carry what matters
errorlog = "-"

# Prometheus metrics from every worker are aggregated through files in one directory, which must
# exist (and be empty) before the workers import prometheus_client.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.path.join(tempfile.gettempdir(),
                                                                          f"schoolhouse-metrics-{os.getpid()}")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir


def on_starting(server):
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)


def post_fork(server, worker):
    # A forked worker must not share pooled database sockets with the master or its siblings (none
    # are opened before the fork today; this keeps it true). Redis clients re-create theirs on pid change.
    if not preload_app:
        return
    app = server.app.wsgi()
    if "sqlalchemy" in getattr(app, "extensions", {}):
        from app.extensions import db
        with app.app_context():
            db.engine.dispose(close=False)


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)
