"""Ended sessions. A Redis key per revoked session (for the access token's lifetime) answers the
per-request check in one round trip; the auth_sessions row is the source of truth, used whenever
Redis is not configured or does not answer. A `revoked:ready` marker says the Redis copy is complete:
after a Redis restart or flush it is gone, and the next check rebuilds the copy from the database
(the sessions revoked within one access-token lifetime) instead of trusting an empty Redis."""

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import redis

from app.core.models import utcnow
from app.core.redisconn import LIMITER_DB, make_client

log = logging.getLogger("schoolhouse.auth")


class RevocationStore:
    """`revoked_in_db(sid) -> bool` and `revoked_since(datetime) -> [sid]` read the sessions table; the auth
    package hands them over when it creates the store (app/auth/routes.py), so core knows no model."""

    def __init__(self, app, revoked_in_db: Callable[[str], bool], revoked_since: Callable[[datetime], list]):
        # db 1 (limiter) is not an LRU cache, so a revocation marker is never evicted early.
        self.redis = make_client(app, LIMITER_DB)
        self.ttl = app.config["ACCESS_TOKEN_TTL"] + 60
        self._revoked_in_db = revoked_in_db
        self._revoked_since = revoked_since

    def revoke(self, session_ids):
        if self.redis is None or not session_ids:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for sid in session_ids:
                pipe.set(f"revoked:{sid}", 1, ex=self.ttl)
            pipe.execute()
        except redis.RedisError:
            log.warning("could not mark sessions revoked in Redis; the database check takes over")

    READY = "revoked:ready"

    def is_revoked(self, sid) -> bool:
        if self.redis is not None:
            try:
                ready, revoked = self.redis.mget(self.READY, f"revoked:{sid}")
                if ready is not None:
                    return revoked is not None
                self.rebuild()
            except redis.RedisError:
                pass
        return self._revoked_in_db(sid)

    def rebuild(self):
        sids = self._revoked_since(utcnow() - timedelta(seconds=self.ttl))
        pipe = self.redis.pipeline(transaction=False)
        for sid in sids:
            pipe.set(f"revoked:{sid}", 1, ex=self.ttl)
        pipe.set(self.READY, 1)
        pipe.execute()
        log.info("rebuilt the Redis copy of %d revoked sessions", len(sids))
