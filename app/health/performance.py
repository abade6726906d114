"""Numbers for operators: aggregated across gunicorn workers from the Prometheus metrics."""

import platform
import resource
from importlib.metadata import version

import psutil
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from app.core.caching import stats as cache_stats  # noqa: F401  (per-process counters, also exported)
from app.core.observability import multiprocess_dir, uptime_seconds  # noqa: F401

# The seeds' alert thresholds.
THRESHOLDS = {
    "error_rate_percent": 5.0,
    "p95_ms": 2000.0,
    "slow_query_ms": 1000.0,
    "memory_mb": 500.0,
    "cache_hit_percent": 70.0,
}


def registry():
    path = multiprocess_dir()
    if not path:
        return REGISTRY
    reg = CollectorRegistry()
    MultiProcessCollector(reg, path)
    return reg


def _families():
    return {f.name: f for f in registry().collect()}


def percentile(buckets, q):
    """buckets: sorted [(upper_bound, cumulative_count)]; linear interpolation inside the bucket."""
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound * 1000
            span = count - prev_count
            frac = (rank - prev_count) / span if span else 0
            return (prev_bound + (bound - prev_bound) * frac) * 1000
        prev_bound, prev_count = bound, count
    return prev_bound * 1000


def _histograms(family, label=None):
    """{label_value: [(le, cumulative)]} summed over workers, plus sums and counts."""
    out, sums = {}, {}
    if family is None:
        return out, sums
    for s in family.samples:
        key = s.labels.get(label) if label else ""
        if s.name.endswith("_bucket"):
            le = float(s.labels["le"])
            out.setdefault(key, {})
            out[key][le] = out[key].get(le, 0) + s.value
        elif s.name.endswith("_sum"):
            sums[key] = sums.get(key, 0) + s.value
    return {k: sorted(v.items()) for k, v in out.items()}, sums


def _counter(family, *labels):
    out = {}
    if family is None:
        return out
    for s in family.samples:
        if s.name.endswith("_total"):
            key = tuple(s.labels.get(name) for name in labels)
            out[key] = out.get(key, 0) + s.value
    return out


