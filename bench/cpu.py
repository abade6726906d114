"""`make bench-cpu`: CPU microseconds per request, in process, for the API's hot reads and the
reference apps' equivalents, on the quick scale data.

Requests go through Flask's test client (the same client overhead on both sides) against real
PostgreSQL and Redis; time is this process's CPU (`time.process_time`), not wall time, because wall
time on a shared machine moves far more between identical runs. Each case reports the best of 7
batches. `--profile CASE` prints a CPU-time cProfile of that case instead (PROF_SORT, PROF_N,
PROF_FILTER, PROF_CALLERS: pstats' sort key, rows, a regex on the rows, and whose callers to list).

`--instructions` (`make bench-instr`) counts the instructions each case executes per request under
valgrind's callgrind instead: the same count, to about 1%, whatever else the machine is doing, so a
change can be compared with the code before it on a busy machine (run it in each tree). It counts
this process only (not PostgreSQL, Redis or the kernel), so a saved round trip shows in time, not here.
The shares quoted in docs/BENCHMARKS.md ("Where the time went") come from this script and from py-spy
under `make bench`.
"""

import argparse
import cProfile
import gc
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import run as B  # noqa: E402  (the bench's services, environment and data loading)


def best_cpu_us(fn, batches=7, per_batch=300):
    for _ in range(100):
        fn()
    best = float("inf")
    for _ in range(batches):
        t = time.process_time()
        for _ in range(per_batch):
            fn()
        best = min(best, (time.process_time() - t) / per_batch * 1e6)
    return best


def make_cases(redis_url):
    """The cases, on apps made in this process (the environment names the servers)."""
    import redis

    from app import create_app
    from bench.refapps import app as ref_app

    api, nocache = create_app(), create_app(RESPONSE_CACHE_ENABLED=False)
    c, nc, ref = api.test_client(), nocache.test_client(), ref_app.test_client()
    token = c.post(
        "/api/v1/auth/login", json={"email": "admin@scale-school.test", "password": B.PASSWORD}
    ).get_json()["access_token"]
    h = {"Authorization": f"Bearer {token}"}
    sid = c.get("/api/v1/students?limit=1", headers=h).get_json()["data"][0]["id"]
    cid = c.get("/api/v1/classes?limit=1", headers=h).get_json()["data"][0]["id"]
    redis.Redis.from_url(redis_url).set("bench:ref", c.get(f"/api/v1/students/{sid}", headers=h).data)
    roster = f"/api/v1/classes/{cid}/students?limit=50"
    student = f"/api/v1/students/{sid}"
    term = c.get("/api/v1/terms?limit=1", headers=h).get_json()["data"][0]
    term_to = min(term["end_date"], date.today().isoformat())  # as bench/run.py asks
    attendance = f"/api/v1/students/{sid}/attendance?from={term['start_date']}&to={term_to}"
    # A roll saved again with one mark changed (bench/soak.py's later saves): the marks upsert, the audit
    # row, the cache invalidation and the roll's answer.
    day = date.today()
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    pupils = [s["id"] for s in c.get(roster, headers=h).get_json()["data"]]
    marks = {s: "present" for s in pupils}
    roll = f"/api/v1/classes/{cid}/attendance/{day.isoformat()}"
    turn = iter(range(10**9))

    def roll_call():
        sid = pupils[next(turn) % len(pupils)]
        marks[sid] = "absent" if marks[sid] == "present" else "present"
        body = {"records": [{"student_id": s, "status": st} for s, st in marks.items()]}
        return c.put(roll, json=body, headers=h)

    # The whole roll, two versions in turn (as `make bench`'s rollcall_write sends them): about 34 of 40
    # marks change on every save, each with its audit row and its student's cache versions.
    versions = [
        {"records": [{"student_id": s, "status": st if i % 7 else "absent"} for i, s in enumerate(pupils)]}
        for st in ("present", "late")
    ]

    def roll_call_whole():
        return c.put(roll, json=versions[next(turn) % 2], headers=h)

    cases = {
        "ref_redis_bytes": lambda: ref.get("/redis"),
        "cached_student": lambda: c.get(f"/api/v1/students/{sid}", headers=h),
        "cached_roster": lambda: c.get(roster, headers=h),
        "ref_psycopg2_roster": lambda: ref.get(f"/roster/{cid}"),
        "uncached_roster": lambda: nc.get(roster, headers=h),
        "uncached_student": lambda: nc.get(student, headers=h),
        "uncached_search": lambda: nc.get("/api/v1/students?q=ma&limit=20", headers=h),
        "uncached_term_attendance": lambda: nc.get(attendance, headers=h),
        "roll_call": roll_call,
        "roll_call_whole": roll_call_whole,
    }
    for fn in cases.values():
        assert fn().status_code == 200
    return cases


