"""Who is calling: the bearer token's principal, role rules, security events.

The access token carries the user, institution, role and linked person ids, so an authenticated
request needs no user lookup; only revocation (logout, refresh-token reuse, role change) is checked,
by admission (app/core/admission.py), which calls `principal_from_request` before every view.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import wraps

import jwt
from flask import current_app, g, request

from app.core.errors import ApiError, Forbidden
from app.core.security import decode_access_token

# The platform's operator (app/operator) belongs to no school. Its token names this role and this
# institution, which owns no row: should a query run for it anyway, the tenant scope
# (app/core/tenancy.py) finds nothing. Admission lets it reach only views that name the role.
OPERATOR = "operator"
NO_INSTITUTION = 0
# A OneRoster client (app/oneroster): a platform that holds a school's client credentials. It is no
# user: its tokens name no user (`user_id` NO_USER, so nothing can store it as one) but its client, the
# school and the OneRoster scopes granted; only the views naming this role admit it.
ONEROSTER = "oneroster"
NO_USER = 0


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    institution_id: int
    role: str
    session_id: str
    student_id: int | None = None
    teacher_id: int | None = None
    guardian_id: int | None = None
    client_id: int | None = None  # a OneRoster client's token
    scopes: frozenset = frozenset()  # its OneRoster scopes

    @classmethod
    def from_claims(cls, c):
        if c["role"] == ONEROSTER:
            scopes = frozenset(c.get("scp", "").split())
            return cls(NO_USER, c["ins"], ONEROSTER, c["sid"], client_id=c.get("cid"), scopes=scopes)
        return cls(int(c["sub"]), c["ins"], c["role"], c["sid"], c.get("stu"), c.get("tea"), c.get("gua"))

    @property
    def counter_key(self) -> str:
        """Whom the API tier counts (app/core/admission.py): operators and clients apart from users."""
        if self.role == OPERATOR:
            return f"operator:{self.user_id}"
        if self.role == ONEROSTER:
            return f"client:{self.client_id}"
        return f"user:{self.user_id}"


ROLES = ("admin", "teacher", "guardian", "student", "accountant")
WHOLE_SCHOOL = "whole school"


@dataclass(frozen=True)
class Reach:
    """A named rule for the records a view reaches, with what each role reaches under it, in words.

    Every view declares its roles and its reach once, with `@roles(..., reach=...)`; docs/ACCESS.md
    (scripts/access_matrix.py), the OpenAPI document (x-roles) and tests/test_access_walk.py read that
    declaration. The rules themselves, and the reaches that name them, live in app/access/rules.py.
    """

    name: str
    by_role: Mapping[str, str]

    def whole_school_for(self, role) -> bool:
        return self.by_role.get(role) == WHOLE_SCHOOL


SCHOOL = Reach("school", dict.fromkeys(ROLES, WHOLE_SCHOOL))
SELF = Reach("self", dict.fromkeys(ROLES, "self"))
# Operator views: numbers about the running service, not any school's records.
SERVICE = Reach("service", dict.fromkeys(ROLES, "the service, not school records"))
# The platform operator's own views (app/operator): schools as tenants, never a school's records.
PLATFORM = Reach("platform", {OPERATOR: "schools as tenants (create, list, suspend), no school's records"})


def public(view):
    """Marks a view that needs no token (login, refresh, docs, health)."""
    view.is_public = True
    return view


def roles(*allowed, reach: Reach):
    """Allow only these roles; others get 403. `reach` names the rule by which the view reaches records
    (a record out of reach answers 404, as a missing one)."""
    unknown = set(allowed) - {*ROLES, OPERATOR, ONEROSTER}
    if not allowed or unknown:
        raise ValueError(f"@roles needs known roles, got {allowed!r}")
    unsaid = [r for r in allowed if r not in reach.by_role]
    if unsaid:
        raise ValueError(f"reach {reach.name!r} does not say what {unsaid} reach")

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
        wrapper.reach = reach  # type: ignore[attr-defined]  # read by declared_access
        return wrapper

    return deco


def declared_access(view) -> dict | None:
    """A view's declaration: {"public": True}, or {"roles": (...), "reach": Reach}; None if it has none."""
    if getattr(view, "is_public", False):
        return {"public": True}
    allowed = getattr(view, "allowed_roles", None)
    if allowed is None:
        return None
    return {"roles": allowed, "reach": view.reach}


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
