"""The web process as the Procfile starts it: gunicorn with gunicorn.conf.py (preloaded app, several
workers, metrics aggregated across them), on the test database and Redis."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here starts processes

ROOT = Path(__file__).resolve().parents[1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


def test_gunicorn_serves_and_aggregates_metrics_across_workers(app):
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PROMETHEUS_MULTIPROC_DIR", "SCHOOLHOUSE_METRICS_OWNER")
    }
    env.update(APP_ENV="testing", PORT=str(port), WEB_CONCURRENCY="2", DB_POOL_SIZE="2", DB_MAX_OVERFLOW="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert _get(base + "/health/live")[0] == 200
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
                assert time.monotonic() < deadline, "gunicorn did not answer within 30 s"
                time.sleep(0.2)
        for _ in range(40):
            assert _get(base + "/health/ready")[0] == 200
        status, text = _get(base + "/metrics")
        assert status == 200
        served = sum(
            float(v)
            for v in re.findall(
                r'^schoolhouse_http_requests_total\{[^}]*endpoint="health.ready"[^}]*\} (\S+)$', text, re.M
            )
        )
        assert served == 40  # every worker's count, summed
        capacity = float(re.search(r"^schoolhouse_db_pool_capacity (\S+)$", text, re.M).group(1))
        assert capacity in (3, 6)  # pool_size + max_overflow per worker that has connected
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
