"""Liveness and readiness; exempt from rate limits and auth."""
from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from app.core.auth import public
from app.core.errors import problem
from app.core.redisconn import CACHE_DB, make_client
from app.core.ratelimit import exempt
from app.extensions import db

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
