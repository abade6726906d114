"""A real `celery worker` on a real (throwaway) Redis: workers die and Redis restarts, and every accepted
export still finishes exactly once: one file, one "done", the attempts counted.

Settings for speed (tests/worker_support.py): visibility timeout 4 s, restore sweep every 1 s, task
heartbeat every 1 s, job lock TTL 3 s, stale-job sweep after 1 s. An export is held "mid-run" by an
ACCESS EXCLUSIVE lock on `subjects`, a table its query reads but the API's request does not.
"""

import io

import openpyxl
import pytest
from sqlalchemy import select, text

from app.extensions import db
from app.jobs.models import Job, StoredFile
from tests.worker_support import VISIBILITY, Worker, poll

pytestmark = pytest.mark.slow  # every test here starts processes


def job_row(app, job_id):
    """Read through a fresh connection: what is committed, as another process sees it."""
    with app.app_context(), db.engine.connect() as conn:
        return conn.execute(select(Job.__table__).where(Job.__table__.c.id == job_id)).mappings().one()


def files_of(app, job_id):
    with app.app_context(), db.engine.connect() as conn:
        return (
            conn.execute(
                select(StoredFile.__table__.c.path)
                .join(Job.__table__, Job.__table__.c.output_file_id == StoredFile.__table__.c.id)
                .where(Job.__table__.c.id == job_id)
            )
            .scalars()
            .all()
        )


class HeldTable:
    """Blocks every query that reads `subjects` until released (a transaction holding a lock on it)."""

    def __init__(self, app):
        with app.app_context():
            self.conn = db.engine.connect()
        self.tx = self.conn.begin()
        self.conn.execute(text("LOCK TABLE subjects IN ACCESS EXCLUSIVE MODE"))

    def release(self):
        if self.tx.is_active:
            self.tx.rollback()
        self.conn.close()


@pytest.fixture
def held(app):
    holder = HeldTable(app)
    yield holder
    holder.release()


def request_export(api, school, fmt="csv"):
    resp = api.post(
        "/exports",
        json={
            "kind": "attendance_records",
            "format": fmt,
            "params": {"from": school["from"], "to": school["to"]},
        },
    )
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["id"]


def assert_done_once(app, client, api, job_id, export_dir, attempts):
    row = job_row(app, job_id)
    assert row["status"] == "done" and row["attempts"] == attempts and row["row_count"] == 6
    files = files_of(app, job_id)
    assert len(files) == 1
    on_disk = sorted(p.name for p in (export_dir / str(row["institution_id"]) / str(job_id)).iterdir())
    assert on_disk == [files[0].split("/")[-1]]  # one file, no half-written leftovers
    job = api.get(f"/exports/{job_id}").get_json()
    data = client.get(job["download_url"]).data
    if job["format"] == "xlsx":
        rows = list(
            openpyxl.load_workbook(io.BytesIO(data), read_only=True).active.iter_rows(values_only=True)
        )
    else:
        rows = data.decode("utf-8-sig").splitlines()
    assert len(rows) == 1 + 6


def test_killed_worker_export_finishes_exactly_once(
    app, committed_school, worker_app, committing, broker, held, tmp_path
):
    app2, client = worker_app
    export_dir = tmp_path / "exports"
    api = committed_school["login"](client)
    first = Worker(broker, export_dir, tmp_path, name="first").start()
    try:
        job_id = request_export(api, committed_school)
        poll(
            lambda job_id=job_id: job_row(app, job_id),
            lambda r: r["status"] == "running" and r["attempts"] == 1,
            20,
            "the first worker to start the export",
            worker=first,
        )
        # Blocked longer than the visibility timeout, the live task is NOT handed out again: its heartbeat
        # keeps its delivery fresh in kombu's unacked index.
        r = broker.client(2)
        poll(
            lambda: r.zrange("unacked_index", 0, -1, withscores=True),
            lambda entries: len(entries) == 1,
            5,
            "the delivery to be tracked as unacknowledged",
        )
        started = r.zrange("unacked_index", 0, -1, withscores=True)[0][1]
        poll(
            lambda: r.zrange("unacked_index", 0, -1, withscores=True)[0][1],
            lambda score: score > started + VISIBILITY,
            VISIBILITY + 5,
            "the heartbeat to refresh the delivery past the visibility timeout",
            worker=first,
        )
        assert r.llen("exports") == 0 and r.hlen("unacked") == 1
        assert job_row(app, job_id)["attempts"] == 1
        first.kill()  # SIGKILL: main process and pool child, mid-export
    finally:
        first.stop()
    held.release()
    assert job_row(app, job_id)["status"] == "running"
    with Worker(broker, export_dir, tmp_path, name="second") as second:
        poll(
            lambda: job_row(app, job_id),
            lambda r: r["status"] == "done",
            VISIBILITY + 25,
            "the export to come back and finish on the new worker",
            worker=second,
        )
    assert_done_once(app, client, api, job_id, export_dir, attempts=2)


def test_killed_pool_process_reruns_at_once(
    app, committed_school, worker_app, committing, broker, held, tmp_path
):
    """The pool child dies (say, the OOM killer); its worker lives: reject_on_worker_lost requeues the task,
    and the dead child's job lock is taken over without waiting for it to expire."""
    app2, client = worker_app
    export_dir = tmp_path / "exports"
    api = committed_school["login"](client)
    with Worker(broker, export_dir, tmp_path, name="pool") as worker:
        job_id = request_export(api, committed_school, fmt="xlsx")
        poll(
            lambda: job_row(app, job_id),
            lambda r: r["status"] == "running",
            20,
            "the export to start",
            worker=worker,
        )
        (child,) = worker.children()
        child.kill()
        held.release()
        poll(
            lambda: job_row(app, job_id),
            lambda r: r["status"] == "done",
            30,
            "the requeued export to finish in a new pool process",
            worker=worker,
        )
        assert worker.proc.poll() is None
    row = job_row(app, job_id)
    assert row["attempts"] == 2
    assert len(files_of(app, job_id)) == 1


def test_redis_restart_loses_no_accepted_export(
    app, committed_school, worker_app, committing, broker, tmp_path
):
    """Redis restarts without persistence (its queue is gone), and later is down while an export is
    requested: both were accepted (202, a committed job row), and the stale-job sweep sends them again."""
    app2, client = worker_app
    export_dir = tmp_path / "exports"
    api = committed_school["login"](client)
    r = broker.client(2)
    lost = request_export(api, committed_school)
    assert r.llen("exports") == 1
    broker.restart()
    assert r.llen("exports") == 0  # the message is gone with the restart
    broker.stop()
    unsent = request_export(api, committed_school, fmt="xlsx")  # Redis down: accepted all the same
    broker.start()
    assert job_row(app, lost)["status"] == job_row(app, unsent)["status"] == "queued"
    with Worker(broker, export_dir, tmp_path, name="after-restart") as worker:
        assert job_row(app, lost)["status"] == "queued"  # nothing in the queue for it
        # what beat sends every minute (jobs-requeue-stale), here at once
        app2.extensions["celery"].tasks["tasks.exports.requeue_stale"].apply_async()
        for job_id in (lost, unsent):
            poll(
                lambda job_id=job_id: job_row(app, job_id),
                lambda row: row["status"] == "done",
                30,
                f"export {job_id} to be re-sent and finished",
                worker=worker,
            )
    for job_id in (lost, unsent):
        assert_done_once(app, client, api, job_id, export_dir, attempts=1)
