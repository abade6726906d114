"""Tenant-safe response cache with version-number invalidation: the store, and the invalidation.

Key = institution + resource versions + caller scope + path + sorted query string. A cached read
declares what it depends on (`@cached` in app/core/admission.py, which also looks entries up: on Redis
one cached read is ONE round trip with the rate limit and the session check). Any ORM write bumps the
versions of what it changed right after the transaction commits (before the 2xx goes out), so the next
read builds a new key: no KEYS/SCAN deletes, and no stale read after an acknowledged write, in any worker
or app instance. Redis trouble means a miss, never a 500.

Versions are as fine as the data. Per institution and table there is
  ver:<iid>:<table>              bumped by every write to the table; read by answers over the whole table;
  ver:<iid>:<table>:<col>=<v>    for a table whose model names scope columns (`__cache_scopes__`, e.g.
                                 attendance_records: student_id, class_id): bumped by a write to a row with
                                 that value (before and after a change); read by an answer about one
                                 student or class (`scoped(...)`, the value taken from the path);
  ver:<iid>:<table>:*            bumped by a write whose rows are not known (a bulk UPDATE/DELETE without
                                 `cache_scopes`); read by every scoped answer of the table.
So a roll for class A bumps class A's and its students' attendance versions: class B's students keep their
entries, while the school-wide answers (chronic absentees) are invalidated, as they must be.

A write names the rows it changed, not the ones it was sent: a bulk upsert that learns them from its
RETURNING runs with `cache_scopes=AFTER` and calls `note_written` (a roll saved again unchanged
invalidates nothing). An answer whose every table is versioned keeps LONG: its TTL bounds memory, not
staleness, and a shorter one only re-reads unchanged answers.

Every key carries a TTL (entries their tier, versions CACHE_VERSION_TTL), so a shared Redis with
`maxmemory-policy volatile-lru` evicts only cache keys, never the broker's (docs/DEPLOY.md, section 3). An
evicted or expired version comes back from the clock: numbers are never reused, so old entries never
come back.

Cache only what is read more than it is written: per endpoint (namespace) and process, `StorePolicy`
counts hits, stores and invalidating writes, halved every CACHE_SKIP_WINDOW_S seconds (an exponentially
decayed count). Each store follows a miss; an endpoint whose entries are invalidated before they are read
stores more than it serves. Once an endpoint has been seen for a window, has at least MIN_EVIDENCE decayed
stores, fewer decayed hits than stores and more invalidations than hits (writes are why its entries go
unread: a cold cache's first misses are not), its misses are answered without storing (and without the
stampede lock), except one miss in PROBE_EVERY, which keeps measuring; the decay lets a changed
read/write mix win storing back.
Hits, stores, skips and invalidations per endpoint go to /metrics and /api/v1/performance.
"""

import hashlib
import logging
import time
from collections import Counter
from typing import Any, NamedTuple

import redis
from flask import current_app, has_app_context
from prometheus_client import Counter as PromCounter
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from app.core.models import TenantMixin
from app.core.tenancy import current_institution_id
from app.extensions import cache

log = logging.getLogger("schoolhouse.cache")

# TTL tiers from the seeds.
SHORT, MEDIUM, ANALYTICS, LONG = 60, 300, 1800, 3600

# (namespace, "hit"|"miss"|"store"|"skip"|"invalidation") -> count, this process.
stats: Counter = Counter()

# Aggregated across gunicorn workers (app/core/observability.py explains the multiprocess directory).
STORES = PromCounter("schoolhouse_cache_stores_total", "Response cache entries written", ["namespace"])
SKIPS = PromCounter(
    "schoolhouse_cache_skips_total",
    "Misses not stored: the endpoint is read less than written",
    ["namespace"],
)
INVALIDATIONS = PromCounter(
    "schoolhouse_cache_invalidations_total",
    "Version bumps that invalidate an endpoint's entries",
    ["namespace"],
)

ANY = "*"  # the scope part bumped by a write whose rows are not known


def record_outcome(namespace, outcome):
    stats[(namespace, outcome)] += 1


