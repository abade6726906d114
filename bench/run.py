"""`make bench` / `make bench-quick`: the API under gunicorn beside reference apps, in one run.

Loads the scale data, starts the API (production config, PostgreSQL, Redis) twice — with and without
the response cache — the reference apps (bench/refapps.py) and the peers (bench/peers/: Django REST
Framework, FastAPI; bench/requirements.txt) under the same gunicorn.conf.py, drives every scenario with
wrk (fixed duration after a warm-up), then the open-loop runs (bench/openloop.py) at 50% and 80% of
the saturation rates wrk measured, and writes bench/results/latest.json and the table in
docs/BENCHMARKS.md. Ratios are taken against references measured in the same run, because these
machines are shared and noisy.
"""

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUA = ROOT / "bench" / "lua"
PY = sys.executable
PASSWORD = "bench-password-1"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, token=None, body=None):
    req = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {token}"} if token else {}),
        },
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, resp.read()


class Services:
    """Throwaway PostgreSQL + Redis (scripts/testservices.py) unless BENCH_DATABASE_URL/BENCH_REDIS_URL."""

    def __init__(self):
        self.dir = None
        if os.environ.get("BENCH_DATABASE_URL") and os.environ.get("BENCH_REDIS_URL"):
            self.db, self.redis = os.environ["BENCH_DATABASE_URL"], os.environ["BENCH_REDIS_URL"]
            return
        self.dir = tempfile.mkdtemp(prefix="schoolhouse-bench-", dir="/tmp")
        subprocess.run(
            [PY, str(ROOT / "scripts" / "testservices.py"), "start", "--dir", self.dir],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        env = dict(line.split("=", 1) for line in Path(self.dir, "env").read_text().split())
        self.db, self.redis = env["TEST_DATABASE_URL"], env["TEST_REDIS_URL"]

    def stop(self):
        if self.dir:
            subprocess.run(
                [PY, str(ROOT / "scripts" / "testservices.py"), "stop", "--dir", self.dir],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )


class Server:
    def __init__(self, name, target, env, port=None):
        self.name, self.port = name, port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [PY, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), target],
            cwd=ROOT,
            env={**env, "PORT": str(self.port), "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp()},
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tempfile.gettempdir()) / f"bench-{name}.log", "w"),  # noqa: SIM115 - the server keeps it
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        probe = "/health/live" if target == "wsgi:app" else "/ping"  # the references and the peers
        while True:
            try:
                urllib.request.urlopen(self.url + probe, timeout=1)
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start; see /tmp/bench-{name}.log")
                time.sleep(0.2)

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def wrk(url, script, seconds, connections=64, threads=2, env=None, warmup=2):
    base = {**os.environ, "BENCH_LUA": str(LUA), **(env or {})}
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "--timeout", "5s", "-s", str(LUA / script)]
    if warmup:
        subprocess.run(cmd + ["-d", f"{warmup}s", url], env=base, capture_output=True, text=True)
    out = subprocess.run(
        cmd + ["-d", f"{seconds}s", "--latency", url], env=base, capture_output=True, text=True
    ).stdout
    match = re.search(r"WRKJSON (\{.*\})", out)
    if not match:
        raise RuntimeError(f"wrk gave no result for {url}:\n{out}")
    r = json.loads(match.group(1))
    secs = r["duration_us"] / 1e6
    return {
        "rps": round(r["requests"] / secs, 1),
        "p50_ms": round(r["p50_us"] / 1000, 2),
        "p99_ms": round(r["p99_us"] / 1000, 2),
        "errors": r["errors"],
        "requests": r["requests"],
        "connections": connections,
    }


def interleaved(cases, seconds, rounds=3, connections=64):
    """Run each (name, url, script, env) case for seconds/rounds, round-robin, `rounds` times, and merge:
    a burst of noise from a neighbour on this shared machine then lands on every case alike instead of
    on whichever ran during it. req/s = all requests / all time; p50/p99 = median over the rounds."""
    per = max(2, round(seconds / rounds))
    runs = {name: [] for name, *_ in cases}
    for _name, url, script, env in cases:  # one warm-up each, before any round
        wrk(url, script, 1, connections=connections, env=env, warmup=0)
    for _ in range(rounds):
        for name, url, script, env in cases:
            runs[name].append(wrk(url, script, per, connections=connections, env=env, warmup=0))
    out = {}
    for name, rs in runs.items():
        secs = sum(r["requests"] / r["rps"] for r in rs if r["rps"])
        out[name] = {
            "rps": round(sum(r["requests"] for r in rs) / secs, 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in rs), 2),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in rs), 2),
            "errors": sum(r["errors"] for r in rs),
            "requests": sum(r["requests"] for r in rs),
            "rounds_rps": [r["rps"] for r in rs],
            "connections": connections,
        }
    return out


def cache_counts(server, token):
    _, body = http("GET", server.url + "/api/v1/performance", token)
    c = json.loads(body)["cache"]
    return c["hits"], c["misses"]


