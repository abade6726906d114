"""Run a script against the embedded default (no DATABASE_URL/REDIS_URL: SQLite under a fresh
instance dir, in-process cache, limiter and tasks) in a child process, so its settings cannot leak into
the PostgreSQL-backed suite. The script prints one line `RESULT <json>`; that JSON is returned."""

import json
import os
import subprocess
import sys
from pathlib import Path

SERVICE_SETTINGS = (
    "DATABASE_URL",
    "REDIS_URL",
    "TEST_DATABASE_URL",
    "TEST_REDIS_URL",
    "APP_ENV",
    "SMTP_HOST",
    "MAIL_BACKEND",
    "MAIL_DIR",
    "EXPORT_DIR",
)


def run_embedded(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_SETTINGS}
    env.update(INSTANCE_DIR=str(tmp_path / "instance"), LOG_LEVEL="WARNING")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])
