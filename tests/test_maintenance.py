"""Periodic jobs: their locks (real Redis, and the in-process fallback), the beat schedule, index
maintenance on the real PostgreSQL (scratch tables committed on their own connection, dropped after),
and the REINDEX decision on fabricated bloat numbers."""

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import redis as redis_lib
from sqlalchemy import delete, text

from app.core.locks import lock_key, periodic_lock, run_locked
from app.extensions import db
from app.jobs import services as job_services
from app.maintenance import services
from app.notifications import services as mail
from app.notifications.models import OutboxEmail
from config import BEAT_SCHEDULE, redis_db_url
from tasks import exports as export_tasks
from tasks import maintenance as maintenance_tasks
from tasks import notifications as notification_tasks
from tasks import oneroster as oneroster_tasks
from tasks import payments as payment_tasks
from tasks import privacy as privacy_tasks
from tasks import uploads as upload_tasks

MB = 1024 * 1024


# --------------------------------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------------------------------


def test_a_second_overlapping_run_skips_while_the_first_holds_the_lock(app):
    started, finish = threading.Event(), threading.Event()
    results, calls = {}, []

    def slow_job():
        calls.append("first")
        started.set()
        finish.wait(30)
        return {"ran": "first"}

    def first_run():
        with app.app_context():
            results["first"] = run_locked("demo-job", 60, slow_job)

    worker = threading.Thread(target=first_run)
    worker.start()
    assert started.wait(30)
    try:
        second = run_locked("demo-job", 60, lambda: calls.append("second"))
        # the lock lives in Redis db 2 (broker, noeviction) with an expiry, so a killed run frees it
        broker = redis_lib.Redis.from_url(redis_db_url(os.environ["TEST_REDIS_URL"], 2))
        assert broker.pttl(lock_key(app, "demo-job")) > 0
    finally:
        finish.set()
        worker.join(30)
    assert second == {"skipped": "locked", "job": "demo-job"}
    assert calls == ["first"] and results["first"] == {"ran": "first"}
    assert run_locked("demo-job", 60, lambda: "ran again") == "ran again"  # released after the first run


def test_the_beat_task_skips_while_another_run_holds_its_lock(app, demo, tmp_path):
    db.session.execute(delete(OutboxEmail).execution_options(skip_tenant=True))  # others' committed rows
    saved = {k: app.config[k] for k in ("MAIL_BACKEND", "MAIL_DIR")}
    app.config.update(MAIL_BACKEND="file", MAIL_DIR=str(tmp_path))
    try:
        oid = mail.enqueue_email(
            demo["demo_institution_id"],
            "lock:1",
            "a@example.test",
            "export_ready",
            {
                "school": "S",
                "school_email": None,
                "school_phone": None,
                "user_name": "U",
                "kind": "students",
                "kind_label": "students",
                "format": "CSV",
                "row_count": 1,
                "job_id": 1,
                "expires_at": None,
                "expires_display": None,
                "download_url": None,
            },
            "Export",
        )
        db.session.commit()
        with periodic_lock("dispatch_outbox", 60) as held:
            assert held
            skipped = notification_tasks.dispatch_outbox.apply().get()
        assert skipped == {"skipped": "locked", "job": "dispatch_outbox"}
        assert list(tmp_path.glob("*.eml")) == []
        ran = notification_tasks.dispatch_outbox.apply().get()
        assert ran["sent"] == 1 and len(list(tmp_path.glob("*.eml"))) == 1
        assert db.session.get(OutboxEmail, oid, populate_existing=True).status == "sent"
    finally:
        app.config.update(saved)


def test_without_redis_an_in_process_lock_does_the_same(app):
    saved = app.config["REDIS_URL"]
    app.config["REDIS_URL"] = None
    try:
        with periodic_lock("embedded-job", 60) as first:
            with periodic_lock("embedded-job", 60) as second:
                assert first is True and second is False
            assert run_locked("embedded-job", 60, lambda: "ran") == {
                "skipped": "locked",
                "job": "embedded-job",
            }
        assert run_locked("embedded-job", 60, lambda: "ran") == "ran"
    finally:
        app.config["REDIS_URL"] = saved


