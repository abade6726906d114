"""The docs/BENCHMARKS.md soak tables from bench/results/soak.json (or the file given), against the
targets of `make soak`: python bench/soak_table.py [FILE]"""

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mb(n):
    return f"{n / 2**20:.1f}"


def main(path):
    d = json.loads(Path(path).read_text())
    minutes, cache, redis = d["per_minute"], d["cache"], d["redis"]
    p99 = [m["p99_ms"] for m in minutes if m["p99_ms"] is not None]
    worst = max(minutes, key=lambda m: m["p99_ms"] or 0)
    errors = sum(m["errors"] for m in minutes)
    over = [m["minute"] for m in minutes if (m["p99_ms"] or 0) >= 300]
    history = cache["endpoints"].get("student_history", {})
    more_stored = [ns for ns, v in cache["endpoints"].items() if v["stores"] > v["hit"] and v["stores"] > 1]
    growth = " / ".join(
        f"{v['rss_start_mb']}→{v['rss_end_mb']} MB ({v['growth_percent']:+.1f}%)"
        for v in d["processes"].values()
    )
    jobs = d["jobs_after_drain"]
    rows = [
        ("errors (all minutes)", "0", str(errors)),
        (
            "p99 of the worst minute",
            "< 300 ms",
            f"{worst['p99_ms']} ms (minute {worst['minute']}); median minute p99 {statistics.median(p99)} ms; "
            f"minutes at or over 300 ms: {len(over)}",
        ),
        (
            "rps (mean of minutes)",
            f"the fixed rate ({d['config']['rate']})",
            f"{statistics.mean(m['rps'] for m in minutes):.1f}",
        ),
        (
            "cache hit ratio, overall",
            "≥ 90%",
            f"{100 * cache['hit_ratio']:.1f}% (whole run, from an empty cache)",
        ),
        (
            "cache hit ratio, a student's term attendance (`student_history`)",
            "≥ 80%",
            f"{100 * history.get('hit_ratio', 0):.1f}%",
        ),
        ("endpoints storing more than they serve", "none", ", ".join(more_stored) or "none"),
        (
            "Redis used_memory start / peak / end (maxmemory)",
            "under maxmemory",
            f"{mb(redis['used_memory_start'])} / {mb(redis['used_memory_peak'])} / {mb(redis['used_memory_end'])} MB "
            f"({mb(redis['maxmemory'])} MB), {redis['evicted_keys']} evicted",
        ),
        ("RSS growth from the warm start: " + " / ".join(d["processes"]), "< 10% each", growth),
        (
            f"jobs queued or running {jobs['drain_s']} s after the load",
            "0",
            f"{jobs['queued']} queued, {jobs['running']} running ({jobs['by_status']})",
        ),
    ]
    print("| measure | target | result |\n|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print("\nPer endpoint (whole run):\n")
    print("| endpoint | hit ratio | hits | misses | stores | skips | invalidations |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for ns, v in cache["endpoints"].items():
        print(
            f"| {ns} | {v['hit_ratio']} | {v['hit']} | {v['miss']} | {v['stores']} | {v['skips']} | {v['invalidations']} |"
        )
    print("\nPer minute:\n")
    print("| minute | rps | p50 ms | p99 ms | errors | cache hit ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for m in minutes:
        print(
            f"| {m['minute']} | {m['rps']} | {m['p50_ms']} | {m['p99_ms']} | {m['errors']} | {m['cache_hit_ratio']} |"
        )
    if any(m.get("system") for m in minutes):
        system_table(minutes)
    if d.get("steps"):
        capacity_table(d["steps"], d["capacity"])


def capacity_table(steps, capacity):
    """`make capacity`'s ramp: one row per arrival rate, CPU in % of one core per process kind."""
    kinds = sorted({k for s in steps for k in s["cpu_percent_of_core"]})
    print(f"\nRamp (users at {capacity['think_s']} s think time; CPU in % of one core):\n")
    print("| req/s | users | p50 ms | p99 ms | errors | p99 by kind | " + " | ".join(kinds) + " |")
    print("|---:|---:|---:|---:|---:|---|" + "---:|" * len(kinds))
    for s in steps:
        by_kind = ", ".join(f"{k} {v}" for k, v in s["p99_ms_by_kind"].items())
        cpu = " | ".join(str(s["cpu_percent_of_core"].get(k, "")) for k in kinds)
        print(
            f"| {s['rate']:g} | {s['users']:,} | {s['p50_ms']} | {s['p99_ms']} | {s['errors']} | {by_kind} | {cpu} |"
        )
    print(f"\nCarried with p99 < {capacity['p99_limit_ms']} ms and no error: {json.dumps(capacity)}")


def system_table(minutes):
    """What the box did each minute (bench/soak_probe.py): CPU as a share of one core per process kind."""
    kinds = sorted({k for m in minutes if m.get("system") for k in m["system"]["cpu_percent_of_core"]})
    print(
        "\nWhat the box did, per minute (CPU in % of one core; PostgreSQL backends at the busiest sample):\n"
    )
    print(
        "| minute | p99 ms | "
        + " | ".join(kinds)
        + " | host busy % | iowait % | disk MB written | PG active / waiting | PG waits | autovacuum | checkpoints |"
    )
    print("|---:|---:|" + "---:|" * len(kinds) + "---:|---:|---:|---:|---|---|---:|")
    for m in minutes:
        s = m.get("system")
        if not s:
            continue
        cpu = " | ".join(str(s["cpu_percent_of_core"].get(k, "")) for k in kinds)
        waits = ", ".join(f"{k} ×{n}" for k, n in s["pg_waits"].items())
        print(
            f"| {m['minute']} | {m['p99_ms']} | {cpu} | {s['host_busy_percent']} | {s['host_iowait_percent']} | "
            f"{s['disk_write_mb']} | {s['pg_active_max']} / {s['pg_waiting_max']} | {waits} | "
            f"{'; '.join(s['autovacuum'])} | {s['checkpoints']} |"
        )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ROOT / "bench" / "results" / "soak.json")
