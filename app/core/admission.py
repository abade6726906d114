"""Admission: what every request passes before its view runs, in one place.

For each request `admit()` (a before-request hook):
  1. public views: counts the caller's address against the API tier (unless exempt); nothing else;
  2. decodes the bearer token (app/core/auth.py) and sets the caller and the tenant;
  3. counts the request against the API tier, checks that the session is still live and, for a GET of a
     view marked `@cached`, looks up the cached answer: ONE Redis round trip (the `_ADMIT` script below);
  4. answers a cache hit from here (the view does not run), or notes the miss so that the `@cached`
     wrapper stores the view's answer.
`finish()` (after-request) adds the X-Cache and optional X-RateLimit-* headers.

The per-request admission state (`_State` on `g.admission`) is read and written in this module only;
others ask `cache_outcome()`. Redis trouble costs a miss and an in-process count, never a 500; the
session check then asks the RevocationStore (app/core/revocation.py), whose source of truth is the
database. Failed logins are counted before the password is checked (app/core/loginlimit.py); the
sensitive budget stays a Flask-Limiter route limit (app/core/ratelimit.py).

The API tier is counted by hand (a fixed window in the same script) because Flask-Limiter's general path
was a round trip of its own plus a large share of a cached read's CPU (docs/BENCHMARKS.md, "Where the
time went"); `limits` parses the setting and counts in process when Redis is down.
"""

import logging
import time
from functools import wraps
from typing import Any

import redis
from flask import current_app, g, make_response, request
from limits import parse as parse_limit
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from app.core.auth import ONEROSTER, OPERATOR, Principal, principal_from_request, security_event, unauthorized
from app.core.caching import (
    ETAG_LEN,
    MEDIUM,
    Dep,
    ResponseCache,
    etag_for,
    record_outcome,
    register_reader,
    version_parts,
)
from app.core.errors import Forbidden
from app.core.ratelimit import too_many_requests
from app.core.redisconn import LIMITER_DB, make_client, same_server
from app.core.tenancy import set_current_institution

log = logging.getLogger("schoolhouse.admission")

PER_USER_ROLES = frozenset({"teacher", "guardian", "student"})  # their cached rows differ per user

# KEYS = the cache version keys the view reads (app/core/caching.py; none when there is no lookup).
# ARGV[1] = API-tier counter key ('' = not counted), ARGV[2] = the session id ('' = none; revoked sessions
# are members of revoked:sessions, app/core/revocation.py), ARGV[3] = entry key head, ARGV[4] = entry key
# tail ('' = no lookup), ARGV[5] = now (ns; the app's clock, as app/core/caching.py bumps), ARGV[6] = an
# entry for the read log ('' = none; see READ_LOG_KEY). What is fixed
# per app (the two dbs, the counter's expiry, a new version key's TTL) is written into the script's text
# once (`_admit_script`): fewer arguments to pack and send on every request.
# Counters and revocations live in the limiter db, which is never flushed as a cache; entries in the
# cache db. Redis 7 scopes SELECT inside a script to the script, so the connection keeps its own db.
# A missing version is created from the clock (numbers are never reused, so an evicted or
# expired version key cannot bring old entries back); like every cache key it carries a TTL.
# Returns {count, revoked (1/0, -1 = Redis cannot tell), versions, body}.
_ADMIT = """
redis.call('SELECT', {limiter_db})
local count = 0
if ARGV[1] ~= '' then
  count = redis.call('INCR', ARGV[1])
  if count == 1 then redis.call('EXPIRE', ARGV[1], {expiry}) end
end
local revoked = -1
if ARGV[2] ~= '' and redis.call('EXISTS', 'revoked:sessions:ready') == 1 then
  revoked = redis.call('ZSCORE', 'revoked:sessions', ARGV[2]) and 1 or 0
end
if ARGV[6] ~= '' and revoked ~= 1 then redis.call('RPUSH', '{read_log_key}', ARGV[6]) end
if ARGV[4] == '' then return {{count, revoked, false, false}} end
redis.call('SELECT', {cache_db})
local parts = {{}}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v then
    redis.call('SET', k, ARGV[5], 'NX', 'EX', {version_ttl})
    v = redis.call('GET', k)
  end
  parts[i] = v
end
local versions = table.concat(parts, '.')
return {{count, revoked, versions, redis.call('GET', ARGV[3] .. versions .. ARGV[4])}}
"""


