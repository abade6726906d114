"""What the box was doing in each minute of `make soak` (bench/soak.py), so a slow minute can be named:
CPU per process kind (share of one core), the host's busy and iowait shares and disk writes, and from
PostgreSQL the most active and the most waiting client backends seen, their wait events, the relations
autovacuum worked on, and checkpoints. Sampled every PROBE_S seconds from a thread of its own.
"""

import collections
import contextlib
import os
import threading

import psutil
import psycopg2

PROBE_S = 5.0
WAITING = ("Lock", "LWLock", "IO", "BufferPin")
PG_SQL = """
SELECT backend_type, state, wait_event_type, wait_event, query
FROM pg_stat_activity WHERE pid <> pg_backend_pid()
"""


def _tree(pid):
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def _cpu(procs):
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


class Probe:
    """`groups()` -> {kind: [pids whose process trees make up the kind]}; `minute_of()` -> the soak's
    current minute (0-based). `per_minute()` after `stop()` gives one dict per minute seen."""

    def __init__(self, dsn, groups, minute_of):
        self.dsn, self.groups, self.minute_of = dsn, groups, minute_of
        self.minutes: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(PROBE_S * 3)

    def _minute(self, m):
        return self.minutes.setdefault(
            m,
            {
                "cpu_s": collections.Counter(),
                "host": collections.Counter(),
                "disk_write_mb": 0.0,
                "pg_active_max": 0,
                "pg_waiting_max": 0,
                "pg_idle_in_tx_max": 0,
                "pg_waits": collections.Counter(),
                "autovacuum": set(),
                "checkpoints": 0,
            },
        )

    def _pg(self, cur, minute):
        cur.execute(PG_SQL)
        active = waiting = idle_tx = 0
        for backend, state, wtype, wevent, query in cur.fetchall():
            if backend == "autovacuum worker" and query:
                minute["autovacuum"].add(query.replace("autovacuum: ", "")[:80])
            if backend != "client backend":
                continue
            idle_tx += state == "idle in transaction"
            if state == "active":
                active += 1
                if wtype in WAITING:
                    waiting += 1
                    minute["pg_waits"][f"{wtype}:{wevent}"] += 1
        minute["pg_active_max"] = max(minute["pg_active_max"], active)
        minute["pg_waiting_max"] = max(minute["pg_waiting_max"], waiting)
        minute["pg_idle_in_tx_max"] = max(minute["pg_idle_in_tx_max"], idle_tx)
        cur.execute("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        return cur.fetchone()[0]

    def _run(self):
        pg = psycopg2.connect(self.dsn)
        pg.autocommit = True
        cur = pg.cursor()
        cur.execute("SELECT pg_backend_pid()")
        postmaster = psutil.Process(cur.fetchone()[0]).ppid()
        last_cpu, last_host = None, psutil.cpu_times()
        last_disk = psutil.disk_io_counters()
        last_ckpt = None
        try:
            while not self._stop.wait(PROBE_S):
                minute = self._minute(self.minute_of())
                groups = {**self.groups(), "postgres": [postmaster]}
                cpu = {k: sum(_cpu(_tree(pid)) for pid in pids) for k, pids in groups.items()}
                # The load generator alone (the stack's processes are its children): it shares the box.
                cpu["load generator"] = _cpu([psutil.Process(os.getpid())])
                if last_cpu is not None:
                    for k, v in cpu.items():
                        minute["cpu_s"][k] += max(0.0, v - last_cpu.get(k, v))
                last_cpu = cpu
                host = psutil.cpu_times()
                for field in ("user", "system", "iowait", "idle", "steal"):
                    minute["host"][field] += getattr(host, field, 0) - getattr(last_host, field, 0)
                last_host = host
                disk = psutil.disk_io_counters()
                if disk and last_disk:
                    minute["disk_write_mb"] += (disk.write_bytes - last_disk.write_bytes) / 2**20
                last_disk = disk
                with contextlib.suppress(psycopg2.Error):
                    ckpt = self._pg(cur, minute)
                    if last_ckpt is not None:
                        minute["checkpoints"] += ckpt - last_ckpt
                    last_ckpt = ckpt
        finally:
            pg.close()

    def per_minute(self):
        out = {}
        for m, v in sorted(self.minutes.items()):
            host = v["host"]
            total = sum(host.values()) or 1.0
            cores = psutil.cpu_count() or 1
            out[m] = {
                "cpu_percent_of_core": {k: round(100 * s / 60, 1) for k, s in sorted(v["cpu_s"].items())},
                "host_busy_percent": round(100 * (host["user"] + host["system"]) / total, 1),
                "host_iowait_percent": round(100 * host["iowait"] / total, 1),
                "host_cores": cores,
                "disk_write_mb": round(v["disk_write_mb"], 1),
                "pg_active_max": v["pg_active_max"],
                "pg_waiting_max": v["pg_waiting_max"],
                "pg_idle_in_tx_max": v["pg_idle_in_tx_max"],
                "pg_waits": dict(v["pg_waits"].most_common(3)),
                "autovacuum": sorted(v["autovacuum"]),
                "checkpoints": v["checkpoints"],
            }
        return out
