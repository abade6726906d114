"""Year-end rollover (app/rollover/services.py): preview, apply as a job, progress, undo. Admins only."""

from flask import Blueprint, g, jsonify, url_for

from app.core.auth import SCHOOL, roles
from app.core.crud import commit_or_conflict
from app.core.errors import NotFound
from app.core.openapi import doc
from app.core.schemas import parse_body
from app.rollover import services
from app.rollover.schemas import RolloverAnswer, RolloverIn, RolloverOut

bp = Blueprint("rollover", __name__)


@bp.post("/academic-years/<int:ident>/rollover")
@roles("admin", reach=SCHOOL)
@doc(
    "Roll the school over into the next year: a preview (dry_run), or the rollover as a job to poll",
    body=RolloverIn,
    out=RolloverAnswer,
    status=202,
    tags=["rollover"],
    description="dry_run true: the preview is worked out in this request (a few aggregate queries) and "
    "is the answer's `preview`; nothing is written. Otherwise the rollover is queued as a job (its "
    "progress at GET .../rollover): next year and terms, classes with their class subjects and fee "
    "categories copied, students promoted (overrides: repeat, graduate, withdraw), leavers' logins "
    "ended, unpaid balances carried to the new year's first invoice. A year already rolled over answers "
    "with that rollover (created false) and nothing changes.",
)
def rollover(ident):
    body = parse_body(RolloverIn).model_dump(exclude_unset=True)
    ro, preview, created = services.request_rollover(ident, body, g.principal)
    answer = {
        "dry_run": bool(body.get("dry_run")),
        "created": created,
        "preview": preview,
        "rollover": services.rollover_out(ro) if ro is not None else None,
    }
    resp = jsonify(answer)
    resp.status_code = 202
    resp.headers["Location"] = url_for("rollover.get_rollover", ident=ident)
    return resp


@bp.get("/academic-years/<int:ident>/rollover")
@roles("admin", reach=SCHOOL)
@doc(
    "The year's rollover: status, its job's progress, and when applied what it did",
    out=RolloverOut,
    tags=["rollover"],
)
def get_rollover(ident):
    services.year_or_404(ident)
    ro = services.rollover_of(ident)
    if ro is None:
        raise NotFound("rollover")
    return jsonify(services.rollover_out(ro))


@bp.post("/academic-years/<int:ident>/rollover/undo")
@roles("admin", reach=SCHOOL)
@doc(
    "Undo the year's rollover while the new year has no attendance, grades or payments",
    out=RolloverOut,
    tags=["rollover"],
    errors=(409,),
    description="Removes the new year, its terms, classes, enrolments, fee categories and invoices; ends "
    "no enrolment it did not end; restores the students' grades and status, leavers' logins and the "
    "old invoices' balances. A 409 names what the new year already holds (`existing`).",
)
def undo_rollover(ident):
    ro = services.undo(ident)
    commit_or_conflict()
    return jsonify(services.rollover_out(ro))