class Dep(NamedTuple):
    """What a cached answer reads: a whole table, or the rows of one scope value taken from a path argument."""

    table: str
    column: str | None = None
    arg: str | None = None


def scoped(table, column, arg="ident") -> Dep:
    """`@cached(scoped("attendance_records", "student_id"), ...)`: only writes to rows whose `column` equals
    the path argument `arg` (or writes whose rows are unknown) invalidate the answer."""
    return Dep(table, column, arg)


def version_parts(deps) -> tuple[tuple[str, str | None], ...]:
    """(key part after ver:<iid>:, path argument or None) per version key an answer reads, in order."""
    parts: list[tuple[str, str | None]] = []
    for d in deps:
        if d.column is None:
            parts.append((d.table, None))
        else:
            parts += [(f"{d.table}:{ANY}", None), (f"{d.table}:{d.column}=", d.arg)]
    return tuple(parts)


# table -> [(namespace, scope column or None)]: which endpoints a table's writes invalidate (for counting).
_readers: dict[str, list[tuple[str, str | None]]] = {}


def register_reader(namespace, deps):
    for d in deps:
        entry = (namespace, d.column)
        if entry not in _readers.setdefault(d.table, []):
            _readers[d.table].append(entry)


class StorePolicy:
    """Per process: store a miss's answer unless the endpoint's entries are written more than read."""

    MIN_EVIDENCE = 20  # decayed stores before the rule judges an endpoint
    PROBE_EVERY = 16  # while skipping, one miss in this many is still stored (keeps measuring hits)

    def __init__(self, window_s):
        self.window = window_s  # 0: always store
        self.rolled_at = time.monotonic()
        # ns -> [hits base, stores base, decayed hits, decayed stores, skipped, first seen,
        #        invalidations base, decayed invalidations]
        self.state: dict[str, list[float]] = {}

    def _roll(self, now):
        halvings = int((now - self.rolled_at) // self.window)
        if not halvings:
            return
        self.rolled_at += halvings * self.window
        factor = 0.5**halvings
        for ns, st in self.state.items():
            hits, stores, inval = stats[(ns, "hit")], stats[(ns, "store")], stats[(ns, "invalidation")]
            st[2] = (st[2] + hits - st[0]) * factor
            st[3] = (st[3] + stores - st[1]) * factor
            st[7] = (st[7] + inval - st[6]) * factor
            st[0], st[1], st[6] = hits, stores, inval

    def decayed(self, ns) -> tuple[float, float, float]:
        """(hits, stores, invalidations), decayed."""
        st = self.state.get(ns)
        if st is None:
            st = self.state[ns] = [
                stats[(ns, "hit")], stats[(ns, "store")], 0.0, 0.0, 0, time.monotonic(),
                stats[(ns, "invalidation")], 0.0,
            ]  # fmt: skip
        return (
            st[2] + stats[(ns, "hit")] - st[0],
            st[3] + stats[(ns, "store")] - st[1],
            st[7] + stats[(ns, "invalidation")] - st[6],
        )

    def should_store(self, ns) -> bool:
        if not self.window:
            return True
        self._roll(time.monotonic())
        hits, stores, invalidations = self.decayed(ns)
        st = self.state[ns]
        if stores < self.MIN_EVIDENCE or hits >= stores or time.monotonic() - st[5] < self.window:
            return True  # too little evidence yet (entries just stored have had no time to be read)
        if invalidations <= hits:
            return True  # its misses are first reads or expiries, not writes: storing pays
        st[4] += 1
        if st[4] % self.PROBE_EVERY == 0:
            return True
        stats[(ns, "skip")] += 1
        SKIPS.labels(ns).inc()
        return False


# KEYS = the version keys a write bumps; ARGV[1] = now (ns), ARGV[2] = their TTL. A missing version starts
# from the clock, as admission's (app/core/admission.py). One command for all of them: a roll that changes
# 34 marks bumps 37 keys, which as SET/INCR/EXPIRE in a pipeline were 111 commands to pack and parse
# (docs/BENCHMARKS.md, "Roll call: one command to invalidate").
_BUMP = """
for _, k in ipairs(KEYS) do
  redis.call('SET', k, ARGV[1], 'NX', 'EX', ARGV[2])
  redis.call('INCR', k)
  redis.call('EXPIRE', k, ARGV[2])
end
"""


class ResponseCache:
    def __init__(self, app):
        # This app's backend (cache.cache would be current_app's: another app when apps are made side by side)
        backend = app.extensions["cache"][cache]
        self.prefix = app.config.get("CACHE_KEY_PREFIX", "sh:")
        self.redis: Any = getattr(backend, "_write_client", None)
        self.local: Any = None if self.redis is not None else backend  # SimpleCache in the embedded default
        self.enabled = app.config.get("RESPONSE_CACHE_ENABLED", True)
        self.lock_ms = app.config.get("CACHE_LOCK_MS", 500)
        self.version_ttl = app.config.get("CACHE_VERSION_TTL", 2 * LONG)
        self.policy = StorePolicy(app.config.get("CACHE_SKIP_WINDOW_S", 60))
        self.db = self.redis.connection_pool.connection_kwargs.get("db", 0) if self.redis is not None else 0
        self.bump_script: Any = self.redis.register_script(_BUMP) if self.redis is not None else None

    def version_head(self, institution_id):
        return f"{self.prefix}ver:{institution_id}:"

    def version_keys(self, institution_id, parts, view_args):
        head = self.version_head(institution_id)
        return [head + p if a is None else f"{head}{p}{view_args[a]}" for p, a in parts]

    def entry_head(self, institution_id):
        """An entry's key is entry_head + versions + the caller's scope, path and query."""
        return f"{self.prefix}resp:{institution_id}:"

    def local_lookup(self, version_keys, head, suffix):
        """(versions, body or None) from the in-process cache (the embedded default)."""
        versions = ".".join(str(self.local.get(k) or self._init_local(k)) for k in version_keys)
        return versions, self.local.get(head + versions + suffix)

    def _init_local(self, key):
        value = time.time_ns()
        self.local.add(key, value, timeout=0)
        return self.local.get(key)

    def store(self, institution_id, versions, suffix, body, ttl, namespace):
        key = f"{self.entry_head(institution_id)}{versions}{suffix}"
        try:
            if self.redis is not None:
                self.redis.set(key, body, ex=ttl)
            else:
                self.local.set(key, body, timeout=ttl)
        except redis.RedisError as exc:
            log.warning("cache store failed: %s", exc)
            return
        stats[(namespace, "store")] += 1
        STORES.labels(namespace).inc()

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
        key = f"{self.entry_head(institution_id)}{versions}{suffix}"
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

    def bump(self, institution_id, tables, parts=()):
        """Invalidate: every table in `tables` as a whole, and each (table, part) of `parts` ("col=value"
        or ANY) on its own."""
        head = self.version_head(institution_id)
        keys = sorted({head + t for t in tables} | {f"{head}{t}:{p}" for t, p in parts})
        _count_invalidations(tables, parts)
        if self.redis is not None:
            try:
                self.bump_script(keys=keys, args=[time.time_ns(), self.version_ttl])
            except redis.RedisError as exc:
                # Entries keyed on the old version stay until their TTL: the tiers bound the staleness.
                log.error("cache invalidation failed for %s: %s", sorted(tables), exc)
            return
        for k in keys:
            self.local.set(k, (self.local.get(k) or self._init_local(k)) + 1, timeout=0)


def _count_invalidations(tables, parts):
    by_table: dict[str, set[str]] = {}
    for table, part in parts:
        by_table.setdefault(table, set()).add(part)
    for table in tables:
        written = by_table.get(table, ())
        for namespace, column in _readers.get(table, ()):
            if column is None:
                n = 1
            else:
                n = sum(1 for p in written if p == ANY or p.startswith(f"{column}="))
            if n:
                stats[(namespace, "invalidation")] += n
                INVALIDATIONS.labels(namespace).inc(n)


# --- invalidation: every ORM write to a tenant table bumps its versions after commit ---------------

_scope_columns: dict[str, tuple[str, ...]] = {}  # table -> the model's __cache_scopes__


def scope_columns(table_name) -> tuple[str, ...]:
    if not _scope_columns:
        for cls in TenantMixin.__subclasses__():
            _scope_columns[getattr(cls, "__tablename__", "")] = tuple(getattr(cls, "__cache_scopes__", ()))
    return _scope_columns.get(table_name, ())


def _note(session, notes):
    iid = current_institution_id()
    if iid is None:
        return
    session.info.setdefault("dirty_versions", set()).update((iid, t, p) for t, p in notes)


def _after_flush(session, flush_context):
    notes: set[tuple[str, str | None]] = set()
    for obj in (*session.new, *session.dirty, *session.deleted):
        if not isinstance(obj, TenantMixin):
            continue
        table = obj.__table__.name  # type: ignore[attr-defined]  # every mapped TenantMixin has a table
        notes.add((table, None))
        columns = getattr(obj, "__cache_scopes__", ())
        if columns:
            attrs = inspect(obj).attrs
            for col in columns:
                history = attrs[col].history
                # the value before a change too: the row left that scope
                values = (*history.unchanged, *history.added, *history.deleted)
                for value in values:
                    notes.add((table, f"{col}={value}"))
                if not values:  # not loaded (an expired row deleted): its scope is unknown
                    notes.add((table, ANY))
    if notes:
        _note(session, notes)


def note_written(session, table_name, scopes):
    """Invalidate, at commit, what a statement run with `.execution_options(cache_scopes=AFTER)` wrote:
    `scopes` {column: values} of the rows it really changed (read from its RETURNING). Nothing written,
    nothing invalidated: a roll saved again with the same marks keeps every cached answer."""
    if any(scopes.values()):
        _note(
            session, {(table_name, None)} | {(table_name, f"{c}={v}") for c, vs in scopes.items() for v in vs}
        )


AFTER = "after"  # cache_scopes=AFTER: the caller names the rows it changed with note_written()


def _bulk_statement(state):
    # Core-style insert(Model)/update(Model) run through the session (bulk upserts) skip flush events.
    # The statement may name the scope values it touches: .execution_options(cache_scopes={col: values}),
    # or AFTER to name them once it knows which rows changed; without them every scoped answer of the
    # table is invalidated (ANY).
    if state.is_insert or state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        if state.execution_options.get("cache_scopes") == AFTER:
            return
        if table is not None and "institution_id" in table.c:
            notes: set[tuple[str, str | None]] = {(table.name, None)}
            if scope_columns(table.name):
                given = state.execution_options.get("cache_scopes")
                if given is None:
                    notes.add((table.name, ANY))
                else:
                    notes |= {(table.name, f"{col}={v}") for col, values in given.items() for v in values}
            _note(state.session, notes)


def _after_commit(session):
    dirty = session.info.pop("dirty_versions", None)
    if not dirty or not has_app_context():
        return
    rc = current_app.extensions.get("response_cache")
    if rc is None:
        return
    by_inst: dict[int, tuple[set[str], set[tuple[str, str]]]] = {}
    for iid, table, part in dirty:
        tables, parts = by_inst.setdefault(iid, (set(), set()))
        tables.add(table)
        if part is not None:
            parts.add((table, part))
    for iid, (tables, parts) in by_inst.items():
        rc.bump(iid, tables, parts)


def register_caching(app):
    app.extensions["response_cache"] = ResponseCache(app)
    if not event.contains(Session, "after_flush", _after_flush):
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "do_orm_execute", _bulk_statement)
        # Versions noted by a rolled-back transaction stay noted: the next commit bumps them too, and an
        # extra invalidation is harmless where a missed one would serve stale data.
        event.listen(Session, "after_commit", _after_commit)


ETAG_LEN = 32  # hex characters of etag_for; a cached entry is its answer's ETag followed by the body


def etag_for(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=ETAG_LEN // 2).hexdigest()