# The read log: a domain that must record who read what (app/privacy: the record of disclosures) names
# the endpoints and, per read, an entry (`register_read_log`). Admission appends the entry to this list
# (limiter db: no TTL, never evicted, never flushed as a cache) in the same round trip, for an answer from
# the cache too, and the domain moves the list into its table (`drain_read_log`). Without Redis (or when
# it fails) the domain's sink stores the entry at once. A read refused for its role is not logged; a read
# of a record that turns out not to exist is (it was asked for).
READ_LOG_KEY = "reads:pending"


def _admit_script(client, limiter_db, cache_db, expiry, version_ttl):
    return client.register_script(
        _ADMIT.format(limiter_db=int(limiter_db), cache_db=int(cache_db), expiry=int(expiry),
                      version_ttl=int(version_ttl), read_log_key=READ_LOG_KEY)
    )  # fmt: skip


class _State:
    """One request's admission: who is counted, and what the cache said."""

    __slots__ = ("who", "window_end", "count", "cache_status", "namespace", "store")

    def __init__(self):
        self.who: str | None = None
        self.window_end = 0
        self.count = 0
        self.cache_status: str | None = None
        self.namespace: str | None = None
        self.store: tuple[int, str, str, int] | None = None  # (institution, versions, suffix, ttl) to store


