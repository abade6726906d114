"""The one place Redis clients are made, with short timeouts: Redis trouble must cost milliseconds,
never a hung worker. (Celery's own broker connections are kombu's: config.celery_settings.)"""

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


def shared_client(app, db):
    """One client per app and database, kept on the app; None without REDIS_URL. Safe across a fork:
    redis-py's pool notices the new process id and opens its own connections."""
    url = redis_db_url(app.config.get("REDIS_URL"), db)
    if not url:
        return None
    clients = app.extensions.setdefault("redis_clients", {})
    if url not in clients:  # keyed by URL: a changed REDIS_URL (tests) gets a client of its own
        clients[url] = make_client(app, db)
    return clients[url]
