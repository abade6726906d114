"""Tenant isolation in one place.

Every ORM SELECT, UPDATE and DELETE on a tenant-owned model (TenantMixin) gets
`institution_id = <caller's institution>` added by `with_loader_criteria`, and every new tenant-owned
object is stamped with it (a different institution is refused). Views and services never filter by
institution themselves; a record of another institution is then simply not found (404).
Core `insert()` statements bypass the ORM, so services that bulk-insert set `institution_id` explicitly.
"""

import time

from flask import g, has_app_context
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, with_loader_criteria

from app.core.models import TenantMixin
from app.extensions import db


def current_institution_id():
    return g.get("institution_id") if has_app_context() else None


def set_current_institution(institution_id):
    g.institution_id = institution_id


def _criteria(iid):
    return with_loader_criteria(TenantMixin, lambda cls: cls.institution_id == iid, include_aliases=True)


# (id(statement), institution) -> (statement, scoped statement), for statements marked reusable. The
# entry holds the statement itself, so its id cannot be reused by another object while it is cached.
_SCOPED: dict = {}
_SCOPED_MAX = 20_000


def reusable(stmt):
    """Mark a statement that is built once and executed many times with bind parameters (see
    pagination.prepared_list): its scoped form is built once per institution and reused, so its
    SQLAlchemy cache key is computed once too, instead of on every execution (docs/BENCHMARKS.md)."""
    return stmt.execution_options(tenant_reusable=True)


def _scope_statement(state):
    if state.execution_options.get("skip_tenant"):
        return
    if not (state.is_select or state.is_update or state.is_delete):
        return
    iid = current_institution_id()
    if iid is None:
        return  # CLI, seeds, migrations and maintenance run unscoped on purpose
    state.statement = _scoped(state.statement, iid)


def _scoped(stmt, iid):
    """stmt with the institution's criteria; for a reusable statement, built once per institution."""
    if not stmt.get_execution_options().get("tenant_reusable"):
        return stmt.options(_criteria(iid))
    key = (id(stmt), iid)
    entry = _SCOPED.get(key)
    if entry is None:
        if len(_SCOPED) >= _SCOPED_MAX:
            _SCOPED.clear()
        entry = _SCOPED[key] = (stmt, stmt.options(_criteria(iid)))
    return entry[1]


def execute_reusable(session, stmt, params):
    """The rows of a plain-row select, with the scope the ORM event would add, skipping the ORM
    execution layer such a read does not need (docs/BENCHMARKS.md).

    When the session has not begun a transaction, the select runs alone on the reads engine, whose
    connections stay in autocommit (config.py `binds`): one round trip instead of three (BEGIN, the
    select, ROLLBACK). Under READ COMMITTED a lone statement sees the same snapshot either way. Inside
    a begun transaction (which may have written) it runs there."""
    iid = current_institution_id()
    scoped = stmt if iid is None else _scoped(stmt, iid)
    bind = session.get_bind()
    if session().in_transaction() or not isinstance(bind, Engine):  # (bound to a connection: tests)
        return _run(session.connection(), stmt, scoped, iid, params)
    reads = _reads_engine()
    if reads is None:  # SQLite (the embedded default): the same connection switched for the read
        with bind.connect() as conn:
            return conn.execution_options(isolation_level="AUTOCOMMIT").execute(scoped, params).all()
    with reads.connect() as conn:
        started = time.perf_counter()
        rows = _run(conn, stmt, scoped, iid, params)
        _observe(time.perf_counter() - started, scoped)
        return rows


def _reads_engine():
    return db.engines.get("reads")


# Where a lone read's time goes (app/core/observability.py `observe_lone_read`, handed over by the app
# factory): the reads engine has no statement events, which would cost every read an event dispatcher
# (observability.instrument_engine). Set by the app, not imported: observability imports this module
# (through app/core/admission.py). Until an app sets it, times go nowhere.
def _observe(elapsed, statement):
    return None


def time_lone_reads(observe):
    global _observe
    _observe = observe


# (id(statement), institution, dialect) -> (statement, driver SQL, the SQL's own bound values), or
# (statement, None, None) where SQLAlchemy must run it. As _SCOPED, the entry holds the statement.
_DRIVER: dict = {}


def _run(conn, stmt, scoped, iid, params):
    """The rows of `scoped` on conn. A reusable statement runs as the SQL it compiles to, compiled once
    per institution, skipping what SQLAlchemy does per execution (the cache key's parameters matched to
    the compiled ones, the execution context's processors; docs/BENCHMARKS.md). Events, errors and the
    rows' names stay SQLAlchemy's (exec_driver_sql): a Core row is named by the SQL's own labels, which
    is what the driver returns."""
    if not stmt.get_execution_options().get("tenant_reusable"):
        return conn.execute(scoped, params).all()
    dialect = conn.dialect
    key = (id(stmt), iid, dialect.name)
    entry = _DRIVER.get(key)
    if entry is None:
        if len(_DRIVER) >= _SCOPED_MAX:
            _DRIVER.clear()
        entry = _DRIVER[key] = (stmt, *_driver_form(scoped, dialect))
    if entry[1] is None:
        return conn.execute(scoped, params).all()
    return conn.exec_driver_sql(entry[1], {**entry[2], **params}).all()


def _driver_form(scoped, dialect):
    """(SQL, its own bound values: the scope's institution, a literal limit) for a statement the driver
    can run as compiled: named parameters, none expanded at execution, and no value that SQLAlchemy
    converts on the way in or out; else (None, None)."""
    if dialect.paramstyle not in ("pyformat", "named"):
        return None, None
    compiled = scoped.compile(dialect=dialect)
    if compiled.post_compile_params or compiled.literal_execute_params or compiled.escaped_bind_names:
        return None, None
    if any(name != bound.key for bound, name in compiled.bind_names.items() if bound.required):
        return None, None  # a caller's parameter renamed in the SQL (a truncated long name)
    try:
        for bound in compiled.binds.values():
            if bound.type.dialect_impl(dialect).bind_processor(dialect) is not None:
                return None, None
        for column in scoped.selected_columns:
            if column.type.dialect_impl(dialect).result_processor(dialect, None) is not None:
                return None, None
    except Exception:  # a type that needs the driver's column type to decide (numeric): SQLAlchemy's
        return None, None
    own = {name: bound.effective_value for bound, name in compiled.bind_names.items() if not bound.required}
    return compiled.string, own


def _stamp_new_rows(session, flush_context, instances):
    iid = current_institution_id()
    if iid is None:
        return
    for obj in session.new:
        if isinstance(obj, TenantMixin):
            if obj.institution_id is None:
                obj.institution_id = iid
            elif obj.institution_id != iid:
                raise PermissionError("refusing to write a row of another institution")


def register_tenancy(app):
    if not event.contains(Session, "do_orm_execute", _scope_statement):
        event.listen(Session, "do_orm_execute", _scope_statement)
        event.listen(Session, "before_flush", _stamp_new_rows)
