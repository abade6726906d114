"""Who is calling: bearer-token authentication for every API request, in one before-request hook.

The access token carries the user, institution, role and linked person ids, so an authenticated
request needs no user lookup; only revocation (logout, refresh-token reuse, role change) is checked.
"""
import re
from dataclasses import dataclass
from functools import wraps

import jwt
from flask import current_app, g, request

from app.core.errors import ApiError, Forbidden
from app.core.security import decode_access_token
from app.core.tenancy import set_current_institution


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    institution_id: int
    role: str
    session_id: str
    student_id: int | None = None
    teacher_id: int | None = None
    guardian_id: int | None = None

    @classmethod
    def from_claims(cls, c):
        return cls(int(c["sub"]), c["ins"], c["role"], c["sid"], c.get("stu"), c.get("tea"), c.get("gua"))


def public(view):
    """Marks a view that needs no token (login, refresh, docs, health)."""
    view.is_public = True
    return view


def roles(*allowed):
    """Allow only these roles; others get 403 (the record itself is still looked up in scope)."""
    def deco(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if g.principal.role not in allowed:
                ensure_session_live()  # an ended session is told 401, not 403
                security_event("access_denied", detail={"path": request.path, "role": g.principal.role})
                raise Forbidden()
            return view(*args, **kwargs)
        wrapper.allowed_roles = allowed
        return wrapper
    return deco


def current() -> Principal:
    return g.principal


def security_event(action, **kw):
    hook = current_app.extensions.get("security_event")
    if hook:
        hook(action, **kw)


_BEARER = re.compile(r"^Bearer\s+(\S+)$", re.I)


def unauthorized(detail):
    return ApiError(401, detail, headers={"WWW-Authenticate": 'Bearer realm="schoolhouse"'})


def authenticate():
    """before_request: sets g.principal and the tenant for every non-public endpoint."""
    g.principal = None
    view = current_app.view_functions.get(request.endpoint)
    if view is None or getattr(view, "is_public", False) or request.method == "OPTIONS":
        return None
    match = _BEARER.match(request.headers.get("Authorization", ""))
    if not match:
        raise unauthorized("Send an access token: Authorization: Bearer <token>.")
    try:
        claims = decode_access_token(current_app.config["SECRET_KEY"], match.group(1))
    except jwt.ExpiredSignatureError:
        raise unauthorized("The access token has expired; refresh it.") from None
    except jwt.InvalidTokenError:
        raise unauthorized("The access token is not valid.") from None
    principal = Principal.from_claims(claims)
    g.principal = principal
    set_current_institution(principal.institution_id)
    g.revocation_pending = True
    if not (getattr(view, "checks_revocation", False) and request.method == "GET"):
        ensure_session_live()
    # else: a cached read checks the session in the same Redis round trip as its cache lookup.
    return None


def session_ended():
    return unauthorized("This session has ended; log in again.")


def ensure_session_live():
    """Refuse a logged-out or revoked session (once per request)."""
    if g.get("revocation_pending"):
        if current_app.extensions["revocations"].is_revoked(g.principal.session_id):
            raise session_ended()
        g.revocation_pending = False
