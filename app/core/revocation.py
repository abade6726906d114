"""Ended sessions. A Redis key per revoked session (for the access token's lifetime) answers the
per-request check in one round trip; the auth_sessions row is the source of truth, used whenever
Redis is not configured or does not answer. A `revoked:ready` marker says the Redis copy is complete:
after a Redis restart or flush it is gone, and the next check rebuilds the copy from the database
(the sessions revoked within one access-token lifetime) instead of trusting an empty Redis."""

import logging
from datetime import timedelta

import redis
from sqlalchemy import select

from app.core.models import utcnow
from app.core.redisconn import LIMITER_DB, make_client
from app.extensions import db

log = logging.getLogger("schoolhouse.auth")


class RevocationStore:
    def __init__(self, app):
        # db 1 (limiter) is not an LRU cache, so a revocation marker is never evicted early.
        self.redis = make_client(app, LIMITER_DB)
        self.ttl = app.config["ACCESS_TOKEN_TTL"] + 60

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

    @staticmethod
    def _revoked_in_db(sid):
        from app.auth.models import AuthSession

        revoked_at = db.session.execute(
            select(AuthSession.revoked_at).where(AuthSession.id == sid),
            execution_options={"skip_tenant": True},
        ).scalar_one_or_none()
        return revoked_at is not None

    def rebuild(self):
        from app.auth.models import AuthSession

        since = utcnow() - timedelta(seconds=self.ttl)
        sids = (
            db.session.execute(
                select(AuthSession.id).where(AuthSession.revoked_at >= since),
                execution_options={"skip_tenant": True},
            )
            .scalars()
            .all()
        )
        pipe = self.redis.pipeline(transaction=False)
        for sid in sids:
            pipe.set(f"revoked:{sid}", 1, ex=self.ttl)
        pipe.set(self.READY, 1)
        pipe.execute()
        log.info("rebuilt the Redis copy of %d revoked sessions", len(sids))
