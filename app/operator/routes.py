"""The operator API, /api/v1/operator/...: log in, then create, list, suspend and resume schools.

Operator tokens reach only the views here (app/core/admission.py refuses them everywhere else with
403), and every view here checks the operator's session in the database first (`operator_only`).
Schools are named by their slug in paths: the school's stable, public handle (its `id` is shown too).
"""

from functools import wraps

from flask import Blueprint, g, jsonify, request

from app.core.auth import OPERATOR, PLATFORM, public, roles
from app.core.loginlimit import login_attempt
from app.core.openapi import doc
from app.core.pagination import ListSpec, list_response
from app.core.schemas import parse_body
from app.extensions import db
from app.institutions.models import Institution
from app.operator import services
from app.operator.schemas import (
    AdminInvitationIn,
    AdminInvitationOut,
    OperatorLoginIn,
    OperatorOut,
    OperatorTokensOut,
    SchoolCreate,
    SchoolCreatedOut,
    SchoolOut,
    SuspendedOut,
    SuspendIn,
)

bp = Blueprint("operator", __name__)
TAGS = ["operator"]
SCHOOLS = ListSpec(
    Institution.id,
    sorts={"name": Institution.name, "created_at": Institution.created_at},
    search=(Institution.name, Institution.slug),
)


def operator_only(view):
    """Only an operator token, and only while its session lives (checked in the database)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        g.operator = services.check_session(g.principal)
        return view(*args, **kwargs)

    return roles(OPERATOR, reach=PLATFORM)(wrapper)


def _by():
    return f"operator {g.operator.email}"


@bp.post("/operator/login")
@public
@doc(
    "Operator login: an access token for the operator API (no refresh token; OPERATOR_TOKEN_TTL)",
    body=OperatorLoginIn,
    out=OperatorTokensOut,
    tags=TAGS,
    errors=(401, 429),  # 429: the login's own windows (app/core/loginlimit.py)
)
def login():
    body = parse_body(OperatorLoginIn)
    # Counted like a school login (app/core/loginlimit.py), in windows of their own.
    with login_attempt(f"operator:{body.email}"):
        tokens = services.login(body.email, body.password)
    return jsonify(tokens)


@bp.post("/operator/logout")
@operator_only
@doc("End this operator session", status=204, tags=TAGS)
def logout():
    services.logout(g.principal)
    return "", 204


@bp.get("/operator/me")
@operator_only
@doc("The operator", out=OperatorOut, tags=TAGS)
def me():
    return jsonify(services.operator_out(g.operator))


@bp.get("/operator/institutions")
@operator_only
@doc("Schools on this deployment", out=SchoolOut, many=True, query=SCHOOLS, tags=TAGS)
def list_schools():
    return list_response(db.session, services.schools_query(), SCHOOLS, services.school_out)


@bp.post("/operator/institutions")
@operator_only
@doc(
    "Create a school and invite its first admin by e-mail",
    body=SchoolCreate,
    out=SchoolCreatedOut,
    status=201,
    tags=TAGS,
    description="The time zone is checked against the IANA database, the country against ISO 3166-1 "
    "alpha-2 and the currency against ISO 4217. The admin's invitation link (PUBLIC_BASE_URL) works "
    "once, for INVITATION_TTL seconds. 409 when the admin's address already has a login.",
)
def create_school():
    inst, admin, invitation = services.create_school(parse_body(SchoolCreate).model_dump(), _by())
    body = {
        **services.school_out(inst),
        "admin_user_id": admin.id,
        "admin_email": admin.email,
        "invitation_expires_at": invitation.expires_at,
    }
    return jsonify(body), 201


@bp.get("/operator/institutions/<slug>")
@operator_only
@doc("One school", out=SchoolOut, tags=TAGS)
def get_school(slug):
    return jsonify(services.school_out(services.school_or_404(slug)))


@bp.post("/operator/institutions/<slug>/admin-invitation")
@operator_only
@doc(
    "Invite an admin to a school: a new link for its admin, or a new admin login (a way back in when "
    "the first admin's invitation expired or they left)",
    body=AdminInvitationIn,
    out=AdminInvitationOut,
    status=201,
    tags=TAGS,
    description="409 when the address belongs to another login (not an active admin of this school).",
)
def invite_admin(slug):
    inst = services.school_or_404(slug)
    user, invitation = services.invite_admin(inst, parse_body(AdminInvitationIn).model_dump(), _by())
    body = {"user_id": user.id, "email": user.email, "invitation_expires_at": invitation.expires_at}
    return jsonify(body), 201


@bp.post("/operator/institutions/<slug>/suspend")
@operator_only
@doc(
    "Suspend a school: its people's sessions end and they cannot log in; its records stay",
    body=SuspendIn,
    body_required=False,
    out=SuspendedOut,
    tags=TAGS,
)
def suspend_school(slug):
    reason = parse_body(SuspendIn).reason if request.content_length else None  # the body is optional
    inst = services.school_or_404(slug)
    ended = services.suspend_school(inst, _by(), reason)
    return jsonify({**services.school_out(inst), "sessions_ended": ended})


@bp.post("/operator/institutions/<slug>/resume")
@operator_only
@doc("Resume a suspended school: its people can log in again", out=SchoolOut, tags=TAGS)
def resume_school(slug):
    inst = services.school_or_404(slug)
    services.resume_school(inst, _by())
    return jsonify(services.school_out(inst))
