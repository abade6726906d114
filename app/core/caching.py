"""Tenant-safe response cache with version-number invalidation: the store, and the invalidation.

Key = institution + resource versions + caller scope + path + sorted query string. A cached read
declares the tables it depends on (`@cached` in app/core/admission.py, which also looks entries up:
on Redis one cached read is ONE round trip with the rate limit and the session check). Any ORM write
to one of those tables bumps the table's per-institution version right after the transaction commits
(before the 2xx goes out), so the next read builds a new key: no KEYS/SCAN deletes, and no stale read
after an acknowledged write, in any worker or app instance. Redis trouble means a miss, never a 500.
"""

import hashlib
import logging
import time
from collections import Counter
from typing import Any

import redis
from flask import current_app, has_app_context
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.core.models import TenantMixin
from app.core.tenancy import current_institution_id
from app.extensions import cache

log = logging.getLogger("schoolhouse.cache")

# TTL tiers from the seeds.
SHORT, MEDIUM, ANALYTICS, LONG = 60, 300, 1800, 3600

stats: Counter = Counter()  # (namespace, "hit"|"miss") -> count, this process; metrics export it


def record_outcome(namespace, outcome):
    stats[(namespace, outcome)] += 1


class ResponseCache:
    def __init__(self, app):
        backend = cache.cache
        self.prefix = app.config.get("CACHE_KEY_PREFIX", "sh:")
        self.redis: Any = getattr(backend, "_write_client", None)
        self.local: Any = None if self.redis is not None else backend  # SimpleCache in the embedded default
        self.enabled = app.config.get("RESPONSE_CACHE_ENABLED", True)
        self.lock_ms = app.config.get("CACHE_LOCK_MS", 500)
        self.db = self.redis.connection_pool.connection_kwargs.get("db", 0) if self.redis is not None else 0

    def _vkey(self, institution_id, table):
        return f"{self.prefix}ver:{institution_id}:{table}"

    def version_keys(self, institution_id, tables):
        return [self._vkey(institution_id, t) for t in tables]

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

    def store(self, institution_id, versions, suffix, body, ttl):
        key = f"{self.entry_head(institution_id)}{versions}{suffix}"
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


# --- invalidation: every ORM write to a tenant table bumps its version after commit -------------


def _note_tables(session, tables):
    iid = current_institution_id()
    if iid is None:
        return
    session.info.setdefault("dirty_tables", set()).update((iid, t) for t in tables)


def _after_flush(session, flush_context):
    tables = {
        obj.__table__.name  # type: ignore[attr-defined]  # every mapped TenantMixin has a table
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
    by_inst: dict[int, set[str]] = {}
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
