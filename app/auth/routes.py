from flask import Blueprint, g, jsonify

from app.auth import services
from app.auth.schemas import LoginIn, MeOut, PasswordChangeIn, RefreshIn, TokensOut
from app.core.auth import ROLES, SELF, public, roles
from app.core.loginlimit import login_attempt
from app.core.openapi import doc
from app.core.ratelimit import exempt, refreshes, sensitive
from app.core.revocation import RevocationStore
from app.core.schemas import parse_body

bp = Blueprint("auth", __name__)


@bp.record_once
def _revocation_store(state):
    # Core's store (app/core/revocation.py) asks the sessions table through this object.
    state.app.extensions["revocations"] = RevocationStore(state.app, services.SessionsTable())


@bp.post("/auth/login")
@public
@exempt  # not the API tier: its own windows (app/core/loginlimit.py)
@doc(
    "Log in with e-mail and password",
    body=LoginIn,
    out=TokensOut,
    tags=["auth"],
    errors=(401, 403, 429),  # 403: the school is suspended; 429: the login's own windows
)
def login():
    body = parse_body(LoginIn)
    with login_attempt(body.email):  # counted before the password is checked: app/core/loginlimit.py
        tokens = services.login(body.email, body.password)
    return jsonify(tokens)


@bp.post("/auth/refresh")
@public
@refreshes
@doc(
    "Swap a refresh token for new tokens (the old one is spent)",
    body=RefreshIn,
    out=TokensOut,
    tags=["auth"],
    errors=(401, 403),  # 403: the school is suspended
)
def refresh():
    return jsonify(services.refresh(parse_body(RefreshIn).refresh_token))


@bp.post("/auth/logout")
@roles(*ROLES, reach=SELF)
@doc("End this session: its access and refresh tokens stop working", status=204, tags=["auth"])
def logout():
    services.logout(g.principal)
    return "", 204


@bp.get("/auth/me")
@roles(*ROLES, reach=SELF)
@doc("The caller, with role and linked student/teacher/guardian", out=MeOut, tags=["auth"])
def me():
    return jsonify(services.me(g.principal))


@bp.post("/auth/password")
@roles(*ROLES, reach=SELF)
@sensitive
@doc("Change one's password (other sessions end)", body=PasswordChangeIn, status=204, tags=["auth"])
def change_password():
    body = parse_body(PasswordChangeIn)
    services.change_password(g.principal, body.current_password, body.new_password)
    return "", 204
