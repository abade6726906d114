"""The one place Redis clients are made, with short timeouts: Redis trouble must cost milliseconds,
never a hung worker. (Celery's own broker connections are kombu's: config.celery_settings.)"""

import redis

from config import redis_db_url

CACHE_DB, LIMITER_DB, BROKER_DB = 0, 1, 2


def redis_options(app):
    t = app.config["REDIS_SOCKET_TIMEOUT"]
    return {"socket_timeout": t, "socket_connect_timeout": t, "health_check_interval": 30}


def url_for(app, db):
    """The URL of one of our Redis databases: CACHE_REDIS_URL / BROKER_URL when set, else REDIS_URL's db."""
    cfg = app.config
    own = {CACHE_DB: cfg.get("CACHE_REDIS_URL"), BROKER_DB: cfg.get("BROKER_URL")}.get(db)
    return own or redis_db_url(cfg.get("REDIS_URL"), db)


def same_server(a, b) -> bool:
    """Two clients on one Redis server (they may use different databases)."""
    ka, kb = a.connection_pool.connection_kwargs, b.connection_pool.connection_kwargs
    return all(ka.get(k) == kb.get(k) for k in ("host", "port", "path"))


def make_client(app, db):
    url = url_for(app, db)
    if not url:
        return None
    return redis.Redis.from_url(url, **redis_options(app))


def shared_client(app, db):
    """One client per app and database, kept on the app; None without REDIS_URL. Safe across a fork:
    redis-py's pool notices the new process id and opens its own connections."""
    url = url_for(app, db)
    if not url:
        return None
    clients = app.extensions.setdefault("redis_clients", {})
    if url not in clients:  # keyed by URL: a changed REDIS_URL (tests) gets a client of its own
        clients[url] = make_client(app, db)
    return clients[url]