def test_with_redis_unreachable_a_run_is_skipped_not_doubled(app):
    saved = app.config["REDIS_URL"]
    app.config["REDIS_URL"] = "redis://127.0.0.1:9/0"  # nothing listens on the discard port
    calls = []
    try:
        assert run_locked("any-job", 60, lambda: calls.append(1)) == {"skipped": "locked", "job": "any-job"}
    finally:
        app.config["REDIS_URL"] = saved
    assert calls == []


# --------------------------------------------------------------------------------------------------
# Beat schedule and the thin tasks
# --------------------------------------------------------------------------------------------------


def test_beat_schedule_names_our_tasks_with_their_queues():
    tasks = {
        t.name: t
        for mod in (
            notification_tasks,
            maintenance_tasks,
            export_tasks,
            oneroster_tasks,
            payment_tasks,
            privacy_tasks,
            upload_tasks,
        )
        for t in vars(mod).values()
        if hasattr(t, "delay")
    }
    for entry in BEAT_SCHEDULE.values():
        assert entry["task"] in tasks, entry["task"]
        expected = "notifications" if entry["task"].startswith("tasks.notifications.") else "maintenance"
        assert entry["options"]["queue"] == expected
    by_task = {e["task"]: e for e in BEAT_SCHEDULE.values()}
    assert by_task["tasks.notifications.dispatch_outbox"]["schedule"].total_seconds() == 60
    for name in ("absence_alerts", "fee_reminders"):
        assert by_task[f"tasks.notifications.{name}"]["schedule"].hour == set(range(24))  # hourly, local gate
    assert set(by_task) >= {
        "tasks.maintenance.warm_caches",
        "tasks.maintenance.index_maintenance",
        "tasks.maintenance.cleanup_expired_exports",
        "tasks.oneroster.prune_tombstones",
    }


def test_the_apps_beat_runs_our_schedule_with_one_export_clean_up(app):
    beat = app.extensions["celery"].conf.beat_schedule
    for key, entry in BEAT_SCHEDULE.items():
        assert beat[key]["task"] == entry["task"]
    cleanups = [e["task"] for e in beat.values() if "cleanup" in e["task"]]
    assert cleanups == ["tasks.maintenance.cleanup_expired_exports"]
    assert all(e["task"] in app.extensions["celery"].tasks for e in beat.values())


def test_cache_warming_calls_warm_for_every_school(app, demo, monkeypatch):
    seen = []

    def warm(institution_id):
        seen.append(institution_id)
        if institution_id == demo["hillside_institution_id"]:
            raise RuntimeError("boom")

    monkeypatch.setattr(services, "warm", warm)
    report = maintenance_tasks.warm_caches.apply().get()
    assert demo["demo_institution_id"] in seen and demo["hillside_institution_id"] in seen
    assert demo["demo_institution_id"] in report["warmed"]
    assert "boom" in report["errors"][str(demo["hillside_institution_id"])]  # the others still ran


def test_expired_export_cleanup_calls_the_jobs_service(monkeypatch):
    monkeypatch.setattr(job_services, "remove_expired_exports", lambda: {"removed": 2})
    assert maintenance_tasks.cleanup_expired_exports.apply().get() == {"removed": 2}


# --------------------------------------------------------------------------------------------------
# Index maintenance on PostgreSQL
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def scratch(app):
    """Run SQL committed on its own autocommit connection (the test's transaction is invisible to the
    maintenance connection); drops the tables it made."""
    made = []
    conn = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def run(*statements, table=None):
        if table:
            made.append(table)
        for sql in statements:
            conn.exec_driver_sql(sql)
            # publish this backend's table statistics right after each statement (PostgreSQL 15+: the
            # flush happens when the backend goes idle after this call), so they land in order
            conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")

    yield run
    for table in made:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    conn.close()


def table_stats(name):
    with db.engine.connect() as c:
        return (
            c.execute(
                text("SELECT n_mod_since_analyze, last_analyze FROM pg_stat_user_tables WHERE relname = :n"),
                {"n": name},
            )
            .mappings()
            .one()
        )


