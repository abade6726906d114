"""Ended sessions. The database (the sessions table) is the authority; Redis holds a copy that answers
the per-request check inside admission's one round trip (app/core/admission.py).

Revoked sessions are members of one sorted set, `revoked:sessions`, scored by when their access tokens
have all expired; each revocation also drops the members past that time. The set and the
`revoked:sessions:ready` marker carry no TTL, so a Redis shared with the response cache under `maxmemory-policy volatile-lru`
(which evicts only keys with a TTL: docs/DEPLOY.md, section 3) can never evict a revocation. The marker says
the copy is complete: after a Redis restart or flush it is gone, and the next check rebuilds the copy
from the database (the sessions revoked within one access-token lifetime) instead of trusting an
empty Redis.

A revocation Redis did not confirm (Redis down, stalled, timing out) must not be undone when Redis comes
back with its old `ready` marker. So the revoking transaction also marks the session's revocation
unconfirmed in the database, and a check that Redis answered "not revoked" trusts that answer only
while no unconfirmed revocation exists. Each process asks the database that question at most once per
REVOCATION_RECHECK_S (one probe of a partial index), at once after it saw Redis fail itself, and
always in the process that lost the write. Whoever finds one rebuilds the copy and then clears the
marks it covered.

What core needs of the sessions table is handed over by the auth package (app/auth/routes.py) as a
`SessionsTable`, so core knows no model.
"""

import logging
import time
from datetime import datetime, timedelta
from typing import Protocol

import redis

from app.core.models import utcnow
from app.core.redisconn import LIMITER_DB, make_client

log = logging.getLogger("schoolhouse.auth")


class SessionsTable(Protocol):
    def revoked(self, sid: str) -> bool: ...

    def revoked_since(self, since: datetime) -> list[str]: ...

    def mark_unconfirmed(self, sids: list[str]) -> None: ...

    def any_unconfirmed(self) -> bool: ...

    def confirm(self, revoked_before: datetime) -> None: ...


class RevocationStore:
    # Named after the set: a Redis still holding the earlier per-key copy (and its `revoked:ready`) is
    # rebuilt from the database on first use, never trusted with an empty set.
    READY = "revoked:sessions:ready"
    SET = "revoked:sessions"

    def __init__(self, app, sessions: SessionsTable):
        # db 1 (limiter) is not an LRU cache, so a revocation marker is never evicted early.
        self.redis = make_client(app, LIMITER_DB)
        self.ttl = app.config["ACCESS_TOKEN_TTL"] + 60
        self.recheck_s = app.config.get("REVOCATION_RECHECK_S", 1.0)
        self.sessions = sessions
        self._checked_at = float("-inf")  # when this process last asked for unconfirmed revocations
        self._copy_suspect = False

    def revoke(self, session_ids):
        """Within the revoking transaction, after the sessions table says revoked."""
        if self.redis is None or not session_ids:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            self._add(pipe, session_ids)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning(
                "Redis did not confirm %d revocations (%s): checks ask the database", len(session_ids), exc
            )
            self.sessions.mark_unconfirmed(list(session_ids))
            self._copy_suspect = True

    def _add(self, pipe, sids):
        now = time.time()
        if sids:
            pipe.zadd(self.SET, dict.fromkeys(sids, now + self.ttl))
        pipe.zremrangebyscore(self.SET, "-inf", now)  # tokens of these sessions have all expired

    def redis_failed(self):
        """Admission could not reach Redis: before trusting it again, ask the database."""
        self._copy_suspect = True

    def is_revoked(self, sid) -> bool:
        """The full answer when Redis could not tell (down, or its copy is incomplete)."""
        if self.redis is not None:
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.get(self.READY)
                pipe.zscore(self.SET, sid)
                ready, revoked = pipe.execute()
                if ready is not None and not self._copy_incomplete():
                    return revoked is not None
                self.rebuild()
            except redis.RedisError:
                self._copy_suspect = True
        return self.sessions.revoked(sid)

    def confirm_live(self, sid) -> bool:
        """Redis said "not revoked": True when that answer stands (the database agrees, or has
        nothing Redis missed)."""
        if not self._copy_incomplete():
            return True
        try:
            self.rebuild()
        except redis.RedisError:
            self._copy_suspect = True
        return not self.sessions.revoked(sid)

    def _copy_incomplete(self) -> bool:
        now = time.monotonic()
        if not self._copy_suspect and now - self._checked_at < self.recheck_s:
            return False
        incomplete = self.sessions.any_unconfirmed()
        self._checked_at = now
        self._copy_suspect = incomplete
        return incomplete

    def rebuild(self):
        started = utcnow()
        sids = self.sessions.revoked_since(started - timedelta(seconds=self.ttl))
        pipe = self.redis.pipeline(transaction=False)
        self._add(pipe, sids)
        pipe.set(self.READY, 1)
        pipe.execute()
        # Only what this copy covered: a revocation lost after `started` keeps its mark.
        self.sessions.confirm(started)
        self._copy_suspect = False
        self._checked_at = time.monotonic()
        log.info("rebuilt the Redis copy of %d revoked sessions", len(sids))
