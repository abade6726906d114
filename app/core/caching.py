"""Tenant-safe response cache with version-number invalidation (DESIGN §5, PITFALLS §6).

Key = institution + resource versions + caller scope + path + sorted query string. A cached read
declares the tables it depends on; any ORM write to one of those tables bumps the table's
per-institution version right after the transaction commits (before the 2xx goes out), so the next
read builds a new key: no KEYS/SCAN deletes, and no stale read after an acknowledged write, in any
worker or app instance. On Redis one cached read is ONE round trip (a Lua script reads the versions
and the entry together). Redis trouble means a miss, never a 500.
"""

import hashlib
import logging
import time
from collections import Counter
from functools import wraps

import redis
from flask import current_app, g, has_app_context, make_response, request
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.core.auth import cache_on, ensure_session_live, gate, session_ended
from app.core.models import TenantMixin
from app.core.ratelimit import GATE_LUA
from app.core.redisconn import LIMITER_DB
from app.core.tenancy import current_institution_id
from app.extensions import cache

log = logging.getLogger("schoolhouse.cache")

# TTL tiers from the seeds.
SHORT, MEDIUM, ANALYTICS, LONG = 60, 300, 1800, 3600
PER_USER_ROLES = frozenset({"teacher", "guardian", "student"})  # their rows differ per user

# KEYS = version keys. ARGV[1..3] = the API tier's counter, window and the session's revocation key
# (GATE_LUA, run in the limiter db, which is never evicted); ARGV[4]/ARGV[5] = limiter and cache db;
# ARGV[6] = key prefix before the versions, ARGV[7] = suffix after them, ARGV[8] = now (ns).
# Missing versions are created from the clock (never reused numbers, so an evicted version key cannot
# resurrect old entries). Returns {versions, body or false, revoked, count}: the rate limit, the
# session check and the lookup cost the request one round trip.
_FETCH = (
    "redis.call('SELECT', ARGV[4])"
    + GATE_LUA
    + """
redis.call('SELECT', ARGV[5])
local parts = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v then
    redis.call('SET', k, ARGV[8], 'NX')
    v = redis.call('GET', k)
  end
  parts[i] = v
end
local versions = table.concat(parts, '.')
return {versions, redis.call('GET', ARGV[6] .. versions .. ARGV[7]), revoked, count}
"""
)

stats = Counter()  # (namespace, "hit"|"miss") -> count, this process; metrics export it


class ResponseCache:
    def __init__(self, app):
        backend = cache.cache
        self.prefix = app.config.get("CACHE_KEY_PREFIX", "sh:")
        self.redis = getattr(backend, "_write_client", None)
        self.local = None if self.redis is not None else backend  # SimpleCache in the embedded default
        self.enabled = app.config.get("RESPONSE_CACHE_ENABLED", True)
        self._fetch = self.redis.register_script(_FETCH) if self.redis is not None else None
        self.lock_ms = app.config.get("CACHE_LOCK_MS", 500)
        self.db = self.redis.connection_pool.connection_kwargs.get("db", 0) if self.redis is not None else 0

    def _vkey(self, institution_id, table):
        return f"{self.prefix}ver:{institution_id}:{table}"

    def fetch(self, institution_id, tables, suffix, gate_args):
        """(versions, body or None, revoked, count). versions is None when the cache is unavailable
        (the caller then counts and checks the session itself); revoked is None when this lookup
        could not tell (the caller asks the RevocationStore)."""
        vkeys = [self._vkey(institution_id, t) for t in tables]
        head = f"{self.prefix}resp:{institution_id}:"
        if self.redis is not None:
            try:
                versions, body, revoked, count = self._fetch(
                    keys=vkeys, args=[*gate_args, LIMITER_DB, self.db, head, suffix, time.time_ns()]
                )
                return versions.decode(), body or None, None if revoked < 0 else bool(revoked), count
            except redis.RedisError as exc:
                log.warning("cache unavailable: %s", exc)
                return None, None, None, None
        versions = ".".join(str(self.local.get(k) or self._init_local(k)) for k in vkeys)
        return versions, self.local.get(head + versions + suffix), None, None

    def _init_local(self, key):
        value = time.time_ns()
        self.local.add(key, value, timeout=0)
        return self.local.get(key)

    def store(self, institution_id, versions, suffix, body, ttl):
        key = f"{self.prefix}resp:{institution_id}:{versions}{suffix}"
        try:
            if self.redis is not None:
                self.redis.set(key, body, ex=ttl)
            else:
                self.local.set(key, body, timeout=ttl)
        except redis.RedisError as exc:
            log.warning("cache store failed: %s", exc)

    def lock(self, institution_id, versions, suffix) -> bool:
        """True when this caller should compute the entry (it got the short lock, or locking is moot)."""
        if self.redis is None:
            return True
        try:
            return bool(
                self.redis.set(
                    f"{self.prefix}lock:{institution_id}:{versions}{suffix}", 1, nx=True, px=self.lock_ms
                )
            )
        except redis.RedisError:
            return True

    def wait_for(self, institution_id, versions, suffix):
        key = f"{self.prefix}resp:{institution_id}:{versions}{suffix}"
        deadline = time.monotonic() + self.lock_ms / 1000
        try:
            while time.monotonic() < deadline:
                body = self.redis.get(key)
                if body is not None:
                    return body
                time.sleep(0.02)
        except redis.RedisError:
            pass
        return None

    def bump(self, institution_id, tables):
        keys = [self._vkey(institution_id, t) for t in sorted(tables)]
        if self.redis is not None:
            try:
                pipe = self.redis.pipeline(transaction=False)
                now = time.time_ns()
                for k in keys:
                    pipe.set(k, now, nx=True)
                    pipe.incr(k)
                pipe.execute()
            except redis.RedisError as exc:
                # Entries keyed on the old version stay until their TTL: the tiers bound the staleness.
                log.error("cache invalidation failed for %s: %s", tables, exc)
            return
        for k in keys:
            self.local.set(k, (self.local.get(k) or self._init_local(k)) + 1, timeout=0)


