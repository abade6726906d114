"""Response cache invalidation as fine as the data (app/core/caching.py): a roll invalidates its class's
students' attendance and the school-wide answers, not another class's; a payment its student's balance
and statement; and per endpoint the hits, stores, skips and invalidations, with the rule that stops
storing what is written more than read."""

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from app.academics.models import Enrolment
from app.core.caching import StorePolicy, stats
from app.extensions import db

TODAY = date.today()
LAST_SATURDAY = TODAY - timedelta(days=TODAY.weekday() + 2)  # in the current term, never marked by the seed


def students_of(class_id):
    return list(
        db.session.execute(
            select(Enrolment.student_id).where(Enrolment.class_id == class_id, Enrolment.end_date.is_(None))
        ).scalars()
    )


def put_roll(api, class_id, ids, status="absent", period=7):
    records = [{"student_id": sid, "status": status, "note": None} for sid in ids]
    resp = api.put(
        f"/classes/{class_id}/attendance/{LAST_SATURDAY}", json={"period": period, "records": records}
    )
    assert resp.status_code == 200, resp.get_json()
    return resp


def history(api, sid):
    return api.get(f"/students/{sid}/attendance?from={LAST_SATURDAY}&to={LAST_SATURDAY}")


def test_a_roll_invalidates_its_students_attendance_and_no_other_class(admin, demo):
    a, b = demo["demo_class_id"], demo["other_class_id"]
    in_a, in_b = students_of(a), students_of(b)
    marked, unmarked_in_a = in_a[:2], in_a[2]
    urls = [
        f"/classes/{b}/students?limit=200",
        f"/classes/{a}/students?limit=200",
    ]
    for url in urls:
        admin.get(url)
    for sid in (*marked, unmarked_in_a, in_b[0]):
        assert history(admin, sid).headers["X-Cache"] == "miss"
    absentees = admin.get("/attendance/chronic-absentees")
    assert absentees.status_code == 200

    put_roll(admin, a, marked)

    # Class B: its roster and its students' term attendance are still served from the cache.
    assert admin.get(urls[0]).headers["X-Cache"] == "hit"
    assert history(admin, in_b[0]).headers["X-Cache"] == "hit"
    # Class A's roster does not read attendance; a student of A not on this roll keeps their entry.
    assert admin.get(urls[1]).headers["X-Cache"] == "hit"
    assert history(admin, unmarked_in_a).headers["X-Cache"] == "hit"
    # The marked students' attendance is read fresh and shows the roll.
    for sid in marked:
        after = history(admin, sid)
        assert after.headers["X-Cache"] == "miss"
        assert after.get_json()["totals"]["absent"] == 1
    # School-wide answers over attendance are invalidated by any roll.
    assert admin.get("/attendance/chronic-absentees").headers["X-Cache"] == "miss"


def test_a_roll_that_changes_a_mark_is_never_read_stale(admin, teacher, demo):
    cid = demo["demo_class_id"]
    sid = students_of(cid)[0]
    put_roll(teacher, cid, [sid], status="present", period=8)
    url = f"/students/{sid}/attendance?from={LAST_SATURDAY}&to={LAST_SATURDAY}"
    assert admin.get(url).get_json()["totals"]["present"] == 1
    assert admin.get(url).headers["X-Cache"] == "hit"
    put_roll(teacher, cid, [sid], status="late", period=8)
    body = admin.get(url).get_json()
    assert body["totals"]["late"] == 1 and body["totals"]["present"] == 0


def test_a_roll_saved_again_invalidates_only_the_marks_it_changed(admin, teacher, demo):
    # Apps save the whole roll as each mark is taken: a save that changes one mark must leave the
    # classmates' cached attendance alone, and a save that changes nothing must invalidate nothing.
    cid = demo["demo_class_id"]
    ids = students_of(cid)[:3]
    put_roll(teacher, cid, ids, status="present", period=6)
    for sid in ids:
        history(admin, sid)
    absentees = admin.get("/attendance/chronic-absentees")
    assert absentees.status_code == 200
    before = stats[("student_history", "invalidation")]

    same = put_roll(teacher, cid, ids, status="present", period=6)
    assert same.get_json()["counts"]["unchanged"] == len(ids)
    assert stats[("student_history", "invalidation")] == before
    assert all(history(admin, sid).headers["X-Cache"] == "hit" for sid in ids)
    assert admin.get("/attendance/chronic-absentees").headers["X-Cache"] == "hit"

    records = [{"student_id": sid, "status": "late" if sid == ids[0] else "present"} for sid in ids]
    resp = teacher.put(f"/classes/{cid}/attendance/{LAST_SATURDAY}", json={"period": 6, "records": records})
    assert resp.status_code == 200 and resp.get_json()["counts"]["updated"] == 1
    assert stats[("student_history", "invalidation")] == before + 1
    late = history(admin, ids[0])
    assert late.headers["X-Cache"] == "miss" and late.get_json()["totals"]["late"] == 1
    assert [history(admin, sid).headers["X-Cache"] for sid in ids[1:]] == ["hit", "hit"]
    # A school-wide answer over attendance did change.
    assert admin.get("/attendance/chronic-absentees").headers["X-Cache"] == "miss"


