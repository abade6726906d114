"""`make soak`: the production-like stack through a school morning, for SOAK_MINUTES (default 60).

The `make up` processes (gunicorn with gunicorn.conf.py, a Celery worker on every queue, beat, flower
with its task history capped) in production mode on PostgreSQL and Redis (throwaway servers from
scripts/testservices.py unless BENCH_DATABASE_URL / BENCH_REDIS_URL; Redis set to maxmemory
SOAK_REDIS_MAXMEMORY, default the 512mb `make up` sets, with volatile-lru, as docs/DEPLOY.md says), the
scale school loaded as bench/run.py loads it (SOAK_STUDENTS, SOAK_DAYS). Requests arrive at a fixed rate
(SOAK_RATE per second, default 100; open loop: a slow answer does not slow the arrivals, and a request's
latency runs from its intended send time) in a school-morning mix: 80% reads (a student's term
attendance, class rosters, student records, balances; students by a Zipf-like popularity), 15% roll-call
PUTs, 4% export requests, 1% logins. A roll PUT sends the class's whole roll, as teachers' apps save it
while the roll is taken: the class's first save of the morning marks everyone (mostly present), each
later save changes one mark (a late arrival, a correction). The scale school is VACUUM (ANALYZE)d after
loading, as a school's database is in the morning.

Writes bench/results/soak.json: per minute rps, p50_ms, p99_ms, errors, the cache hit ratio of that
minute, p99_ms_by_kind (read, roll, export, login) and `system`, what the box was doing
(bench/soak_probe.py: CPU per process kind, PostgreSQL's busy and waiting backends, autovacuum,
checkpoints); per process kind (web worker, celery worker, beat, flower) rss_cold_mb (before any
load), rss_start_mb (after SOAK_WARMUP_S, 60, of load: code paths loaded, pools filled; growth is
measured from here) and rss_end_mb, summed over the kind's processes; Redis
used_memory start / peak / end and maxmemory; the cache hit ratio overall and per endpoint (from
/api/v1/performance); the jobs still queued or running SOAK_DRAIN_S (120) seconds after the load.
`python bench/soak_table.py` prints the docs' tables from it.

`make capacity` (SOAK_RATES=60,80,…): the same stack and mix, the arrival rate stepping through the
rates, SOAK_STEP_S (120) seconds each, into bench/results/capacity.json: per step the latencies and the
CPU each process kind used, and the highest rate whose p99 stayed under 200 ms with no error, as users
with 10 s of think time between requests (docs/CAPACITY.md).
"""

import bisect
import collections
import contextlib
import http.client as httpclient
import itertools
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import psutil
import psycopg2
import redis as redis_lib

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run import PASSWORD, PY, ROOT, Server, Services, bench_env, free_port, http, load, log  # noqa: E402
from bench.soak_probe import Probe  # noqa: E402

MIX = (("read", 0.80), ("roll", 0.15), ("export", 0.04), ("login", 0.01))


def pick_kind(rng):
    """The next request's kind, by the mix's shares (bench/cache_model.py draws the same stream)."""
    x, acc = rng.random(), 0.0
    for name, share in MIX:
        acc += share
        if x < acc:
            return name
    return MIX[-1][0]


def kind_of(method, path):
    """The mix's request kinds, for the per-kind latencies of each minute."""
    if method == "PUT":
        return "roll"
    if path.endswith("/exports"):
        return "export"
    return "login" if path.endswith("/auth/login") else "read"


def procfile_flower_args():
    """Flower's options as the Procfile gives them (its task cap above all): the soak runs what `make up` runs."""
    line = next(x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith("flower:"))
    return [a for a in line.split() if a.startswith("--max_tasks")]


def stack_env(services):
    env = bench_env(services)
    env.update(
        MAX_RUNNING_EXPORTS="1000000",  # every export request is accepted and runs: the queue is the test
        RATELIMIT_EXPORTS="1000000000 per minute",  # one admin token sends them all
        FLOWER_USER="admin",
        FLOWER_PASSWORD="soak-" + PASSWORD,
        DB_POOL_SIZE=os.environ.get("SOAK_DB_POOL_SIZE", "4"),
    )
    return env


def start(name, args, env):
    logf = open(Path(tempfile.gettempdir()) / f"soak-{name}.log", "w")  # noqa: SIM115 - the process keeps it
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
    )