class Admission:
    def __init__(self, app):
        cfg = app.config
        self.limit_enabled = cfg["RATELIMIT_ENABLED"]
        self.limit = parse_limit(cfg["RATELIMIT_API"])
        self.window = int(self.limit.get_expiry())
        self.headers_enabled = cfg.get("RATELIMIT_HEADERS_ENABLED", False)
        self.fallback = FixedWindowRateLimiter(MemoryStorage())  # Redis absent or down: per process
        self.redis = make_client(app, LIMITER_DB)
        self.cache: ResponseCache = app.extensions["response_cache"]
        self.revocations = app.extensions["revocations"]
        self.read_logs = app.extensions.setdefault("read_logs", {})  # register_read_log fills it
        cache_db, ttl = self.cache.db, self.cache.version_ttl
        self.script = (
            _admit_script(self.redis, LIMITER_DB, cache_db, self.window + 1, ttl)
            if self.redis is not None
            else None
        )
        # CACHE_REDIS_URL on another server (config.py): the lookup is a second script call there.
        self.cache_script: Any = None
        if (
            self.script is not None
            and self.cache.redis is not None
            and not same_server(self.redis, self.cache.redis)
        ):
            self.cache_script = _admit_script(self.cache.redis, cache_db, cache_db, 0, ttl)

    # --- the one round trip -------------------------------------------------------------------------

    def _counter(self, state, who):
        if not self.limit_enabled or who is None:
            return ""
        slot = int(time.time()) // self.window
        state.who, state.window_end = who, (slot + 1) * self.window
        return f"sh-rl:api:{who}:{slot}"

    def _run(self, state, who, session_id, lookup, entry=""):
        """(revoked, versions, body): revoked is None when Redis could not tell; versions is None when
        the cache could not be asked (no lookup, or Redis down)."""
        counter = self._counter(state, who)
        revocation_key = session_id or ""
        if self.script is not None:
            keys, head, tail = lookup if lookup and self.cache_script is None else ((), "", "")
            try:
                count, revoked, versions, body = self.script(
                    keys=keys, args=[counter, revocation_key, head, tail, time.time_ns(), entry]
                )
                self._judge(state, count)
                if lookup and self.cache_script is not None:
                    versions, body = self._split_lookup(lookup)
                return (
                    (None if revoked < 0 else bool(revoked)),
                    (versions.decode() if versions else None),
                    body,
                )
            except redis.RedisError as exc:
                log.warning("admission: Redis unavailable, counting in process: %s", exc)
                self.revocations.redis_failed()
        if entry:
            self.read_logs[SINK]([entry])
        if counter:
            self._count_in_process(state)
        if lookup and self.cache.redis is None:  # the embedded default: the in-process cache
            versions, body = self.cache.local_lookup(*lookup)
            return None, versions, body
        return None, None, None

    def _split_lookup(self, lookup):
        keys, head, tail = lookup
        try:
            _, _, versions, body = self.cache_script(keys=keys, args=["", "", head, tail, time.time_ns()])
            return versions, body
        except redis.RedisError as exc:
            log.warning("admission: the cache's Redis is unavailable: %s", exc)
            return None, None

    def _count_in_process(self, state):
        who = state.who
        allowed = self.fallback.hit(self.limit, "api", who)
        stats = self.fallback.get_window_stats(self.limit, "api", who)
        state.window_end = int(stats.reset_time)
        self._judge(state, self.limit.amount - stats.remaining if allowed else self.limit.amount + 1)

    def _judge(self, state, count):
        if not count:
            return
        state.count = count
        if count > self.limit.amount:
            raise too_many_requests(self.limit, state.window_end)

    def _lookup_args(self, principal, view):
        """(version keys, entry head, entry tail) of this GET for this caller."""
        scope = (
            f"{principal.role}:{principal.user_id}" if principal.role in PER_USER_ROLES else principal.role
        )
        # The raw query string with its parameters in a fixed order (parsing it into args costs more);
        # a differently encoded but equal query only makes another entry, never a wrong answer.
        raw = request.query_string
        query = "&".join(sorted(raw.decode("latin-1").split("&"))) if raw else ""
        iid = principal.institution_id
        return (
            self.cache.version_keys(iid, view.cache_versions, request.view_args),
            self.cache.entry_head(iid),
            (f":{scope}:{request.path}?{query}"),
        )

    # --- the hooks ------------------------------------------------------------------------------------

    def admit(self):
        state = g.admission = _State()
        g.principal = None
        set_current_institution(None)  # a public view runs as no school, whatever ran before in this context
        view = current_app.view_functions.get(request.endpoint or "")
        if view is None or request.method == "OPTIONS":
            return None
        exempt = getattr(view, "rate_limit_exempt", False)
        if getattr(view, "is_public", False):
            if not exempt:
                self._run(state, f"addr:{request.remote_addr}", None, None)
            return None
        principal = principal_from_request()
        g.principal = principal
        set_current_institution(principal.institution_id)
        lookup = None
        if request.method == "GET" and self.cache.enabled and getattr(view, "cache_versions", None):
            lookup = self._lookup_args(principal, view)
        # Operators (app/operator) are numbered apart from users: their own API-tier counters.
        who = None if exempt else principal.counter_key
        allowed = getattr(view, "allowed_roles", None)
        if allowed is None and principal.role in (OPERATOR, ONEROSTER):
            allowed = ()  # no school view is open to the operator or a client, only those naming its role
        permitted = allowed is None or principal.role in allowed
        entry = ""
        log_read = self.read_logs.get(request.endpoint) if self.read_logs else None
        if log_read is not None and permitted:
            entry = log_read(principal, request.view_args or {}) or ""
        revoked, versions, body = self._run(state, who, principal.session_id, lookup, entry)
        if revoked is None:  # Redis could not tell: the store asks the database (and rebuilds the copy)
            revoked = self.revocations.is_revoked(principal.session_id)
        elif not revoked:  # unless a revocation Redis missed is on record (app/core/revocation.py)
            revoked = not self.revocations.confirm_live(principal.session_id)
        if revoked:
            raise session_ended()
        if not permitted:
            security_event("access_denied", detail={"path": request.path, "role": principal.role})
            raise Forbidden()
        if lookup is None:
            return None
        return self._answer_from_cache(state, view, principal.institution_id, versions, body, lookup[2])

    def _answer_from_cache(self, state, view, iid, versions, body, suffix):
        state.namespace = view.cache_namespace
        if body is not None:
            return self._hit(state, "hit", body)
        state.cache_status = "miss"
        if versions is None:  # the cache could not be asked: the view answers, nothing is stored
            return None
        if not self.cache.policy.should_store(state.namespace):
            return None  # written more than read (caching.StorePolicy): answer, store nothing, no lock
        if not self.cache.lock(iid, versions, suffix):
            # Another worker is computing this hot key: wait briefly for its answer (stampede guard).
            body = self.cache.wait_for(iid, versions, suffix)
            if body is not None:
                return self._hit(state, "hit-after-wait", body)
        state.store = (iid, versions, suffix, view.cache_ttl)
        return None

    @staticmethod
    def _hit(state, status, entry):
        state.cache_status = status
        record_outcome(state.namespace, "hit")
        # An entry is the answer's ETag (computed once, when stored) followed by its body.
        resp = current_app.response_class(entry[ETAG_LEN:], mimetype="application/json")
        resp.headers.add("ETag", f'"{entry[:ETAG_LEN].decode()}"')
        return resp

    def store_miss(self, response):
        """The `@cached` wrapper's half: keep a 200 answer under the key the lookup missed."""
        state = g.get("admission")
        if state is None or state.cache_status != "miss":
            return
        record_outcome(state.namespace, "miss")
        if state.store is not None and response.status_code == 200:
            iid, versions, suffix, ttl = state.store
            body = response.get_data()
            tag = etag_for(body)
            response.headers["ETag"] = f'"{tag}"'  # app/core/requestctx.py then need not hash it again
            self.cache.store(iid, versions, suffix, tag.encode() + body, ttl, state.namespace)

    def finish(self, response):
        state = g.get("admission")
        if state is None:
            return response
        headers = response.headers
        if state.cache_status:
            headers.add("X-Cache", state.cache_status)
        if self.headers_enabled and state.count:
            headers.setdefault("X-RateLimit-Limit", str(self.limit.amount))
            headers.setdefault("X-RateLimit-Remaining", str(max(0, self.limit.amount - state.count)))
            headers.setdefault("X-RateLimit-Reset", str(state.window_end))
        return response

    # --- cache warming (app/core/warming.py) -----------------------------------------------------------

    def prefill(self, view, view_args, principal: Principal) -> bool:
        """Answer a cached GET for `principal` without counting it or checking a session (the warming
        job is no session). Call inside a request context for the path. True when an entry was filled."""
        state = g.admission = _State()
        g.principal = principal
        set_current_institution(principal.institution_id)
        lookup = self._lookup_args(principal, view)
        _, versions, body = self._run(state, None, None, lookup)
        if self._answer_from_cache(state, view, principal.institution_id, versions, body, lookup[2]):
            return False
        view(**view_args)
        return state.store is not None


