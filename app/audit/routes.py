from flask import Blueprint
from sqlalchemy import select

from app.audit import services
from app.audit.models import AuditEntry
from app.audit.schemas import AuditOut
from app.core.auth import SCHOOL, roles
from app.core.openapi import doc
from app.core.pagination import Filter, ListSpec, list_response
from app.core.queryargs import DATETIME
from app.core.schemas import dump, fields_of
from app.extensions import db

bp = Blueprint("audit", __name__)


@bp.record_once
def _hand_to_core(state):
    # Core records through these without knowing this package (app/core/crud.py, app/core/errors.py).
    state.app.extensions["audit_trail"] = services
    state.app.extensions["security_event"] = services.record_security_event


FIELDS = fields_of(AuditOut)

SPEC = ListSpec(
    id_column=AuditEntry.id,
    filters={
        "entity_type": AuditEntry.entity_type,
        "entity_id": AuditEntry.entity_id,
        "actor_id": AuditEntry.actor_id,
        "action": AuditEntry.action,
        "from": Filter(DATETIME, lambda s, v: s.where(AuditEntry.created_at >= v)),
        "to": Filter(DATETIME, lambda s, v: s.where(AuditEntry.created_at < v)),
    },
    default_sort="-id",
)


@bp.get("/audit-log")
@roles("admin", reach=SCHOOL)
@doc(
    "The audit trail, newest first",
    out=AuditOut,
    many=True,
    query=SPEC,
)
def list_audit():
    return list_response(db.session, select(AuditEntry), SPEC, lambda r: dump(r, FIELDS))