def test_a_payment_invalidates_its_students_balance_and_statement_only(accountant, demo):
    a, b = students_of(demo["demo_class_id"])[:2]
    for sid in (a, b):
        for what in ("balance", "statement"):
            assert accountant.get(f"/students/{sid}/{what}").headers["X-Cache"] == "miss"
            assert accountant.get(f"/students/{sid}/{what}").headers["X-Cache"] == "hit"
    before = accountant.get(f"/students/{a}/balance").get_json()
    paid = accountant.post(
        "/payments",
        json={"student_id": a, "amount": "12.50", "method": "mobile_money", "reference": "SCOPE-PAY-1"},
    )
    assert paid.status_code == 201, paid.get_json()
    after = accountant.get(f"/students/{a}/balance")
    assert after.headers["X-Cache"] == "miss"
    assert float(after.get_json()["paid"]) == float(before["paid"]) + 12.5
    statement = accountant.get(f"/students/{a}/statement")
    assert statement.headers["X-Cache"] == "miss"
    assert any(e["reference"] == "SCOPE-PAY-1" for e in statement.get_json()["entries"])
    for what in ("balance", "statement"):
        assert accountant.get(f"/students/{b}/{what}").headers["X-Cache"] == "hit"


def test_invalidations_are_counted_per_endpoint(admin, demo):
    cid = demo["demo_class_id"]
    ids = students_of(cid)[:3]
    before_hist = stats[("student_history", "invalidation")]
    before_roster = stats[("class_roster", "invalidation")]
    put_roll(admin, cid, ids)
    # One invalidation per student scope bumped; the roster does not read attendance.
    assert stats[("student_history", "invalidation")] - before_hist == len(ids)
    assert stats[("class_roster", "invalidation")] == before_roster


def test_performance_reports_hits_stores_and_invalidations_per_endpoint(admin, demo):
    sid = demo["demo_student_id"]
    history(admin, sid)
    history(admin, sid)
    put_roll(admin, demo["demo_class_id"], [sid])
    perf = admin.get("/performance").get_json()["cache"]
    entry = perf["namespaces"]["student_history"]
    assert entry["hit"] >= 1 and entry["stores"] >= 1 and entry["invalidations"] >= 1
    assert 0 < entry["hit_ratio"] <= 1
    metrics = admin.get("/metrics").get_data(as_text=True)
    for family in ("stores", "invalidations", "skips"):
        assert f"schoolhouse_cache_{family}_total" in metrics


# --- the store rule -----------------------------------------------------------------------------------


def _miss(policy, ns):
    """One miss: True when the policy stores it (and the store is counted as the cache would)."""
    if policy.should_store(ns):
        stats[(ns, "store")] += 1
        return True
    return False


@pytest.fixture
def clock(monkeypatch):
    import app.core.caching as caching

    now = [1000.0]
    monkeypatch.setattr(caching.time, "monotonic", lambda: now[0])
    return now


def test_an_endpoint_written_more_than_read_stops_storing_but_keeps_probing(clock):
    policy, ns = StorePolicy(window_s=60), "test-write-heavy"
    for _ in range(StorePolicy.MIN_EVIDENCE * 3):
        assert _miss(policy, ns)  # not judged before one window: entries just stored had no time to be read
        stats[(ns, "invalidation")] += 1  # each entry is invalidated by a write before anyone reads it
    clock[0] += 60  # one window: the counts halve, still enough evidence, and not one hit
    decisions = [_miss(policy, ns) for _ in range(64)]
    # Only the probes (1 in PROBE_EVERY) are stored.
    assert decisions.count(True) == 64 // StorePolicy.PROBE_EVERY
    assert stats[(ns, "skip")] == 64 - 64 // StorePolicy.PROBE_EVERY


def test_an_endpoint_read_more_than_written_keeps_storing(clock):
    policy, ns = StorePolicy(window_s=60), "test-read-heavy"
    for i in range(200):
        assert _miss(policy, ns)
        stats[(ns, "hit")] += 3
        clock[0] += 1 if i % 2 else 0
    assert stats[(ns, "skip")] == 0


def test_a_cold_cache_keeps_storing_misses_no_write_caused(clock):
    # First reads of many different students miss and are stored before any is read again: fewer hits
    # than stores, but no write invalidated them, so storing is what will make the next reads hit.
    policy, ns = StorePolicy(window_s=60), "test-cold"
    for _ in range(StorePolicy.MIN_EVIDENCE * 3):
        assert _miss(policy, ns)
    clock[0] += 60
    assert all(_miss(policy, ns) for _ in range(64))
    assert stats[(ns, "skip")] == 0


def test_the_decay_lets_an_endpoint_store_again(clock):
    policy, ns = StorePolicy(window_s=60), "test-decay"
    for _ in range(StorePolicy.MIN_EVIDENCE * 2):
        _miss(policy, ns)
        stats[(ns, "invalidation")] += 1
    clock[0] += 60
    assert not _miss(policy, ns)
    clock[0] += 60 * 8  # eight quiet windows: the counts halve eight times, below the evidence floor
    assert _miss(policy, ns)


@pytest.mark.parametrize("window", [0])
def test_window_zero_always_stores(window):
    policy = StorePolicy(window_s=window)
    assert all(_miss(policy, "test-off") for _ in range(100))
