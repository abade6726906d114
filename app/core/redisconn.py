"""Redis clients with short timeouts: Redis trouble must cost milliseconds, never a hung worker."""

import redis

from config import redis_db_url

CACHE_DB, LIMITER_DB, BROKER_DB = 0, 1, 2


def redis_options(app):
    t = app.config["REDIS_SOCKET_TIMEOUT"]
    return {"socket_timeout": t, "socket_connect_timeout": t, "health_check_interval": 30}


def make_client(app, db):
    url = redis_db_url(app.config.get("REDIS_URL"), db)
    if not url:
        return None
    return redis.Redis.from_url(url, **redis_options(app))
