"""One Redis for cache, limits, revocations and the broker, with a memory limit: `maxmemory` +
`maxmemory-policy volatile-lru` (docs/DEPLOY.md, section 3). Every response-cache key carries a
TTL and the broker's keys and the revocation set do not, so filling the cache far past the limit evicts
cache entries only: every queued task still runs, and a revoked session stays revoked.

(The API-tier and login counters carry TTLs and so may be evicted under such pressure: a counter starts
again, allowing at most one more window's requests. The revocations are one TTL-less sorted set in
db 1, app/core/revocation.py.)
"""

import pytest

from app.extensions import db
from app.jobs.models import Job
from tests.worker_support import RedisServer, Worker, poll

pytestmark = pytest.mark.slow  # starts redis-server and a Celery worker

MAXMEMORY = 20 * 2**20
EXPORTS = 12


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """The worker fixtures' Redis, here with a small memory limit and the documented policy."""
    server = RedisServer(
        tmp_path_factory.mktemp("redis-lru"), maxmemory="20mb", policy="volatile-lru"
    ).start()
    yield server
    server.stop()


@pytest.fixture
def many_exports(monkeypatch):
    monkeypatch.setenv("MAX_RUNNING_EXPORTS", str(EXPORTS * 2))


def statuses(app, ids):
    with app.app_context(), db.engine.connect() as conn:
        rows = conn.execute(Job.__table__.select().where(Job.__table__.c.id.in_(ids))).mappings().all()
    return sorted(r["status"] for r in rows)


def test_filling_the_cache_past_maxmemory_loses_no_task_and_no_revocation(
    app, many_exports, committed_school, worker_app, committing, broker, tmp_path
):
    app2, client = worker_app
    api = committed_school["login"](client)
    ended = committed_school["login"](client)
    assert ended.post("/auth/logout").status_code in (200, 204)
    assert ended.get("/auth/me").status_code == 401

    # Tasks queued with no worker running: they wait in the broker's list (db 2, no TTL).
    ids = []
    for _ in range(EXPORTS):
        resp = api.post(
            "/exports",
            json={
                "kind": "attendance_records",
                "format": "csv",
                "params": {"from": committed_school["from"], "to": committed_school["to"]},
            },
        )
        assert resp.status_code == 202, resp.get_json()
        ids.append(resp.get_json()["id"])
    broker_db = broker.client(2)
    assert broker_db.llen("exports") == EXPORTS

    # Real cache entries (their tier's TTL), about 2.5 times the memory limit.
    rc = app2.extensions["response_cache"]
    body = b"x" * 10_240
    for batch in range(50):
        pipe = rc.redis.pipeline(transaction=False)
        for i in range(100):
            pipe.set(f"{rc.entry_head(1)}fill.{batch}.{i}", body, ex=300)
        pipe.execute()
    # And real reads through the cache meanwhile.
    assert api.get(f"/classes/{committed_school['class_id']}/students").status_code == 200

    info = broker_db.info()
    assert info["evicted_keys"] > 0, "the cache should have been evicted from"
    assert info["used_memory"] <= MAXMEMORY * 1.05
    assert broker_db.llen("exports") == EXPORTS  # not one queued task evicted

    # A real worker consumes after the fill: every export finishes.
    worker = Worker(broker, tmp_path / "exports", tmp_path, name="afterfill", concurrency=2)
    worker.env["MAX_RUNNING_EXPORTS"] = str(EXPORTS * 2)
    with worker:
        poll(
            lambda: statuses(app, ids),
            lambda s: s == ["done"] * EXPORTS,
            180,
            "every queued export to finish after the fill",
            worker=worker,
        )
    assert broker_db.llen("exports") == 0

    # The revocation survived the eviction: the ended session is still refused, the live one served.
    limiter_db = broker.client(1)
    assert limiter_db.ttl("revoked:sessions") == -1 and limiter_db.zcard("revoked:sessions") >= 1
    assert ended.get("/auth/me").status_code == 401
    assert api.get("/auth/me").status_code == 200