def rss_mb(procs):
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return round(total / 2**20, 1)


def kinds(web, worker, beat, flower):
    """{kind: [psutil.Process]}: gunicorn's workers (not its master), the Celery worker's main process and
    pool, beat, flower."""
    out = {}
    master = psutil.Process(web.proc.pid)
    out["web_worker"] = master.children(recursive=True)
    w = psutil.Process(worker.pid)
    out["celery_worker"] = [w, *w.children(recursive=True)]
    out["beat"] = [psutil.Process(beat.pid)]
    out["flower"] = [psutil.Process(flower.pid)]
    return out


THINK_S = 10  # a school-morning user's think time between requests (issue 14's model)
P99_LIMIT_MS = 200


def capacity_steps(samples, rates, step_s, system):
    """Per step of the ramp: its latencies and what each process kind spent (from the probe's minutes
    inside the step); and the highest rate whose p99 stayed under P99_LIMIT_MS with no error, as users
    with THINK_S seconds between requests, per core of the box and per core each kind used."""
    steps = []
    for i, rate in enumerate(rates):
        lo, hi = i * step_s, (i + 1) * step_s
        inside = [x for x in samples if lo <= x[0] < hi]
        ok = sorted(x[1] for x in inside if x[2])
        by_kind = collections.defaultdict(list)
        for x in inside:
            if x[2]:
                by_kind[x[3]].append(x[1])
        minutes = [system[m] for m in range(int(lo // 60), int(hi // 60)) if system.get(m)]
        # the step's first minute is left out when it has others: the rate changed during it
        settled = minutes[1:] or minutes
        cpu = collections.defaultdict(float)
        for m in settled:
            for k, v in m["cpu_percent_of_core"].items():
                cpu[k] += v / len(settled)

        def pct(q, rows):
            return round(rows[min(len(rows) - 1, int(q * len(rows)))], 2) if rows else None

        steps.append(
            {
                "rate": rate,
                "users": int(rate * THINK_S),
                "rps": round(len(inside) / step_s, 1),
                "p50_ms": pct(0.5, ok),
                "p99_ms": pct(0.99, ok),
                "errors": len(inside) - len(ok),
                "p99_ms_by_kind": {k: pct(0.99, sorted(v)) for k, v in sorted(by_kind.items())},
                "cpu_percent_of_core": {k: round(v, 1) for k, v in sorted(cpu.items())},
            }
        )
    within = [x for x in steps if x["errors"] == 0 and x["p99_ms"] is not None and x["p99_ms"] < P99_LIMIT_MS]
    best = max(within, key=lambda x: x["rate"]) if within else None
    cores = psutil.cpu_count() or 1
    capacity = {"think_s": THINK_S, "p99_limit_ms": P99_LIMIT_MS, "cores": cores, "highest_rate_within": None}
    if best:
        capacity.update(
            highest_rate_within=best["rate"],
            users=best["users"],
            users_per_core_of_the_box=round(best["users"] / cores),
            users_per_core_by_kind={
                k: round(best["users"] / (v / 100)) for k, v in best["cpu_percent_of_core"].items() if v >= 1
            },
        )
    return steps, capacity


def main():
    minutes = float(os.environ.get("SOAK_MINUTES", 60))
    rate = float(os.environ.get("SOAK_RATE", 100))
    # `make capacity`: the arrival rate steps through SOAK_RATES, SOAK_STEP_S seconds each, instead.
    rates = [float(r) for r in os.environ.get("SOAK_RATES", "").split(",") if r.strip()]
    step_s = float(os.environ.get("SOAK_STEP_S", 120))
    if rates:
        minutes, rate = len(rates) * step_s / 60, max(rates)
    out_name = os.environ.get("SOAK_OUT", "capacity.json" if rates else "soak.json")
    students = int(os.environ.get("SOAK_STUDENTS", 20_000))
    days = int(os.environ.get("SOAK_DAYS", 25))
    drain = int(os.environ.get("SOAK_DRAIN_S", 120))
    maxmemory = os.environ.get("SOAK_REDIS_MAXMEMORY", "512mb")  # scripts/redis_memory.py's default
    warmup = float(os.environ.get("SOAK_WARMUP_S", 60))
    threads = int(os.environ.get("SOAK_THREADS", 64))
    services = Services()
    procs, servers = [], []
    try:
        env = stack_env(services)
        # VACUUM (ANALYZE) after the load, as a school's database is in the morning: otherwise autovacuum
        # starts on the freshly loaded tables during the first minutes and its work lands on the latencies.
        load(env, students, days, vacuum=True)
        r = redis_lib.Redis.from_url(services.redis)
        r.config_set("maxmemory", maxmemory)
        r.config_set("maxmemory-policy", "volatile-lru")
        web = Server("web", "wsgi:app", env)
        servers.append(web)
        celery = str(Path(PY).with_name("celery"))
        worker = start(
            "worker",
            [celery, "-A", "celery_worker", "worker", "-Q", "default,exports,notifications,maintenance",
             "--concurrency", "2", "-l", "warning"],
            env,
        )  # fmt: skip
        beat_dir = tempfile.mkdtemp()
        beat = start(
            "beat",
            [celery, "-A", "celery_worker", "beat", "-l", "warning", "-s", f"{beat_dir}/schedule"],
            env,
        )
        flower_port = str(free_port())
        flower = start(
            "flower",
            [celery, "-A", "celery_worker", "flower", "--address=127.0.0.1", f"--port={flower_port}",
             f"--basic-auth={env['FLOWER_USER']}:{env['FLOWER_PASSWORD']}", *procfile_flower_args()],
            env,
        )  # fmt: skip
        procs += [worker, beat, flower]
        time.sleep(5)  # the worker, beat and flower connect to the broker
        base = web.url + "/api/v1"

        def login():
            _, body = http(
                "POST", base + "/auth/login", body={"email": "admin@scale-school.test", "password": PASSWORD}
            )
            return json.loads(body)["access_token"]

        # An access token lives ACCESS_TOKEN_TTL (15 minutes by default): the soak logs in again every
        # five minutes, and every request takes the newest token.
        auth = {"token": login()}
        token = auth["token"]
        stop_refresh = threading.Event()

        def refresh():
            while not stop_refresh.wait(300):
                try:
                    auth["token"] = login()
                except OSError as exc:
                    log(f"  token refresh failed: {exc}")

        threading.Thread(target=refresh, daemon=True).start()
        _, body = http("GET", base + "/classes?limit=200", token)
        classes = [c["id"] for c in json.loads(body)["data"]]
        rosters = {}
        for cid in classes:
            _, body = http("GET", f"{base}/classes/{cid}/students?limit=200", token)
            rosters[cid] = [s["id"] for s in json.loads(body)["data"]]
        classes = [c for c in classes if rosters[c]]
        pupils = [s for c in classes for s in rosters[c]]
        _, body = http("GET", base + "/terms", token)
        term = json.loads(body)["data"][0]
        day = date.today()
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        log(f"stack up: {len(classes)} classes, {len(pupils)} students; {rate}/s for {minutes} min")

        # Zipf-like popularity: a few students and classes are read far more than the rest.
        weights = [1 / (i + 1) for i in range(len(pupils))]
        cum = list(itertools.accumulate(weights))

        def popular(rng):
            return pupils[bisect.bisect(cum, rng.random() * cum[-1]) % len(pupils)]

        taken: dict[int, dict[int, str]] = {}  # class -> the marks its last save sent

        def request_for(rng):
            kind = pick_kind(rng)
            if kind == "read":
                y = rng.random()
                if y < 0.4:
                    return (
                        "GET",
                        f"/api/v1/students/{popular(rng)}/attendance?from={term['start_date']}&to={term['end_date']}",
                        None,
                    )
                if y < 0.7:
                    return "GET", f"/api/v1/classes/{rng.choice(classes)}/students?limit=200", None
                if y < 0.9:
                    return "GET", f"/api/v1/students/{popular(rng)}", None
                return "GET", f"/api/v1/students/{popular(rng)}/balance", None
            if kind == "roll":
                cid = rng.choice(classes)
                marks = taken.get(cid)
                if marks is None:  # the morning's first save: everyone, mostly present
                    statuses = ("present",) * 17 + ("late", "absent", "absent")
                    marks = taken[cid] = {s: rng.choice(statuses) for s in rosters[cid]}
                else:  # a later save: one mark changes
                    sid = rng.choice(rosters[cid])
                    marks[sid] = rng.choice([x for x in ("present", "late", "absent") if x != marks[sid]])
                records = [{"student_id": s, "status": st} for s, st in marks.items()]
                return "PUT", f"/api/v1/classes/{cid}/attendance/{day.isoformat()}", {"records": records}
            if kind == "export":
                return "POST", "/api/v1/exports", {
                    "kind": "attendance_records", "format": "csv",
                    "params": {"from": day.isoformat(), "to": day.isoformat()},
                }  # fmt: skip
            return "POST", "/api/v1/auth/login", {"email": "admin@scale-school.test", "password": PASSWORD}

        samples = []  # (second since start, latency ms, ok, kind)
        error_kinds: collections.Counter = collections.Counter()
        lock = threading.Lock()
        work: queue.Queue = queue.Queue(maxsize=rate * 10)

        def runner():
            while True:
                item = work.get()
                if item is None:
                    return
                at, kind, (method, path, body) = item
                ok, what = False, "no answer"
                try:
                    # A connection per request: gunicorn's sync workers close each one after the answer, and a
                    # reused one the server already closed would count as an error of ours.
                    c = httpclient.HTTPConnection("127.0.0.1", web.port, timeout=30)
                    data = None if body is None else json.dumps(body)
                    c.request(
                        method,
                        path,
                        body=data,
                        headers={
                            "Authorization": f"Bearer {auth['token']}",
                            "Content-Type": "application/json",
                        },
                    )
                    resp = c.getresponse()
                    resp.read()
                    c.close()
                    ok, what = resp.status < 400, str(resp.status)  # a 401 or 429 is an error too
                except (OSError, httpclient.HTTPException) as exc:
                    what = type(exc).__name__
                # From the request's intended send time, as bench/openloop.py measures: time spent waiting
                # for a free sender (the server is behind) counts.
                elapsed = (time.monotonic() - started - at) * 1000
                with lock:
                    samples.append((at, elapsed, ok, kind))
                    if not ok:
                        error_kinds[f"{method} {path.split('/')[3]} {what}"] += 1

        pool = [threading.Thread(target=runner, daemon=True) for _ in range(threads)]
        for t in pool:
            t.start()

        groups = kinds(web, worker, beat, flower)
        rss_cold = {k: rss_mb(v) for k, v in groups.items()}
        rss_start: dict[str, float] = {}
        redis_start = r.info("memory")["used_memory"]
        # The cache counters once a minute, from a thread of its own (the arrivals keep their pace).
        cache_marks: list[tuple[float, int, int]] = []  # (second since start, hits, misses)
        stop_marks = threading.Event()

        def mark_cache():
            while True:
                try:
                    _, body = http("GET", base + "/performance", auth["token"])
                    c = json.loads(body)["cache"]
                    cache_marks.append((time.monotonic() - started, c["hits"], c["misses"]))
                except (OSError, ValueError, KeyError) as exc:
                    log(f"  cache counters not read: {exc}")
                if stop_marks.wait(60):
                    return

        redis_peak = redis_start
        rng = random.Random(16)
        started = time.monotonic()
        threading.Thread(target=mark_cache, daemon=True).start()
        redis_pid = r.info("server")["process_id"]
        probe = Probe(
            services.db,
            lambda: {"web": [web.proc.pid], "celery worker": [worker.pid], "beat": [beat.pid],
                     "flower": [flower.pid], "redis": [redis_pid]},
            lambda: int((time.monotonic() - started) // 60),
        ).start()  # fmt: skip
        end = started + minutes * 60
        n = 0
        next_sample = started
        due = started
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if due > now:
                time.sleep(min(due - now, 0.05))
                continue
            try:
                req = request_for(rng)
                work.put_nowait((due - started, kind_of(*req[:2]), req))
            except queue.Full:  # the server is behind by ten seconds of arrivals: count as errors
                with lock:
                    samples.append((due - started, 0.0, False, "unsent"))
                    error_kinds["not sent: ten seconds behind"] += 1
            n += 1
            # the next arrival, at the rate of the step it falls in (one rate unless ramping)
            due += 1 / (rates[min(len(rates) - 1, int((due - started) // step_s))] if rates else rate)
            if now >= next_sample:
                redis_peak = max(redis_peak, r.info("memory")["used_memory"])
                next_sample = now + 1
                if not rss_start and now - started >= warmup:
                    rss_start = {k: rss_mb(v) for k, v in kinds(web, worker, beat, flower).items()}
        for _ in pool:
            work.put(None)
        for t in pool:
            t.join(60)
        probe.stop()
        system = probe.per_minute()
        groups = kinds(web, worker, beat, flower)
        rss_end = {k: rss_mb(v) for k, v in groups.items()}
        redis_end = r.info("memory")["used_memory"]
        redis_peak = max(redis_peak, redis_end, 0)
        stop_refresh.set()
        stop_marks.set()
        _, body = http("GET", base + "/performance", login())
        perf = json.loads(body)["cache"]
        log(f"load done ({len(samples)} requests); waiting {drain}s for the queues to drain")
        time.sleep(drain)
        with psycopg2.connect(services.db) as pg, pg.cursor() as cur:
            cur.execute("SELECT status, count(*) FROM jobs GROUP BY status")
            jobs = dict(cur.fetchall())

        per_minute = []
        for m in range(int(-(-minutes // 1))):
            rows = sorted(s[1] for s in samples if m * 60 <= s[0] < (m + 1) * 60 and s[2])
            count = sum(1 for s in samples if m * 60 <= s[0] < (m + 1) * 60)
            errors = count - len(rows)
            span = min(60.0, minutes * 60 - m * 60)

            def pct(q, rows=rows):
                return round(rows[min(len(rows) - 1, int(q * len(rows)))], 2) if rows else None

            a = [c for c in cache_marks if c[0] <= m * 60 + 5]
            b = [c for c in cache_marks if c[0] <= (m + 1) * 60 + 5]
            hit_ratio = None
            if a and b and b[-1] != a[-1]:
                looked = (b[-1][1] - a[-1][1]) + (b[-1][2] - a[-1][2])
                hit_ratio = round((b[-1][1] - a[-1][1]) / looked, 4) if looked else None
            by_kind = collections.defaultdict(list)
            for s in samples:
                if m * 60 <= s[0] < (m + 1) * 60 and s[2]:
                    by_kind[s[3]].append(s[1])
            per_minute.append(
                {
                    "minute": m + 1,
                    "rps": round(count / span, 1),
                    "p50_ms": pct(0.5),
                    "p99_ms": pct(0.99),
                    "errors": errors,
                    "cache_hit_ratio": hit_ratio,
                    "p99_ms_by_kind": {k: pct(0.99, sorted(v)) for k, v in sorted(by_kind.items())},
                    "system": system.get(m),
                }
            )
        out = {
            "config": {
                "minutes": minutes, "rate": rate, "students": students, "days": days, "mix": dict(MIX),
                "redis_maxmemory": maxmemory, "flower": procfile_flower_args(), "threads": threads,
                "warmup_s": warmup,
            },
            "per_minute": per_minute,
            "errors_by_kind": dict(error_kinds),
            "processes": {
                k: {"rss_cold_mb": rss_cold[k], "rss_start_mb": rss_start.get(k), "rss_end_mb": rss_end[k],
                    "growth_percent": round(100 * (rss_end[k] / rss_start[k] - 1), 1) if rss_start.get(k) else None}
                for k in rss_cold
            },
            "redis": {
                "used_memory_start": redis_start, "used_memory_peak": redis_peak, "used_memory_end": redis_end,
                "maxmemory": int(r.config_get("maxmemory")["maxmemory"]),
                "evicted_keys": r.info("stats")["evicted_keys"],
            },
            "cache": {
                "hit_ratio": perf.get("hit_ratio"),
                "endpoints": {
                    ns: {k: v[k] for k in ("hit_ratio", "hit", "miss", "stores", "skips", "invalidations") if k in v}
                    for ns, v in sorted(perf["namespaces"].items())
                },
            },
            "jobs_after_drain": {
                "drain_s": drain,
                "queued": jobs.get("queued", 0),
                "running": jobs.get("running", 0),
                "by_status": jobs,
            },
        }  # fmt: skip
        if rates:
            out["steps"], out["capacity"] = capacity_steps(samples, rates, step_s, system)
        dest = ROOT / "bench" / "results" / out_name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(out, indent=2) + "\n")
        log(f"wrote {dest}")
        print(json.dumps(out, indent=2))
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, 15)
                p.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(p.pid, 9)
        for s in servers:
            s.stop()
        services.stop()


if __name__ == "__main__":
    main()