def bench_env(services):
    """The API's production config on the throwaway services; limits high enough never to answer 429."""
    env = {
        **os.environ,
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": services.db,
        "REDIS_URL": services.redis,
        "DEMO_PASSWORD": PASSWORD,
        "RATELIMIT_API": "1000000000 per minute",
        "RATELIMIT_SENSITIVE": "1000000000 per minute",
        "LOG_LEVEL": "WARNING",
        "DB_POOL_SIZE": "4",
        "DB_MAX_OVERFLOW": "4",
        "PYTHONPATH": str(ROOT),
        "SLOW_QUERY_MS": "60000",
    }
    for k in ("TEST_DATABASE_URL", "TEST_REDIS_URL"):
        env.pop(k, None)
    return env


def load(env, students, days, vacuum=False):
    flask = [PY, "-m", "flask", "--app", "wsgi"]
    log(f"schema and scale data: {students:,} students x {days} days")
    subprocess.run(flask + ["db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    t0 = time.time()
    subprocess.run(
        flask
        + ["seed", "scale", "--students", str(students), "--attendance-days", str(days)]
        + (["--vacuum"] if vacuum else []),
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    load_seconds = round(time.time() - t0, 1)
    log(f"loaded in {load_seconds}s")
    return load_seconds


def bench_script(env, name, *args):
    """The stdout of bench/<name>.py run with the bench's environment (it fails the run if the script does)."""
    script = str(ROOT / "bench" / f"{name}.py")
    return subprocess.run(
        [PY, script, *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout


def replay_reference(env, servers, tmp, search_paths, att_paths, rolls):
    """bench/refapps.py serving /replay: the statements the API ran for each search, term attendance
    and roll PUT (captured in process by `bench/plans.py --replay-sql`; the rolls are written once by
    it), and the request files that ask for them in the same order as the API's."""
    requests = {
        "search": [["GET", p, None] for p in search_paths],
        "att": [["GET", p, None] for p in att_paths],
        "roll": [["PUT", path, roll] for path, roll in rolls],
    }
    (tmp / "replay_requests.json").write_text(json.dumps(requests))
    captured = bench_script(env, "plans", "--replay-sql", str(tmp / "replay_requests.json"))
    (tmp / "replay.json").write_text(captured)
    (tmp / "ref_search.txt").write_text("\n".join(f"/replay/search/{i}" for i in range(len(search_paths))))
    (tmp / "ref_att.txt").write_text("\n".join(f"/replay/att/{i}" for i in range(len(att_paths))))
    (tmp / "ref_roll.txt").write_text("\n".join(f"/replay/roll/{i}\t{{}}" for i in range(len(rolls))))
    ref = Server("refreplay", "bench.refapps:app", {**env, "REF_REPLAY_FILE": str(tmp / "replay.json")})
    servers.append(ref)
    return ref


def start_stack(env, services, servers, peers=False):
    """The API (cache on), the API with the response cache off, and the reference apps serving the
    API's own bytes and running the API's own roster SQL; with peers, Django REST Framework and FastAPI
    serving the same student (bench/peers/); plus a token and ids to ask for."""
    st = {"api": Server("api", "wsgi:app", env)}
    servers.append(st["api"])
    st["nocache"] = Server("api-nocache", "wsgi:app", {**env, "RESPONSE_CACHE_ENABLED": "false"})
    servers.append(st["nocache"])
    url = st["api"].url
    _, body = http(
        "POST", url + "/api/v1/auth/login", body={"email": "admin@scale-school.test", "password": PASSWORD}
    )
    token = st["token"] = json.loads(body)["access_token"]
    _, body = http("GET", url + "/api/v1/classes?limit=200", token)
    st["classes"] = [c["id"] for c in json.loads(body)["data"]]
    _, body = http("GET", url + "/api/v1/students?limit=200", token)
    st["students"] = json.loads(body)["data"]
    st["sid"], st["cid"] = st["students"][0]["id"], st["classes"][0]
    _, body = http("GET", url + "/api/v1/terms", token)
    st["term"] = json.loads(body)["data"][0]
    _, student_bytes = http("GET", f"{url}/api/v1/students/{st['sid']}", token)
    import redis as redis_lib

    redis_lib.Redis.from_url(services.redis).set("bench:ref", student_bytes)
    roster_sql = bench_script(env, "plans", "--roster-sql").strip()
    st["ref"] = Server(
        "refapps", "bench.refapps:app", {**env, "REF_REDIS_KEY": "bench:ref", "REF_ROSTER_SQL": roster_sql}
    )
    servers.append(st["ref"])
    if peers:
        # Django REST Framework: gunicorn sync workers (gunicorn.conf.py, as the API), persistent
        # connections. FastAPI: the same gunicorn settings with uvicorn workers, its best server setup.
        st["drf"] = Server("peer-drf", "bench.peers.drfapp.wsgi:application", env)
        servers.append(st["drf"])
        st["fastapi"] = Server(
            "peer-fastapi",
            "bench.peers.fastapi_app:app",
            {**env, "GUNICORN_WORKER_CLASS": "uvicorn_worker.UvicornWorker", "GUNICORN_THREADS": "1"},
        )
        servers.append(st["fastapi"])
        # The same JSON as the API's (the API answers with the response cache's bytes, the same).
        st["peer_bytes_equal"] = {}
        for peer in ("drf", "fastapi"):
            _, peer_bytes = http("GET", f"{st[peer].url}/students/{st['sid']}")
            st["peer_bytes_equal"][peer] = json.loads(peer_bytes) == json.loads(student_bytes)
            if not st["peer_bytes_equal"][peer]:
                log(
                    f"  {peer} answers other JSON than the API: {peer_bytes[:300]!r} vs {student_bytes[:300]!r}"
                )
    return st


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter runs and a smaller school (< 5 minutes)")
    ap.add_argument("--workers", action="store_true", help="compare gunicorn worker classes and counts")
    args = ap.parse_args()
    if args.workers:
        return sweep()
    quick = args.quick
    students = int(os.environ.get("BENCH_STUDENTS", 20_000 if quick else 100_000))
    days = int(os.environ.get("BENCH_DAYS", 25 if quick else 50))
    seconds = int(os.environ.get("BENCH_SECONDS", 6 if quick else 15))
    rounds = 2 if quick else 3
    ramp = [64, 256, 1000, 2000] if quick else [64, 128, 256, 512, 1000, 1500, 2000]
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    services = Services()
    servers = []
    started = time.time()
    try:
        env = bench_env(services)
        load_seconds = load(env, students, days)
        plans = bench_script(env, "plans")
        # OneRoster 1.2 (issue 15): the plans of every filter and sort, on the same data.
        oneroster_plans = bench_script(env, "oneroster_plans")
        st = start_stack(env, services, servers, peers=True)
        api, nocache, ref, token = st["api"], st["nocache"], st["ref"], st["token"]
        drf, fastapi, same_json = st["drf"], st["fastapi"], st["peer_bytes_equal"]
        # ... and a client paging through every user, limit=1000, against the served API.
        paging = json.loads(bench_script(env, "oneroster_plans", "--paging", "--base-url", api.url))
        log(f"  OneRoster: {paging['users']:,} users in {paging['pages']} pages, {paging['seconds']} s")
        classes, students_page, sid, cid, term = (
            st[k] for k in ("classes", "students", "sid", "cid", "term")
        )

        tmp = Path(tempfile.mkdtemp())
        results = {}

        def run(name, url, script="get.lua", **kw):
            log(f"{name}: {url.split('127.0.0.1')[1][:70]}")
            results[name] = wrk(url, script, seconds, **kw)
            log(
                f"  {results[name]['rps']} req/s p50 {results[name]['p50_ms']} ms p99 {results[name]['p99_ms']} ms "
                f"errors {results[name]['errors']}"
            )

        tok = {"TOKEN": token}
        # The ratio scenarios and their references, interleaved in rounds (see interleaved()).
        log(f"references and the cached/uncached reads, interleaved in {rounds} rounds")
        results.update(
            interleaved(
                [
                    ("ref_ping", ref.url + "/ping", "get.lua", {}),
                    ("ref_redis_bytes", ref.url + "/redis", "get.lua", {}),
                    ("cached_student", f"{api.url}/api/v1/students/{sid}", "get.lua", tok),
                    ("cached_roster", f"{api.url}/api/v1/classes/{cid}/students?limit=50", "get.lua", tok),
                    ("ref_psycopg2_roster", f"{ref.url}/roster/{cid}", "get.lua", {}),
                    (
                        "uncached_roster",
                        f"{nocache.url}/api/v1/classes/{cid}/students?limit=50",
                        "get.lua",
                        tok,
                    ),
                    # One student by id with the response cache off (auth, tenant scope, guardians)
                    # beside the peers serving the same JSON without auth (their best case).
                    ("uncached_student", f"{nocache.url}/api/v1/students/{sid}", "get.lua", tok),
                    ("peer_drf_student", f"{drf.url}/students/{sid}", "get.lua", {}),
                    ("peer_fastapi_student", f"{fastapi.url}/students/{sid}", "get.lua", {}),
                ],
                seconds,
                rounds,
            )
        )
        for name, r in results.items():
            log(
                f"  {name}: {r['rps']} req/s p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms errors {r['errors']} "
                f"(rounds {r['rounds_rps']})"
            )

        prefixes = [
            "a",
            "b",
            "ca",
            "de",
            "el",
            "fa",
            "ga",
            "ha",
            "jo",
            "ka",
            "le",
            "ma",
            "na",
            "o",
            "pa",
            "ro",
            "sa",
            "ta",
            "wa",
            "ya",
            "mo",
            "li",
            "an",
            "ch",
        ]
        search_paths = [f"/api/v1/students?q={p}&limit=20" for p in prefixes]
        (tmp / "search.txt").write_text("\n".join(search_paths))
        term_from, term_to = term["start_date"], min(term["end_date"], date.today().isoformat())
        att_paths = [
            f"/api/v1/students/{s['id']}/attendance?from={term_from}&to={term_to}" for s in students_page
        ]
        (tmp / "att.txt").write_text("\n".join(att_paths))
        # Roll-call write: whole rolls for 40 different classes (as a school's teachers send them), two
        # versions each so rows really change; one class's roll is not written by 64 clients at once.
        day = date.today() - timedelta(days=1)
        while day.weekday() >= 5:
            day -= timedelta(days=1)
        rolls = []
        for c in classes[:40]:
            _, body = http("GET", f"{api.url}/api/v1/classes/{c}/students?limit=200", token)
            ids = [r["id"] for r in json.loads(body)["data"]]
            for st in ("present", "late"):
                roll = {
                    "records": [
                        {"student_id": s, "status": st if i % 7 else "absent", "note": None}
                        for i, s in enumerate(ids)
                    ]
                }
                rolls.append((f"/api/v1/classes/{c}/attendance/{day.isoformat()}", roll))
        (tmp / "roll.txt").write_text("\n".join(f"{path}\t{json.dumps(roll)}" for path, roll in rolls))
        refsql = replay_reference(env, servers, tmp, search_paths, att_paths, rolls)

        # Search and term attendance as clients see them (production config: the response cache is on),
        # and the same requests against the cache-off instance, which shows what a miss costs.
        search = {**tok, "PATHS_FILE": str(tmp / "search.txt"), "ZIPF_S": "0"}
        att = {**tok, "PATHS_FILE": str(tmp / "att.txt"), "ZIPF_S": "0"}
        run("student_search", api.url, "paths.lua", env=search)
        run("student_term_attendance", api.url, "paths.lua", env=att)
        # The cache-off reads and roll call beside the bare psycopg2 replay of their own statements,
        # interleaved like the ratios above.
        log(f"cache-off search, term attendance and roll call beside their psycopg2 replays, {rounds} rounds")
        results.update(
            interleaved(
                [
                    ("student_search_cache_off", nocache.url, "paths.lua", search),
                    (
                        "ref_psycopg2_search",
                        refsql.url,
                        "paths.lua",
                        {**search, "PATHS_FILE": str(tmp / "ref_search.txt")},
                    ),
                    ("student_term_attendance_cache_off", nocache.url, "paths.lua", att),
                    (
                        "ref_psycopg2_term_attendance",
                        refsql.url,
                        "paths.lua",
                        {**att, "PATHS_FILE": str(tmp / "ref_att.txt")},
                    ),
                    (
                        "rollcall_write",
                        api.url,
                        "put.lua",
                        {"TOKEN": token, "WRITE_BODIES": str(tmp / "roll.txt"), "WRITE_METHOD": "PUT"},
                    ),
                    (
                        "ref_psycopg2_rollcall",
                        refsql.url,
                        "put.lua",
                        {"TOKEN": token, "WRITE_BODIES": str(tmp / "ref_roll.txt"), "WRITE_METHOD": "POST"},
                    ),
                ],
                seconds,
                rounds,
            )
        )
        for name in ("search", "term_attendance", "rollcall"):
            r = results[f"ref_psycopg2_{name}"]
            log(f"  ref_psycopg2_{name}: {r['rps']} req/s p99 {r['p99_ms']} ms errors {r['errors']}")

        # Zipf read mix over students and rosters; hit ratio from the API's own counters.
        paths = [f"/api/v1/students/{s['id']}" for s in students_page]
        paths += [f"/api/v1/classes/{c}/students?limit=50" for c in classes]
        (tmp / "zipf.txt").write_text("\n".join(paths))
        zenv = {**tok, "PATHS_FILE": str(tmp / "zipf.txt"), "ZIPF_S": "1.1"}
        wrk(api.url, "paths.lua", max(5, seconds), env=zenv, warmup=0)  # warm-up fills the hot keys
        h0, m0 = cache_counts(api, token)
        run("zipf_read_mix", api.url, "paths.lua", env=zenv, warmup=0)
        h1, m1 = cache_counts(api, token)
        hit_ratio = round((h1 - h0) / max(1, (h1 - h0) + (m1 - m0)), 4)
        hit_counts = {"hits": h1 - h0, "misses": m1 - m0}
        log(f"  cache hit ratio {hit_ratio}")

        (tmp / "patch.txt").write_text(
            "\n".join(json.dumps({"email": f"s{i}@scale-school.test"}) for i in range(50))
        )
        run(
            "mixed_read_write",
            api.url,
            "paths.lua",
            env={
                **zenv,
                "WRITE_PCT": "5",
                "WRITE_PATH": f"/api/v1/students/{students_page[-1]['id']}",
                "WRITE_BODIES": str(tmp / "patch.txt"),
            },
        )

        ramp_results = []
        # BENCH_EXTRAS=0: the scenarios above only (a repeat run for the median of the ratios); the
        # open-loop runs, the ramp, the exports, the rollover and the announcement fan-out are skipped.
        extras = os.environ.get("BENCH_EXTRAS", "1") != "0"
        open_loop = []
        if extras:
            (tmp / "ol_student.txt").write_text(f"/api/v1/students/{sid}\n")
            (tmp / "ol_roster.txt").write_text(f"/api/v1/classes/{cid}/students?limit=50\n")
            open_loop = run_open_loop(
                [
                    ("student_read_cache_off", nocache.url, tmp / "ol_student.txt", "uncached_student"),
                    ("roster_cache_off", nocache.url, tmp / "ol_roster.txt", "uncached_roster"),
                    ("rollcall_write", api.url, tmp / "roll.txt", "rollcall_write"),
                ],
                results,
                token,
                seconds,
            )
        for c in ramp if extras else ():
            log(f"ramp {c} connections")
            r = wrk(
                f"{api.url}/api/v1/students/{sid}",
                "get.lua",
                max(3, seconds // 2),
                connections=c,
                threads=2,
                env=tok,
                warmup=1,
            )
            ramp_results.append(r)
            log(f"  {r['rps']} req/s p99 {r['p99_ms']} ms errors {r['errors']}")

        for server in servers:  # the export cases get the machine to themselves
            server.stop()
        servers.clear()
        if extras:
            announcements = run_extras(env, quick)
        else:
            announcements = None
            for stale in ("exports.json", "rollover.json"):
                (ROOT / "bench" / "results" / stale).unlink(missing_ok=True)
        ratios = {
            "cached_read": round(
                min(results["cached_student"]["rps"], results["cached_roster"]["rps"])
                / results["ref_redis_bytes"]["rps"],
                3,
            ),
            "cached_student": round(results["cached_student"]["rps"] / results["ref_redis_bytes"]["rps"], 3),
            "cached_roster": round(results["cached_roster"]["rps"] / results["ref_redis_bytes"]["rps"], 3),
            "uncached_roster": round(
                results["uncached_roster"]["rps"] / results["ref_psycopg2_roster"]["rps"], 3
            ),
            "uncached_student_vs_drf": round(
                results["uncached_student"]["rps"] / results["peer_drf_student"]["rps"], 3
            ),
            "uncached_student_vs_fastapi": round(
                results["uncached_student"]["rps"] / results["peer_fastapi_student"]["rps"], 3
            ),
            "search_cache_off_vs_psycopg2": round(
                results["student_search_cache_off"]["rps"] / results["ref_psycopg2_search"]["rps"], 3
            ),
            "term_attendance_cache_off_vs_psycopg2": round(
                results["student_term_attendance_cache_off"]["rps"]
                / results["ref_psycopg2_term_attendance"]["rps"],
                3,
            ),
            "rollcall_vs_psycopg2": round(
                results["rollcall_write"]["rps"] / results["ref_psycopg2_rollcall"]["rps"], 3
            ),
        }
        out = {
            "scenarios": {
                k: {f: v[f] for f in ("rps", "p50_ms", "p99_ms", "errors")} for k, v in results.items()
            },
            "ratios": ratios,
            "cache_hit_ratio": hit_ratio,
            "cache_hit_counts": hit_counts,
            "peers": {
                "drf": "Django REST Framework RetrieveAPIView + ModelSerializer (guardians prefetched), no auth, "
                "no middleware, DEBUG off, CONN_MAX_AGE=None; gunicorn sync workers (gunicorn.conf.py)",
                "fastapi": "FastAPI sync endpoint, SQLAlchemy Core, response_model, no auth; gunicorn with "
                "uvicorn_worker.UvicornWorker (uvloop, httptools)",
                "same_json_as_api": same_json,
            },
            "open_loop": open_loop,
            "oneroster_paging": paging,
            "ramp": [
                {f: r[f] for f in ("connections", "rps", "p50_ms", "p99_ms", "errors")} for r in ramp_results
            ],
            "setup": {
                "students": students,
                "attendance_days": days,
                "seconds_per_scenario": seconds,
                "connections": 64,
                "load_seconds": load_seconds,
                "quick": quick,
                "rounds": rounds,
                "gunicorn": gunicorn_settings(),
                "cpus": os.cpu_count(),
                "command": "make bench-quick" if quick else "make bench",
                "date": time.strftime("%Y-%m-%d %H:%M"),
            },
            "targets": {
                "cached_read_ratio": 0.6,
                "uncached_roster_ratio": 0.5,
                "uncached_student_vs_drf": 1.0,
                "uncached_student_vs_fastapi": 0.7,
                "search_cache_off_vs_psycopg2": 0.5,
                "term_attendance_cache_off_vs_psycopg2": 0.5,
                "rollcall_vs_psycopg2": 0.5,
                "rollcall_p99_ms_64_connections": 200,
                "open_loop_50pct_read_p99_ms": 50,
                "open_loop_50pct_rollcall_p99_ms": 200,
                "read_p99_ms": 50,
                "cache_hit_ratio": 0.95,
            },
        }
        extra = ROOT / "bench" / "results" / "exports.json"
        if extra.exists():
            out["exports"] = json.loads(extra.read_text())
        if announcements:
            out["announcements"] = announcements
        rollover = ROOT / "bench" / "results" / "rollover.json"
        if rollover.exists():
            out["rollover"] = json.loads(rollover.read_text())
        (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
        (ROOT / "bench" / "results" / "latest.json").write_text(json.dumps(out, indent=2) + "\n")
        write_markdown(out, plans, oneroster_plans)
        print(table(out))
        log(f"done in {round(time.time() - started)} s")
    finally:
        for s in servers:
            s.stop()
        services.stop()


OPEN_LOOP_FRACTIONS = (0.5, 0.8)


def run_open_loop(scenarios, results, token, seconds):
    """Each (name, base url, requests file, wrk scenario) at OPEN_LOOP_FRACTIONS of the req/s wrk
    measured for it at 64 connections (its saturation rate), constant arrival rate, latency from the
    intended send time (bench/openloop.py); each run seconds long."""
    runs = []
    for name, url, requests_file, saturated_by in scenarios:
        saturation = results[saturated_by]["rps"]
        if saturation <= 0:  # wrk saw no answer within its run: no rate to take a share of
            log(f"open loop {name}: skipped, {saturated_by} measured 0 req/s")
            continue
        for fraction in OPEN_LOOP_FRACTIONS:
            rate = max(0.5, round(saturation * fraction, 1))
            log(f"open loop {name}: {rate} req/s ({round(fraction * 100)}% of {saturation})")
            proc = subprocess.run(
                [
                    PY,
                    str(ROOT / "bench" / "openloop.py"),
                    "--url",
                    url,
                    "--requests",
                    str(requests_file),
                    "--rate",
                    str(rate),
                    "--seconds",
                    str(seconds),
                    "--token",
                    token,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                log(f"  open loop failed: {proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout)
            runs.append({"scenario": name, "fraction": fraction, "saturation_rps": saturation, **r})
            log(
                f"  achieved {r['achieved_rps']} req/s p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms "
                f"p99.9 {r['p999_ms']} ms errors {r['errors']} (generator lag p99 {r['send_lag_p99_ms']} ms)"
            )
    return runs


def run_extras(env, quick):
    """The exports, the year-end rollover and the announcement fan-out (each a script of its own);
    returns the fan-out's figures or None."""
    log("exports: COPY vs our CSV, XlsxWriter vs our XLSX, report cards")
    # "copy" runs twice: the first pass warms the database cache, the second is the reference kept.
    subprocess.run(
        [
            PY,
            str(ROOT / "bench" / "export_bench.py"),
            "--out",
            str(ROOT / "bench" / "results" / "exports.json"),
            "--xlsx-rows",
            str(200_000 if quick else 1_000_000),
            "--cases",
            "copy,copy,csv,xlsxwriter,xlsx,report_cards",
        ],
        cwd=ROOT,
        env=env,
        check=False,
        stdout=subprocess.DEVNULL,
    )  # a missed target is reported
    log("rollover: the scale school into its next year (rolled back afterwards)")
    subprocess.run(
        [
            PY,
            str(ROOT / "bench" / "rollover_bench.py"),
            "--out",
            str(ROOT / "bench" / "results" / "rollover.json"),
        ],
        cwd=ROOT,
        env=env,
        check=False,
        stdout=subprocess.DEVNULL,
    )  # a missed target (60 s) is in the JSON
    log("announcements: one post to the guardians of a class of 10,000 (issue 13: fan-out < 60 s)")
    fanout = subprocess.run(
        [PY, str(ROOT / "bench" / "announce_bench.py"), "--guardians", "10000"],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    announcements = None
    if fanout.returncode == 0:
        a = json.loads(fanout.stdout)
        announcements = {
            "recipients": a["fanout"]["recipients"],
            "seconds": a["fanout_seconds"],
            "second_run_seconds": a["second_run_seconds"],
            "target_seconds": a["target_seconds"],
        }
    else:
        log(f"  announcement bench failed: {fanout.stderr[-2000:]}")

    return announcements


SWEEP = [("sync", 2, 1), ("sync", 3, 1), ("sync", 4, 1), ("sync", 6, 1), ("gthread", 2, 4), ("gthread", 4, 4)]


def sweep():
    """`make bench-workers`: the API and the references under each gunicorn setting in SWEEP, on the
    quick data set; writes bench/results/workers.json and its table in docs/BENCHMARKS.md."""
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk)")
    services, servers, rows = Services(), [], []
    try:
        env = bench_env(services)
        load(env, 20_000, 25)
        for cls, n, threads in SWEEP:
            label = f"{n} x {cls}" + (f" ({threads} threads)" if cls == "gthread" else "")
            log(f"gunicorn {label}")
            e = {
                **env,
                "WEB_CONCURRENCY": str(n),
                "GUNICORN_WORKER_CLASS": cls,
                "GUNICORN_THREADS": str(threads),
            }
            st = start_stack(e, services, servers)
            tok = {"TOKEN": st["token"]}
            r = interleaved(
                [
                    ("ref_redis_bytes", st["ref"].url + "/redis", "get.lua", {}),
                    ("cached_student", f"{st['api'].url}/api/v1/students/{st['sid']}", "get.lua", tok),
                    ("ref_psycopg2_roster", f"{st['ref'].url}/roster/{st['cid']}", "get.lua", {}),
                    (
                        "uncached_roster",
                        f"{st['nocache'].url}/api/v1/classes/{st['cid']}/students?limit=50",
                        "get.lua",
                        tok,
                    ),
                ],
                8,
                rounds=2,
            )
            rows.append(
                {
                    "config": label,
                    **{k: {f: v[f] for f in ("rps", "p50_ms", "p99_ms", "errors")} for k, v in r.items()},
                }
            )
            log("  " + ", ".join(f"{k} {v['rps']} req/s p99 {v['p99_ms']} ms" for k, v in r.items()))
            for server in servers:
                server.stop()
            servers.clear()
    finally:
        for server in servers:
            server.stop()
        services.stop()
    out = {
        "command": "make bench-workers",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "results" / "workers.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "| gunicorn | cached student req/s | p99 ms | uncached roster req/s | p99 ms | "
        "bare Flask + Redis req/s | bare Flask + psycopg2 roster req/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['config']} | {row['cached_student']['rps']:,} | {row['cached_student']['p99_ms']} | "
            f"{row['uncached_roster']['rps']:,} | {row['uncached_roster']['p99_ms']} | "
            f"{row['ref_redis_bytes']['rps']:,} | {row['ref_psycopg2_roster']['rps']:,} |"
        )
    table_md = "\n".join(lines)
    print(table_md)
    replace_block(
        "workers",
        f"Measured with `make bench-workers` on {out['date']} ({out['cpus']} cores; "
        f"20,000 students; wrk, 64 connections, 2 interleaved rounds of 4 s per case). "
        f"Raw numbers: `bench/results/workers.json`.\n\n{table_md}\n",
    )


def replace_block(name, body):
    """Put body between <!-- name:start --> and <!-- name:end --> in docs/BENCHMARKS.md."""
    doc = ROOT / "docs" / "BENCHMARKS.md"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body}{end}"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text += "\n" + block + "\n"
    doc.parent.mkdir(exist_ok=True)
    doc.write_text(text)


def gunicorn_settings():
    ns = {}
    exec(compile((ROOT / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), ns)
    return {"workers": ns["workers"], "worker_class": ns["worker_class"], "threads": ns["threads"]}


READS = ("cached_student", "cached_roster", "student_search", "student_term_attendance", "zipf_read_mix")
CACHE_OFF_READS = (
    "uncached_student",
    "uncached_roster",
    "student_search_cache_off",
    "student_term_attendance_cache_off",
)


def table(out):
    rows = ["| scenario | req/s | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|"]
    for name, r in out["scenarios"].items():
        rows.append(f"| {name} | {r['rps']:,} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |")
    rows += [
        "",
        "| ratio | value | target |",
        "|---|---:|---:|",
        f"| cached read (min of student, roster) / bare Flask + Redis bytes | {out['ratios']['cached_read']} | ≥ 0.6 |",
        f"| uncached roster / bare Flask + psycopg2, same SQL | {out['ratios']['uncached_roster']} | ≥ 0.5 |",
        f"| uncached student / Django REST Framework, same JSON, no auth | "
        f"{out['ratios']['uncached_student_vs_drf']} | ≥ 1.0 |",
        f"| uncached student / FastAPI + SQLAlchemy, same JSON, no auth | "
        f"{out['ratios']['uncached_student_vs_fastapi']} | ≥ 0.7 |",
        f"| cache-off student search / bare psycopg2 replaying its statements | "
        f"{out['ratios'].get('search_cache_off_vs_psycopg2')} | ≥ 0.5 |",
        f"| cache-off term attendance / bare psycopg2 replaying its statements | "
        f"{out['ratios'].get('term_attendance_cache_off_vs_psycopg2')} | ≥ 0.5 |",
        f"| roll call / bare psycopg2 replaying its statements in one transaction | "
        f"{out['ratios'].get('rollcall_vs_psycopg2')} | ≥ 0.5 |",
        f"| roll call p99 at 64 connections | {out['scenarios']['rollcall_write']['p99_ms']} ms | < 200 ms |",
        f"| cache hit ratio, Zipf read mix ({out['cache_hit_counts']['hits']:,} hits, "
        f"{out['cache_hit_counts']['misses']:,} misses) | {out['cache_hit_ratio']} | ≥ 0.95 |",
        f"| worst read p99 at 64 connections, production config (cache on) | "
        f"{max(out['scenarios'][k]['p99_ms'] for k in READS if k in out['scenarios'])} ms | < 50 ms |",
        f"| worst read p99 at 64 connections, every read scenario incl. the cache-off ones | "
        f"{max(v['p99_ms'] for k, v in out['scenarios'].items() if k in READS or k in CACHE_OFF_READS)} ms | < 50 ms |",
        "",
        "| connections | req/s | p50 ms | p99 ms | errors |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in out["ramp"]:
        rows.append(f"| {r['connections']} | {r['rps']:,} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |")
    if out.get("open_loop"):
        rows += [
            "",
            "| open loop (bench/openloop.py) | saturation req/s | load | rate req/s | achieved | p50 ms | "
            "p99 ms | p99.9 ms | errors | generator lag p99 ms | target (at 50%) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in out["open_loop"]:
            target = ""
            if r["fraction"] == 0.5:
                limit = 200 if r["scenario"] == "rollcall_write" else 50
                ok = r["p99_ms"] is not None and r["p99_ms"] < limit and not r["errors"]
                target = f"p99 < {limit} ms: {'met' if ok else 'NOT met'}"
            rows.append(
                f"| {r['scenario']} | {r['saturation_rps']:,} | {round(r['fraction'] * 100)}% | {r['rate']:,} | "
                f"{r['achieved_rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['p999_ms']} | {r['errors']} | "
                f"{r['send_lag_p99_ms']} | {target} |"
            )
    ex = out.get("exports")
    if ex:
        rows += ["", "| export case | rows | seconds | rows/s | peak RSS MB |", "|---|---:|---:|---:|---:|"]
        for name, c in ex["cases"].items():
            rows.append(
                f"| {name} | {c.get('rows', c.get('students', ''))} | {c.get('seconds')} | "
                f"{c.get('rows_per_s', '')} | {c.get('peak_rss_mb')} |"
            )
        rows += ["", "| export target | result |", "|---|---|"]
        rows += [f"| {k} | {'met' if v else 'NOT met'} |" for k, v in ex["checks"].items()]
        rows.append(f"| CSV / COPY rows/s | {ex['ratios']['csv_vs_copy']} |")
        rows.append(f"| XLSX / XlsxWriter constant_memory rows/s | {ex['ratios']['xlsx_vs_xlsxwriter']} |")
    ro = out.get("rollover")
    if ro:
        rows += [
            "",
            "| year-end rollover (bench/rollover_bench.py, rolled back) | students | preview s | apply s | target |",
            "|---|---:|---:|---:|---|",
            f"| the scale school into its next year | {ro['students']:,} | {ro['preview_seconds']} | "
            f"{ro['apply_seconds']} | < {ro['target_seconds']} s: {'met' if ro['ok'] else 'NOT met'} |",
        ]
    an = out.get("announcements")
    if an:
        rows += [
            "",
            "| announcement fan-out (bench/announce_bench.py) | recipients | seconds | target |",
            "|---|---:|---:|---|",
            f"| one announcement to the guardians of a class of 10,000 | {an['recipients']:,} | {an['seconds']} | "
            f"< {an.get('target_seconds', 60)} s: {'met' if an['seconds'] < an.get('target_seconds', 60) else 'NOT met'} |",
        ]
    return "\n".join(rows)


def write_markdown(out, plans, oneroster_plans=""):
    s = out["setup"]
    paging = out.get("oneroster_paging")
    if paging:
        oneroster_plans = (
            f"A OneRoster client paged through every user of the scale school (`/users?limit=1000`, "
            f'`Link: rel="next"`, against the served API): {paging["users"]:,} users in {paging["pages"]} '
            f"pages, {paging['seconds']} s.\n\n{oneroster_plans}"
        )
    replace_block(
        "bench",
        f"Measured with `{s['command']}` on {s['date']} ({s['cpus']} cores; gunicorn "
        f"{s['gunicorn']['workers']} × {s['gunicorn']['worker_class']}; wrk, 2 threads, "
        f"{s['connections']} connections; {s['students']:,} students, "
        f"{s['students'] * s['attendance_days']:,} attendance rows, loaded in {s['load_seconds']} s). "
        f"The reference apps, the peers (Django REST Framework, FastAPI: bench/peers/) and the "
        f"cached/uncached reads ran interleaved, {s['rounds']} rounds of "
        f"{s['seconds_per_scenario'] // s['rounds']} s each (req/s over all rounds, p50/p99 the "
        f"median of the rounds); the other scenarios ran {s['seconds_per_scenario']} s each after a "
        f"warm-up; the open-loop runs (bench/openloop.py) {s['seconds_per_scenario']} s each at a "
        f"constant arrival rate, latency from the intended send time. "
        f"Raw numbers: `bench/results/latest.json`.\n\n{table(out)}\n\n"
        f"### Query plans on the scale data\n\n{plans}\n"
        + (f"\n### OneRoster 1.2 on the scale data\n\n{oneroster_plans}\n" if oneroster_plans else ""),
    )


if __name__ == "__main__":
    main()