def _scope():
    p = g.principal
    return f"{p.role}:{p.user_id}" if p.role in PER_USER_ROLES else p.role


def _suffix():
    # The raw query string with its parameters in a fixed order (parsing it into args costs more);
    # a differently encoded but equal query only makes another entry, never a wrong answer.
    raw = request.query_string
    query = "&".join(sorted(raw.decode("latin-1").split("&"))) if raw else ""
    return f":{_scope()}:{request.path}?{query}"


def cached(*tables, ttl=MEDIUM, namespace=None):
    """Cache a GET view's JSON answer; `tables` are what it reads (their writes invalidate it)."""
    tables = tuple(sorted(tables))

    def deco(view):
        ns = namespace or view.__name__

        @wraps(view)
        def wrapper(*args, **kwargs):
            if not cache_on() or request.method != "GET":
                gate(g.principal)  # a no-op when authenticate() already did
                return view(*args, **kwargs)
            rc = current_app.extensions["response_cache"]
            principal = g.principal
            iid = principal.institution_id
            g.cache_namespace = ns
            suffix = _suffix()
            tier = current_app.extensions["api_tier"]
            versions, body, revoked, count = rc.fetch(
                iid, tables, suffix, tier.args(f"user:{principal.user_id}", principal.session_id)
            )
            if count is None:
                gate(principal)  # the lookup did not run in Redis: count and check on their own
            else:
                g.gated = True
                tier.judge(count)
                if revoked:
                    raise session_ended()
                if revoked is None:
                    ensure_session_live()
            g.revocation_pending = False
            if body is not None:
                stats[(ns, "hit")] += 1
                g.cache_status = "hit"
                resp = current_app.response_class(body, mimetype="application/json")
                return resp
            stats[(ns, "miss")] += 1
            g.cache_status = "miss"
            if versions is not None and not rc.lock(iid, versions, suffix):
                # Another worker is computing this hot key: wait briefly for its answer (stampede guard).
                body = rc.wait_for(iid, versions, suffix)
                if body is not None:
                    g.cache_status = "hit-after-wait"
                    return current_app.response_class(body, mimetype="application/json")
            resp = make_response(view(*args, **kwargs))
            if versions is not None and resp.status_code == 200:
                rc.store(iid, versions, suffix, resp.get_data(), ttl)
            return resp

        wrapper.cache_tables = tables
        wrapper.checks_revocation = True  # authenticate() leaves the session check to the lookup above
        return wrapper

    return deco


# --- invalidation: every ORM write to a tenant table bumps its version after commit -------------


def _note_tables(session, tables):
    iid = current_institution_id()
    if iid is None:
        return
    session.info.setdefault("dirty_tables", set()).update((iid, t) for t in tables)


def _after_flush(session, flush_context):
    tables = {
        obj.__table__.name
        for obj in (*session.new, *session.dirty, *session.deleted)
        if isinstance(obj, TenantMixin)
    }
    if tables:
        _note_tables(session, tables)


def _bulk_statement(state):
    # Core-style insert(Model)/update(Model) run through the session (bulk upserts) skip flush events.
    if state.is_insert or state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        if table is not None and "institution_id" in table.c:
            _note_tables(state.session, {table.name})


def _after_commit(session):
    dirty = session.info.pop("dirty_tables", None)
    if not dirty or not has_app_context():
        return
    rc = current_app.extensions.get("response_cache")
    if rc is None:
        return
    by_inst = {}
    for iid, table in dirty:
        by_inst.setdefault(iid, set()).add(table)
    for iid, tables in by_inst.items():
        rc.bump(iid, tables)


def register_caching(app):
    app.extensions["response_cache"] = ResponseCache(app)
    if not event.contains(Session, "after_flush", _after_flush):
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "do_orm_execute", _bulk_statement)
        # Tables noted by a rolled-back transaction stay noted: the next commit bumps them too, and an
        # extra invalidation is harmless where a missed one would serve stale data.
        event.listen(Session, "after_commit", _after_commit)


def etag_for(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def warm_institution(institution_id):
    """Beat job: fill the hot reads of one institution through the same views (so keys match)."""
    from app.core.warming import warm

    return warm(institution_id)
