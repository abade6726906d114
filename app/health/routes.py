"""Liveness and readiness; exempt from rate limits and auth."""

import hmac
import os

import psutil
from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.core.auth import SERVICE, public, roles
from app.core.errors import problem
from app.core.observability import pool_status
from app.core.openapi import doc
from app.core.ratelimit import exempt
from app.core.redisconn import CACHE_DB, make_client
from app.extensions import db
from app.health import performance
from app.health.database import database_report

bp = Blueprint("health", __name__)


@bp.get("/health/live")
@public
@exempt
def live():
    return jsonify({"status": "ok"})


def _check_database():
    # A fresh checkout from the pool, as the next request would need.
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"{type(exc).__name__}"


def _check_redis():
    client = current_app.extensions.get("health_redis")
    if client is None:
        client = current_app.extensions["health_redis"] = make_client(current_app, CACHE_DB)
    if client is None:
        return None
    try:
        client.ping()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}"


@bp.get("/health/ready")
@public
@exempt
def ready():
    checks = {"database": _check_database()}
    if current_app.config.get("REDIS_URL"):
        checks["redis"] = _check_redis()
    failing = sorted(k for k, v in checks.items() if v)
    if failing:
        resp = problem(503, f"Not ready: {', '.join(failing)} unavailable.", title="Service unavailable")
        body = resp.get_json()
        body["checks"] = {k: ("down" if v else "ok") for k, v in checks.items()}
        return current_app.json.response(body), 503, {"Content-Type": "application/problem+json"}
    return jsonify({"status": "ok", "checks": {k: "ok" for k in checks}})


# --- operator views (admin) -----------------------------------------------------------------------


@bp.get("/metrics")
@public
@exempt
def metrics():
    """Prometheus text format, every gunicorn worker aggregated. Guarded by METRICS_TOKEN when set.

    In production without METRICS_TOKEN the endpoint is closed rather than the app refusing to start:
    metrics are optional, and a deployment that set only the required settings must come up safe.
    Development and testing leave it open when no token is set (a local scrape, the tests)."""
    token = current_app.config.get("METRICS_TOKEN")
    if not token:
        if current_app.config["ENV_NAME"] == "production":
            return problem(403, "Metrics are closed: set METRICS_TOKEN on the server to open them.")
    elif not hmac.compare_digest(
        request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()
    ):
        return problem(401, "Send the metrics token: Authorization: Bearer <METRICS_TOKEN>.")
    return Response(generate_latest(performance.registry()), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/api/v1/performance")
@roles("admin", reach=SERVICE)
@doc(
    "Request, database, cache and memory numbers across workers, with a health score and warnings",
    tags=["operations"],
)
def performance_view():
    return jsonify(performance.snapshot())


def _system():
    proc = psutil.Process()
    with proc.oneshot():
        return {
            "cpu_count": psutil.cpu_count(),
            "load_average": list(os.getloadavg()),
            "memory_percent": psutil.virtual_memory().percent,
            "process": {
                "pid": proc.pid,
                "rss_mb": round(proc.memory_info().rss / 2**20, 1),
                "threads": proc.num_threads(),
                "open_files": proc.num_fds(),
                "cpu_percent": proc.cpu_percent(interval=None),
            },
        }


@bp.get("/health/detailed")
@roles("admin", reach=SERVICE)
@exempt
@doc("Readiness plus pool, system and process metrics", tags=["operations"])
def detailed():
    checks = {"database": _check_database()}
    if current_app.config.get("REDIS_URL"):
        checks["redis"] = _check_redis()
    return jsonify(
        {
            "status": "ok" if not any(checks.values()) else "degraded",
            "checks": {k: ("down: " + v if v else "ok") for k, v in checks.items()},
            **_pools(),
            "system": _system(),
            "uptime_seconds": round(performance.uptime_seconds(), 1),
        }
    )


@bp.get("/health/database")
@roles("admin", reach=SERVICE)
@exempt
@doc("Database statistics: largest tables, index use, connections, cache hit ratio", tags=["operations"])
def database():
    return jsonify({**_pools(), **database_report()})


def _pools():
    """The main pool and, on PostgreSQL, the reads engine's, which serves the lone reads (config.py
    `binds`)."""
    out = {"pool": pool_status(db.engine)}
    if "reads" in db.engines:
        out["reads_pool"] = pool_status(db.engines["reads"])
    return out
