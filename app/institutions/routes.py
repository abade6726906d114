from flask import Blueprint, current_app, g, jsonify

from app.academics.models import SchoolClass
from app.audit import services as audit
from app.core.auth import ROLES, SCHOOL, roles
from app.core.crud import Resource, commit_or_conflict
from app.core.errors import ValidationFailed
from app.core.openapi import doc
from app.core.pagination import ListSpec
from app.core.schemas import dump, fields_of, parse_body
from app.extensions import db
from app.institutions.models import Closure, Institution
from app.institutions.schemas import (
    ClosureCreate,
    ClosureOut,
    ClosureUpdate,
    InstitutionOut,
    InstitutionUpdate,
)

bp = Blueprint("institutions", __name__)
FIELDS = fields_of(InstitutionOut)


# The school calendar's closed days (app/institutions/calendar.py): everyone may read them, the admin
# keeps them. A closure whose dates change is checked again when the end moves before the start.
closures = Resource(
    "closure",
    "/closures",
    Closure,
    ClosureOut,
    ListSpec(
        Closure.id,
        filters={"class_id": Closure.class_id, "kind": Closure.kind},
        sorts={"start_date": Closure.start_date},
        default_sort="start_date",
    ),
    create=ClosureCreate,
    refs={"class_id": SchoolClass},
).register(bp)


@bp.patch("/closures/<int:ident>")
@roles("admin", reach=SCHOOL)
@doc("Change a closure", body=ClosureUpdate, out=ClosureOut, tags=["closures"])
def update_closure(ident):
    closure = closures.get_or_404(ident)
    values = parse_body(ClosureUpdate).model_dump(exclude_unset=True)
    for key in values:
        if values[key] is None:
            raise ValidationFailed({key: "must not be null"})
    if values.get("end_date", closure.end_date) < values.get("start_date", closure.start_date):
        raise ValidationFailed({"end_date": "must not be before start_date"})
    audit.apply_update(closure, values, "closure")
    commit_or_conflict()
    return jsonify(closures.serialize(closure))


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