def test_index_maintenance_analyzes_the_heavily_modified_table_and_reports(scratch):
    scratch(
        "DROP TABLE IF EXISTS maint_busy",
        "CREATE TABLE maint_busy (id serial PRIMARY KEY, n int, note text)",
        "INSERT INTO maint_busy (n, note) SELECT g, 'row ' || g FROM generate_series(1, 5000) g",
        "ANALYZE maint_busy",
        "UPDATE maint_busy SET n = n + 1 WHERE mod(id, 2) = 0",
        table="maint_busy",
    )
    scratch(
        "DROP TABLE IF EXISTS maint_quiet",
        "CREATE TABLE maint_quiet (id serial PRIMARY KEY, n int)",
        "INSERT INTO maint_quiet (n) SELECT g FROM generate_series(1, 5000) g",
        "ANALYZE maint_quiet",
        "UPDATE maint_quiet SET n = 0 WHERE id <= 10",
        table="maint_quiet",
    )
    assert table_stats("maint_busy")["n_mod_since_analyze"] >= 2500

    report = maintenance_tasks.index_maintenance.apply().get()
    json.dumps(report)  # a Celery result: JSON only

    analyzed = {a["table"]: a for a in report["analyzed"]}
    assert "maint_busy" in analyzed and "maint_quiet" not in analyzed
    busy = analyzed["maint_busy"]
    assert (
        busy["n_mod_since_analyze"] >= 2500
        and f"{busy['n_mod_since_analyze']} rows changed" in busy["reason"]
    )
    after = table_stats("maint_busy")
    assert after["n_mod_since_analyze"] == 0 and after["last_analyze"] is not None
    assert report["bloat_method"] in ("estimate", "pgstatindex") and report["indexes_measured"] > 10
    assert report["reindexed"] == [] and report["reindex_failed"] == []  # nothing here is 10 MB bloated


