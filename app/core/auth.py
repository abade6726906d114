"""Who is calling: the bearer token's principal, role rules, security events.

The access token carries the user, institution, role and linked person ids, so an authenticated
request needs no user lookup; only revocation (logout, refresh-token reuse, role change) is checked,
by admission (app/core/admission.py), which calls `principal_from_request` before every view.
"""

import re
from dataclasses import dataclass
from functools import wraps

import jwt
from flask import current_app, g, request

from app.core.errors import ApiError, Forbidden
from app.core.security import decode_access_token

ROLES = ("admin", "teacher", "guardian", "student", "accountant")


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
            # Admission already refused these (and told an ended session 401 first); this keeps the
            # rule on the view itself for any caller that reaches it another way.
            if g.principal.role not in allowed:
                security_event("access_denied", detail={"path": request.path, "role": g.principal.role})
                raise Forbidden()
            return view(*args, **kwargs)

        wrapper.allowed_roles = allowed  # type: ignore[attr-defined]  # read by admission
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


def principal_from_request() -> Principal:
    """The caller named by the request's bearer token; 401 when it is missing, expired or not ours."""
    match = _BEARER.match(request.headers.get("Authorization", ""))
    if not match:
        raise unauthorized("Send an access token: Authorization: Bearer <token>.")
    try:
        claims = decode_access_token(current_app.config["SECRET_KEY"], match.group(1))
    except jwt.ExpiredSignatureError:
        raise unauthorized("The access token has expired; refresh it.") from None
    except jwt.InvalidTokenError:
        raise unauthorized("The access token is not valid.") from None
    return Principal.from_claims(claims)
