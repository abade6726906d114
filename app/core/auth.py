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
                gate(g.principal)  # counted, and an ended session is told 401, not 403
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
    """before_request: sets g.principal and the tenant for every non-public endpoint, and counts the
    request against the API tier (one Redis round trip with the session check)."""
    g.principal = None
    view = current_app.view_functions.get(request.endpoint)
    if view is None or request.method == "OPTIONS":
        return None
    tier = current_app.extensions["api_tier"]
    if getattr(view, "is_public", False):
        if not getattr(view, "rate_limit_exempt", False):
            tier.gate(f"addr:{request.remote_addr}")
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
    if getattr(view, "checks_revocation", False) and request.method == "GET" and cache_on():
        return None  # a cached read counts and checks the session in its cache lookup's round trip
    gate(principal)
    return None


def cache_on():
    rc = current_app.extensions.get("response_cache")
    return rc is not None and rc.enabled


def gate(principal):
    """Count the request and refuse an ended session, in one round trip when Redis answers. Once."""
    if g.get("gated"):
        ensure_session_live()
        return
    g.gated = True
    if getattr(current_app.view_functions.get(request.endpoint), "rate_limit_exempt", False):
        ensure_session_live()
        return
    revoked = current_app.extensions["api_tier"].gate(f"user:{principal.user_id}", principal.session_id)
    if revoked:
        raise session_ended()
    if revoked is False:
        g.revocation_pending = False
    ensure_session_live()  # when Redis could not tell: the RevocationStore (rebuild or database) does


def session_ended():
    return unauthorized("This session has ended; log in again.")


def ensure_session_live():
    """Refuse a logged-out or revoked session (once per request)."""
    if g.get("revocation_pending"):
        if current_app.extensions["revocations"].is_revoked(g.principal.session_id):
            raise session_ended()
        g.revocation_pending = False
