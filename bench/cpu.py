"""`make bench-cpu`: CPU microseconds per request, in process, for the API's hot reads and the
reference apps' equivalents, on the quick scale data.

Requests go through Flask's test client (the same client overhead on both sides) against real
PostgreSQL and Redis; time is this process's CPU (`time.process_time`), not wall time, because wall
time on a shared machine moves far more between identical runs. Each case reports the best of 7
batches. `--profile CASE` prints a CPU-time cProfile of that case instead. The shares quoted in
docs/BENCHMARKS.md ("Where the time went") come from this script and from py-spy under `make bench`.
"""

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", help="print a CPU-time profile of this case instead")
    args = ap.parse_args()
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
        import redis

        redis.Redis.from_url(env["REDIS_URL"]).set(
            "bench:ref", c.get(f"/api/v1/students/{sid}", headers=h).data
        )
        roster = f"/api/v1/classes/{cid}/students?limit=50"
        cases = {
            "ref_redis_bytes": lambda: ref.get("/redis"),
            "cached_student": lambda: c.get(f"/api/v1/students/{sid}", headers=h),
            "cached_roster": lambda: c.get(roster, headers=h),
            "ref_psycopg2_roster": lambda: ref.get(f"/roster/{cid}"),
            "uncached_roster": lambda: nc.get(roster, headers=h),
        }
        for fn in cases.values():
            assert fn().status_code == 200
        if args.profile:
            fn = cases[args.profile]
            prof = cProfile.Profile(time.process_time)
            prof.enable()
            for _ in range(1000):
                fn()
            prof.disable()
            stats = pstats.Stats(prof).sort_stats(os.environ.get("PROF_SORT", "cumulative"))
            stats.print_stats(
                *filter(None, [os.environ.get("PROF_FILTER")]), int(os.environ.get("PROF_N", "40"))
            )
            if os.environ.get("PROF_CALLERS"):
                stats.print_callers(os.environ["PROF_CALLERS"])
            return
        out = {name: round(best_cpu_us(fn)) for name, fn in cases.items()}
        out["ratio_cached_read"] = round(
            out["ref_redis_bytes"] / max(out["cached_student"], out["cached_roster"]), 3
        )
        out["ratio_uncached_roster"] = round(out["ref_psycopg2_roster"] / out["uncached_roster"], 3)
        print(json.dumps(out, indent=2))
    finally:
        services.stop()


if __name__ == "__main__":
    main()