def snapshot():
    fam = _families()
    requests = _counter(fam.get("schoolhouse_http_requests"), "endpoint", "status")
    total = sum(requests.values())
    errors = sum(v for (_, status), v in requests.items() if str(status).startswith("5"))
    client_errors = sum(v for (_, status), v in requests.items() if str(status).startswith("4"))
    lat, lat_sums = _histograms(fam.get("schoolhouse_http_request_duration_seconds"), "endpoint")
    endpoints = {}
    for endpoint, buckets in lat.items():
        count = buckets[-1][1] if buckets else 0
        endpoints[endpoint] = {
            "count": int(count),
            "errors": int(
                sum(v for (e, st), v in requests.items() if e == endpoint and str(st).startswith("5"))
            ),
            "mean_ms": round(lat_sums.get(endpoint, 0) / count * 1000, 2) if count else None,
            "p50_ms": _r(percentile(buckets, 0.50)),
            "p95_ms": _r(percentile(buckets, 0.95)),
            "p99_ms": _r(percentile(buckets, 0.99)),
        }
    all_buckets = {}
    for buckets in lat.values():
        for le, c in buckets:
            all_buckets[le] = all_buckets.get(le, 0) + c
    overall = sorted(all_buckets.items())
    dbh, db_sums = _histograms(fam.get("schoolhouse_db_query_duration_seconds"))
    db_buckets = dbh.get("", [])
    db_count = db_buckets[-1][1] if db_buckets else 0
    slow = sum(_counter(fam.get("schoolhouse_db_slow_queries")).values())
    cache = _counter(fam.get("schoolhouse_cache_requests"), "namespace", "result")
    hits = sum(v for (_, r), v in cache.items() if r == "hit")
    misses = sum(v for (_, r), v in cache.items() if r == "miss")
    per_ns: dict[str, dict] = {}

    def ns_entry(ns):
        return per_ns.setdefault(ns, {"hit": 0, "miss": 0, "stores": 0, "skips": 0, "invalidations": 0})

    for (ns, r), v in cache.items():
        ns_entry(ns)[r] = int(v)
    # Stores, skipped stores (app/core/caching.py, StorePolicy) and invalidating writes per endpoint.
    for family, field in (("stores", "stores"), ("skips", "skips"), ("invalidations", "invalidations")):
        for (ns,), v in _counter(fam.get(f"schoolhouse_cache_{family}"), "namespace").items():
            ns_entry(ns)[field] = int(v)
    for entry in per_ns.values():
        looked = entry["hit"] + entry["miss"]
        entry["hit_ratio"] = round(entry["hit"] / looked, 4) if looked else None
    proc = psutil.Process()
    rss_mb = proc.memory_info().rss / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    data = {
        "requests": {
            "total": int(total),
            "server_errors": int(errors),
            "client_errors": int(client_errors),
            "error_rate_percent": round(100 * errors / total, 2) if total else 0.0,
            "p50_ms": _r(percentile(overall, 0.5)),
            "p95_ms": _r(percentile(overall, 0.95)),
            "p99_ms": _r(percentile(overall, 0.99)),
            "endpoints": endpoints,
        },
        "database": {
            "queries": int(db_count),
            "mean_ms": round(db_sums.get("", 0) / db_count * 1000, 3) if db_count else None,
            "p95_ms": _r(percentile(db_buckets, 0.95)),
            "p99_ms": _r(percentile(db_buckets, 0.99)),
            "slow_queries": int(slow),
        },
        "cache": {
            "hits": int(hits),
            "misses": int(misses),
            "hit_rate_percent": round(100 * hits / (hits + misses), 2) if hits + misses else None,
            "hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
            "namespaces": per_ns,
        },
        "memory": {
            "rss_mb": round(rss_mb, 1),
            "peak_rss_mb": round(peak_mb, 1),
            "system_used_percent": psutil.virtual_memory().percent,
        },
        "uptime_seconds": round(uptime_seconds(), 1),
        "versions": {
            "python": platform.python_version(),
            "flask": version("flask"),
            "sqlalchemy": version("sqlalchemy"),
            "celery": version("celery"),
        },
        "workers_aggregated": bool(multiprocess_dir()),
        "thresholds": THRESHOLDS,
    }
    data["warnings"] = warnings(data)
    data["health_score"] = health_score(data)
    return data


def _r(v):
    return None if v is None else round(v, 2)


def warnings(d):
    out = []
    if d["requests"]["error_rate_percent"] > THRESHOLDS["error_rate_percent"]:
        out.append(
            f"error rate {d['requests']['error_rate_percent']}% is above {THRESHOLDS['error_rate_percent']}%"
        )
    p95 = d["requests"]["p95_ms"]
    if p95 is not None and p95 > THRESHOLDS["p95_ms"]:
        out.append(f"p95 response time {p95} ms is above {THRESHOLDS['p95_ms']:.0f} ms")
    if d["database"]["slow_queries"]:
        out.append(
            f"{d['database']['slow_queries']} queries took longer than {THRESHOLDS['slow_query_ms']:.0f} ms"
        )
    if d["memory"]["rss_mb"] > THRESHOLDS["memory_mb"]:
        out.append(f"memory {d['memory']['rss_mb']} MB is above {THRESHOLDS['memory_mb']:.0f} MB")
    rate = d["cache"]["hit_rate_percent"]
    if rate is not None and rate < THRESHOLDS["cache_hit_percent"]:
        out.append(f"cache hit rate {rate}% is below {THRESHOLDS['cache_hit_percent']:.0f}%")
    return out


def health_score(d):
    """100 minus penalties, one per threshold, scaled by how far past it the system is."""
    score = 100.0
    err = d["requests"]["error_rate_percent"]
    score -= min(40, err * 4)
    p95 = d["requests"]["p95_ms"] or 0
    score -= min(25, max(0, p95 - 200) / 2000 * 25)
    score -= min(10, d["database"]["slow_queries"])
    score -= min(15, max(0, d["memory"]["rss_mb"] - THRESHOLDS["memory_mb"]) / 50)
    rate = d["cache"]["hit_rate_percent"]
    if rate is not None:
        score -= min(10, max(0, THRESHOLDS["cache_hit_percent"] - rate) / 7)
    return max(0, round(score))