@pytest.fixture(params=["estimate", "pgstatindex"])
def bloat_method(request, scratch):
    """Both measurements: the statistical estimate, and pgstatindex when pgstattuple can be installed."""
    if request.param == "pgstatindex":
        available = db.session.execute(
            text("SELECT 1 FROM pg_available_extensions WHERE name = 'pgstattuple'")
        ).scalar()
        if not available:
            return "estimate"  # the server lacks contrib: the fallback is what runs
        scratch("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        request.addfinalizer(lambda: scratch("DROP EXTENSION IF EXISTS pgstattuple"))
    return "estimate" if request.param == "estimate" else "pgstatindex"


def test_index_maintenance_rebuilds_only_a_measured_bloated_index_concurrently(scratch, bloat_method):
    # 20,000 rows, then 90% deleted and vacuumed: the indexes keep their pages, mostly empty (~90% bloat)
    scratch(
        "DROP TABLE IF EXISTS maint_bloated",
        "CREATE TABLE maint_bloated (id int PRIMARY KEY, n int NOT NULL)",
        "CREATE INDEX maint_bloated_n ON maint_bloated (n)",
        "INSERT INTO maint_bloated SELECT g, g FROM generate_series(1, 20000) g",
        "DELETE FROM maint_bloated WHERE mod(id, 10) <> 0",
        "VACUUM ANALYZE maint_bloated",
        table="maint_bloated",
    )
    scratch(
        "DROP TABLE IF EXISTS maint_tidy",
        "CREATE TABLE maint_tidy (id int PRIMARY KEY)",
        "INSERT INTO maint_tidy SELECT g FROM generate_series(1, 20000) g",
        "ANALYZE maint_tidy",
        table="maint_tidy",
    )
    size = lambda name: db.session.execute(
        text("SELECT pg_relation_size(CAST(:n AS regclass))"), {"n": name}
    ).scalar()
    before = size("maint_bloated_n")

    tables = ["maint_bloated", "maint_tidy"]
    dry = services.run_index_maintenance(
        bloat_ratio=0.3, bloat_min_bytes=64 * 1024, max_reindex=5, only_tables=tables, dry_run=True
    )
    assert dry["bloat_method"] == bloat_method
    assert {r["index"] for r in dry["reindexed"]} == {"maint_bloated_n", "maint_bloated_pkey"}
    assert all(d["bloat_ratio"] < 0.3 for d in dry["most_bloated"] if d["table"] == "maint_tidy")
    assert size("maint_bloated_n") == before  # a dry run changes nothing

    report = services.run_index_maintenance(
        bloat_ratio=0.3, bloat_min_bytes=64 * 1024, max_reindex=1, only_tables=tables
    )
    (done,) = report["reindexed"]  # max_reindex=1: the most wasteful first
    assert done["index"] in ("maint_bloated_n", "maint_bloated_pkey") and done["bloat_ratio"] > 0.5
    assert "is above 30%" in done["reason"] and done["size_after"] < done["index_bytes"]
    assert report["reindex_failed"] == []


def decide(index_bytes, expected_bytes, **kw):
    args = {"index_name": "ix", "ratio_threshold": 0.3, "min_bytes": 10 * MB, **kw}
    return services.reindex_decision(index_bytes=index_bytes, expected_bytes=expected_bytes, **args)


def test_reindex_decision_on_fabricated_bloat_numbers():
    big = decide(100 * MB, 50 * MB)  # 50% and 50 MB wasted
    assert big["reindex"] and big["bloat_ratio"] == 0.5 and big["bloat_bytes"] == 50 * MB
    assert not decide(100 * MB, 75 * MB)["reindex"]  # 25%: under the ratio
    assert "not above 30%" in decide(100 * MB, 75 * MB)["reason"]
    small = decide(20 * MB, 5 * MB)  # a small index, but 15 MB (75%) wasted
    assert small["reindex"]
    tiny = decide(12 * MB, 4 * MB)  # 67% but 8 MB wasted: not worth a rebuild
    assert not tiny["reindex"] and "bytes is not above" in tiny["reason"]
    assert not decide(100 * MB, 120 * MB)["reindex"]  # smaller than estimated (deduplication)
    assert decide(100 * MB, 120 * MB)["bloat_bytes"] == 0
    assert not decide(100 * MB, 10 * MB, valid=False)["reindex"]
    assert "invalid" in decide(100 * MB, 10 * MB, valid=False)["reason"]
    assert not decide(100 * MB, 10 * MB, unreliable=True)["reindex"]
    assert not decide(0, 0)["reindex"]


def test_plan_reindex_takes_the_most_wasteful_first_up_to_the_limit():
    decisions = [
        decide(100 * MB, 50 * MB, index_name="a"),
        decide(400 * MB, 100 * MB, index_name="b"),
        decide(100 * MB, 90 * MB, index_name="c"),
        decide(60 * MB, 20 * MB, index_name="d"),
    ]
    assert [d["index"] for d in services.plan_reindex(decisions, 2)] == ["b", "a"]
    assert [d["index"] for d in services.plan_reindex(decisions, 10)] == ["b", "a", "d"]


SQLITE = textwrap.dedent("""
    import json
    from flask_migrate import upgrade
    from app import create_app
    from app.maintenance import services
    from app.core.locks import periodic_lock
    app = create_app()
    with app.app_context():
        upgrade()
        report = services.run_index_maintenance()
        with periodic_lock("job", 60) as a:
            with periodic_lock("job", 60) as b:
                locks = [a, b]
    print("RESULT " + json.dumps({"report": report, "locks": locks}))
""")


@pytest.mark.slow  # starts a subprocess
def test_index_maintenance_does_nothing_on_sqlite(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "TEST_DATABASE_URL", "TEST_REDIS_URL", "APP_ENV")
    }
    env["INSTANCE_DIR"] = str(tmp_path / "instance")
    proc = subprocess.run(
        [sys.executable, "-c", SQLITE],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(
        next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT ") :]
    )
    assert out["report"] == {"skipped": "sqlite database: nothing to maintain"}
    assert out["locks"] == [True, False]