INSTRUCTION_CASES = (
    "ref_redis_bytes",
    "cached_student",
    "cached_roster",
    "ref_psycopg2_roster",
    "uncached_roster",
    "uncached_student",
    "uncached_search",
    "uncached_term_attendance",
    "roll_call",
    "roll_call_whole",
)


def ratios(out):
    """The ratios whose cases were measured (--cases may leave some out)."""
    if {"ref_redis_bytes", "cached_student", "cached_roster"} <= out.keys():
        out["ratio_cached_read"] = round(
            out["ref_redis_bytes"] / max(out["cached_student"], out["cached_roster"]), 3
        )
    if {"ref_psycopg2_roster", "uncached_roster"} <= out.keys():
        out["ratio_uncached_roster"] = round(out["ref_psycopg2_roster"] / out["uncached_roster"], 3)
    return out


def profile(fn):
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    for _ in range(1000):
        fn()
    prof.disable()
    stats = pstats.Stats(prof).sort_stats(os.environ.get("PROF_SORT", "cumulative"))
    stats.print_stats(*filter(None, [os.environ.get("PROF_FILTER")]), int(os.environ.get("PROF_N", "40")))
    if os.environ.get("PROF_CALLERS"):
        stats.print_callers(os.environ["PROF_CALLERS"])


def frozen():
    """What exists now leaves the collector's view, as gunicorn.conf.py does after the app is loaded:
    otherwise each full collection walks every module and route object, a cost that grows with the
    app's size and that the served app does not pay."""
    gc.collect()
    gc.freeze()


def drive(case, n):
    """Under callgrind, started with instrumentation off: warm up, count `n` requests, stop counting."""
    fn = make_cases(os.environ["REDIS_URL"])[case]
    frozen()
    for _ in range(50):
        fn()
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
    for _ in range(n):
        fn()
    subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)


def instructions(n, names):
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    out = {}
    for case in names:
        p = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null",
             B.PY, __file__, "--drive", case, str(n)],
            env=os.environ, capture_output=True, text=True, cwd=B.ROOT,
        )  # fmt: skip
        found = re.search(r"Collected : (\d+)", p.stderr)
        if p.returncode or not found:
            sys.exit(f"callgrind run of {case} failed:\n{p.stderr[-3000:]}")
        out[case] = round(int(found.group(1)) / n / 1000)  # thousands of instructions per request
        B.log(f"  {case}: {out[case]:,}k instructions per request")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", help="print a CPU-time profile of this case instead")
    ap.add_argument("--instructions", action="store_true", help="count instructions per request (callgrind)")
    ap.add_argument("--requests", type=int, default=200, help="requests counted per case (--instructions)")
    ap.add_argument("--cases", help="comma-separated case names (--instructions; default: all)")
    ap.add_argument("--drive", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.drive:
        return drive(args.drive[0], int(args.drive[1]))
    services = B.Services()
    try:
        env = B.bench_env(services)
        B.load(env, 20_000, 25)
        roster_sql = subprocess.run(
            [B.PY, str(B.ROOT / "bench" / "plans.py"), "--roster-sql"],
            cwd=B.ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        os.environ.update(
            {k: v for k, v in env.items() if k.isupper()},
            REF_REDIS_KEY="bench:ref",
            REF_ROSTER_SQL=roster_sql,
        )
        if args.instructions:
            names = args.cases.split(",") if args.cases else INSTRUCTION_CASES
            out = ratios(instructions(args.requests, names))
            out["unit"] = "thousands of instructions per request (callgrind)"
            print(json.dumps(out, indent=2))
            return
        cases = make_cases(env["REDIS_URL"])
        frozen()
        if args.profile:
            return profile(cases[args.profile])
        print(json.dumps(ratios({name: round(best_cpu_us(fn)) for name, fn in cases.items()}), indent=2))
    finally:
        services.stop()


if __name__ == "__main__":
    main()
