"""The audit trail: written in the same transaction as the change it describes."""

import logging
from datetime import date, datetime, time
from decimal import Decimal
from functools import cache

from flask import g, has_app_context, has_request_context, request
from sqlalchemy import insert, inspect, select

from app.audit.models import AuditEntry
from app.core.auth import ONEROSTER, OPERATOR
from app.core.crud import flush_or_conflict
from app.core.models import utcnow
from app.core.schemas import iso_utc
from app.core.tenancy import current_institution_id
from app.core.upsert import dialect_of, json_rows, rows_json
from app.extensions import db

# What `entry` gives: every column but the id.
FIELDS = tuple(c.name for c in AuditEntry.__table__.c if c.name != "id")

log = logging.getLogger("schoolhouse.audit")


def _plain(v):
    if isinstance(v, datetime):
        return iso_utc(v)  # kept as text and sent as it is: written like every answer's datetimes
    if isinstance(v, (date, time)):  # a time: a period's bell (app/timetable)
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    return v


def context():
    """(actor_id, request_id, ip) of the work in hand; a loop writing many entries asks once (`ctx=`).
    A job doing a user's work through the services (a OneRoster import's gradebook,
    app/oneroster/csvimport.py) names that user for the rows they audit."""
    job_actor = g.get("audit_actor_id") if has_app_context() else None
    if not has_request_context():
        return job_actor, None, None
    p = g.get("principal")
    # The platform's operator is no user of any school: its actions have no actor_id (app/operator);
    # nor has a OneRoster client (app/oneroster), whose request id leads to its client in the log.
    actor = p.user_id if p and p.role not in (OPERATOR, ONEROSTER) else None
    return (job_actor if job_actor is not None else actor), g.get("request_id"), request.remote_addr


def entry(action, entity_type, entity_id, changes=None, *, institution_id=None, actor_id=None, ctx=None):
    actor, request_id, ip = ctx or context()
    return {
        "institution_id": institution_id or current_institution_id(),
        "actor_id": actor_id if actor_id is not None else actor,
        "action": action,
        "entity_type": entity_type,
        "entity_id": None if entity_id is None else str(entity_id),
        "changes": changes,
        "request_id": request_id,
        "ip": ip,
        "created_at": utcnow(),
    }


def record(action, entity_type, entity_id, changes=None, **kw):
    """Add one audit row to the current transaction."""
    record_many([entry(action, entity_type, entity_id, changes, **kw)])


@cache
def _insert_from_json():
    rows = json_rows(AuditEntry.__table__, FIELDS)
    return insert(AuditEntry.__table__).from_select(FIELDS, select(*(rows.c[f] for f in FIELDS)))


def record_many(rows):
    """Add `entry` rows to the current transaction, as one statement (a roll writes one per changed mark)."""
    if not rows:
        return
    if dialect_of() == "postgresql":
        db.session.execute(_insert_from_json(), {"rows": rows_json(rows)})
    else:
        db.session.execute(insert(AuditEntry.__table__), rows)


def diff(obj, fields=None) -> dict:
    """{field: [before, after]} for the changed columns of an ORM object (before flush); fields=None:
    every column. Relationships are not compared: they may be lazy="raise", and the audit trail
    records their changes as their own entries."""
    out = {}
    state = inspect(obj)
    for prop in state.mapper.column_attrs:
        key = prop.key
        if fields is not None and key not in fields:
            continue
        hist = state.attrs[key].load_history()
        if hist.has_changes():
            before = hist.deleted[0] if hist.deleted else None
            after = hist.added[0] if hist.added else None
            if key == "password_hash":
                before, after = "***", "***"
            out[key] = [_plain(before), _plain(after)]
    return out


def apply_update(obj, values: dict, entity_type: str) -> dict:
    """Set the given fields, and audit the ones that really changed; returns {field: [before, after]}.
    The change is flushed before the audit row is inserted, so a unique clash is the 409 of
    flush_or_conflict (the insert would otherwise autoflush it outside any conflict handling)."""
    for key, value in values.items():
        setattr(obj, key, value)
    changes = diff(obj, values.keys())
    if changes:
        flush_or_conflict()
        record("update", entity_type, obj.id, changes)
    return changes


def snapshot(obj, fields) -> dict:
    return {f: [None, _plain(getattr(obj, f))] for f in fields if f != "password_hash"}


def record_security_event(action, *, institution_id=None, actor_id=None, detail=None):
    """Failed logins, denied access, rate-limit hits: kept even when the request's own work rolls back."""
    iid = institution_id or current_institution_id()
    if not iid:  # none, or the operator's (app/core/auth.py NO_INSTITUTION): no school's trail
        log.info("security event %s without institution: %s", action, detail)
        return
    row = entry(action, "security", None, detail, institution_id=iid, actor_id=actor_id)
    # Called where the request has written nothing yet (failed login, denied access, rate limit),
    # so committing here stores just this row, and it survives the error answer that follows.
    try:
        db.session.execute(insert(AuditEntry), [row])
        db.session.commit()
    except Exception:  # noqa: BLE001 - an audit hiccup must not turn a 401/403/429 into a 500
        db.session.rollback()
        log.exception("could not record security event %s", action)
