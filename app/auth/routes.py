from flask import Blueprint, g, jsonify

from app.auth import services
from app.auth.schemas import LoginIn, MeOut, PasswordChangeIn, RefreshIn, TokensOut
from app.core.auth import public
from app.core.openapi import doc
from app.core.ratelimit import login_limited, sensitive
from app.core.revocation import RevocationStore
from app.core.schemas import parse_body

bp = Blueprint("auth", __name__)


@bp.record_once
def _revocation_store(state):
    # Core's store (app/core/revocation.py) asks the sessions table through this object.
    state.app.extensions["revocations"] = RevocationStore(state.app, services.SessionsTable())


@bp.post("/auth/login")
@public
@login_limited
@doc("Log in with e-mail and password", body=LoginIn, out=TokensOut, tags=["auth"], errors=(401,))
def login():
    body = parse_body(LoginIn)
    return jsonify(services.login(body.email, body.password))


@bp.post("/auth/refresh")
@public
@doc(
    "Swap a refresh token for new tokens (the old one is spent)",
    body=RefreshIn,
    out=TokensOut,
    tags=["auth"],
    errors=(401,),
)
def refresh():
    return jsonify(services.refresh(parse_body(RefreshIn).refresh_token))


@bp.post("/auth/logout")
@doc("End this session: its access and refresh tokens stop working", status=204, tags=["auth"])
def logout():
    services.logout(g.principal)
    return "", 204


@bp.get("/auth/me")
@doc("The caller, with role and linked student/teacher/guardian", out=MeOut, tags=["auth"])
def me():
    return jsonify(services.me(g.principal))


@bp.post("/auth/password")
@sensitive
@doc("Change one's password (other sessions end)", body=PasswordChangeIn, status=204, tags=["auth"])
def change_password():
    body = parse_body(PasswordChangeIn)
    services.change_password(g.principal, body.current_password, body.new_password)
    return "", 204