def session_ended():
    return unauthorized("This session has ended; log in again.")


def cache_outcome():
    """(namespace, "hit"/"miss"...) of this request's cache lookup, or None (metrics read it)."""
    state = g.get("admission")
    if state is None or state.cache_status is None:
        return None
    return state.namespace or request.endpoint, state.cache_status


def cached(*reads, ttl=MEDIUM, namespace=None):
    """Mark a GET view's JSON answer as cached; `reads` are what it reads, each a table name (any write to
    the table invalidates it) or `caching.scoped(table, column, arg)` (only writes to the rows of the
    path argument's value do). Admission looks the answer up before the view runs; this wrapper stores
    it on a miss."""
    deps = tuple(
        sorted((r if isinstance(r, Dep) else Dep(r) for r in reads), key=lambda d: (d.table, d.column or ""))
    )

    def deco(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            resp = make_response(view(*args, **kwargs))
            current_app.extensions["admission"].store_miss(resp)
            return resp

        wrapper.cache_versions = version_parts(deps)  # type: ignore[attr-defined]
        wrapper.cache_ttl = ttl  # type: ignore[attr-defined]
        wrapper.cache_namespace = namespace or view.__name__  # type: ignore[attr-defined]
        register_reader(wrapper.cache_namespace, deps)  # type: ignore[attr-defined]
        return wrapper

    return deco


SINK = "__sink__"


def register_read_log(app, endpoints, sink):
    """Log reads of `endpoints` ({endpoint: entry(principal, view_args) -> str or None}); `sink(entries)`
    stores entries when Redis cannot take them. Called by a domain when its blueprint is registered."""
    logs = app.extensions.setdefault("read_logs", {})
    logs.update(endpoints)
    logs[SINK] = sink


def drain_read_log(client, store, batch=1000) -> int:
    """Move the read log into the domain's table: `store(entries)` commits each batch before it leaves
    the list, so a failure stores nothing twice and loses nothing. Run by one process at a time."""
    moved = 0
    while True:
        entries = client.lrange(READ_LOG_KEY, 0, batch - 1)
        if not entries:
            return moved
        store(entries)
        client.ltrim(READ_LOG_KEY, len(entries), -1)
        moved += len(entries)


def register_admission(app):
    """After the extensions (the cache and the revocation store) are set up."""
    admission = app.extensions["admission"] = Admission(app)
    app.before_request(admission.admit)
    app.after_request(admission.finish)
