"""`make restore-drill` (scripts/restore_drill.py) against the test database: a dump restores into a
scratch database with every table's row count, a mismatch fails loudly, the scratch database goes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # runs pg_dump and pg_restore


def drill(*args):
    return subprocess.run(
        [
            sys.executable,
            "scripts/restore_drill.py",
            "--database-url",
            os.environ["TEST_DATABASE_URL"],
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def scratch_databases():
    conn = psycopg2.connect(os.environ["TEST_DATABASE_URL"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", ("%\\_drill\\_%",))
            return [name for (name,) in cur.fetchall()]
    finally:
        conn.close()


def test_the_drill_restores_the_test_database_with_every_row(app, demo):
    out = drill()
    assert out.returncode == 0, out.stderr
    assert "OK:" in out.stderr and "all equal" in out.stderr
    assert scratch_databases() == []


def test_a_backup_restores_against_its_own_counts_and_a_mismatch_fails_loudly(app, demo, tmp_path):
    dump = tmp_path / "nightly.dump"
    backup = drill("--backup", str(dump))
    assert backup.returncode == 0, backup.stderr
    counts = json.loads(Path(f"{dump}.counts.json").read_text())
    assert counts["public.students"] >= 750 and counts["public.alembic_version"] == 1

    good = drill("--dump", str(dump))
    assert good.returncode == 0 and "taken with it" in good.stderr, good.stderr

    counts["public.students"] += 1
    counts["public.no_such_table"] = 3
    Path(f"{dump}.counts.json").write_text(json.dumps(counts))
    bad = drill("--dump", str(dump))
    assert bad.returncode == 1
    assert "FAILED" in bad.stderr
    assert (
        f"public.students: {counts['public.students']} rows in the source, {counts['public.students'] - 1} restored"
        in bad.stderr
    )
    assert "public.no_such_table: missing from the restored database" in bad.stderr
    assert scratch_databases() == []

    missing = drill("--dump", str(tmp_path / "nope.dump"))
    assert missing.returncode == 1 and "no such file" in missing.stderr
