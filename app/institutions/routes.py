from flask import Blueprint, current_app, g, jsonify

from app.audit import services as audit
from app.core.auth import ROLES, SCHOOL, roles
from app.core.crud import commit_or_conflict
from app.core.errors import ValidationFailed
from app.core.openapi import doc
from app.core.schemas import dump, fields_of, parse_body
from app.extensions import db
from app.institutions.models import Institution
from app.institutions.schemas import InstitutionOut, InstitutionUpdate

bp = Blueprint("institutions", __name__)
FIELDS = fields_of(InstitutionOut)


def _mine():
    return db.session.get(Institution, g.principal.institution_id)


@bp.get("/institution")
@roles(*ROLES, reach=SCHOOL)
@doc("The caller's institution", out=InstitutionOut, tags=["institution"])
def get_institution():
    return jsonify(dump(_mine(), FIELDS))


@bp.patch("/institution")
@roles("admin", reach=SCHOOL)
@doc(
    "Change the caller's institution settings",
    body=InstitutionUpdate,
    out=InstitutionOut,
    tags=["institution"],
)
def update_institution():
    inst = _mine()
    values = parse_body(InstitutionUpdate).model_dump(exclude_unset=True)
    for key in ("name", "currency", "timezone"):
        if key in values and values[key] is None:
            raise ValidationFailed({key: "must not be null"})
    audit.apply_update(inst, values, "institution")
    commit_or_conflict()
    # The institution is not a tenant table, so no write to it bumps a cache version by itself; the
    # answers that read its settings (threshold, time zone) declare "institutions" (app/core/caching.py).
    current_app.extensions["response_cache"].bump(inst.id, {"institutions"})
    return jsonify(dump(inst, FIELDS))
