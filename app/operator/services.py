"""The operator's work: its own logins and sessions, and schools — create (with the first admin's
invitation), suspend, resume.

Suspending a school keeps every record. Its people's sessions end at once (their next request answers
401, app/core/admission.py), and logging in, refreshing and setting a password from a link answer 403
"This school is suspended" (app/institutions/services.py) until it is resumed.

What the operator does to a school goes on that school's audit trail, with no actor (the operator is
no user of the school) and the operator's e-mail address (or "cli") in the entry.
"""

import re
import unicodedata
from datetime import timedelta

from flask import current_app, request
from sqlalchemy import func, select, update

from app.audit import services as audit
from app.auth.accounts import issue_invitation, revoke_institution_sessions, unusable_password_hash
from app.core.auth import NO_INSTITUTION, OPERATOR, Principal, unauthorized
from app.core.crud import commit_or_conflict
from app.core.errors import Conflict, NotFound, ValidationFailed
from app.core.models import utcnow
from app.core.security import encode_access_token, hash_password, new_session_id, verify_password
from app.extensions import db
from app.institutions.models import DEFAULT_GRADING_SCALE, Institution
from app.notifications.services import institution_scope
from app.operator.models import Operator, OperatorSession
from app.people.models import User
from app.people.services import add_user

SCHOOL_FIELDS = ("id", "name", "slug", "timezone", "country", "currency", "created_at", "suspended_at")


# --- operators ------------------------------------------------------------------------------------------


def operator_out(op: Operator) -> dict:
    return {"id": op.id, "email": op.email, "name": op.name, "last_login_at": op.last_login_at}


def create_operator(email: str, name: str, password: str) -> Operator:
    """`values` already checked (app/operator/schemas.py OperatorCreate, the password policy)."""
    taken = db.session.execute(select(Operator.id).where(func.lower(Operator.email) == email.lower())).first()
    if taken:
        raise ValidationFailed({"email": "is already an operator"})
    op = Operator(
        email=email.lower(),
        name=name,
        password_hash=hash_password(password),
        is_active=True,
        created_at=utcnow(),
    )
    db.session.add(op)
    db.session.commit()
    return op


def login(email: str, password: str) -> dict:
    op = db.session.execute(
        select(Operator).where(func.lower(Operator.email) == email.strip().lower())
    ).scalar_one_or_none()
    ok = verify_password(op.password_hash if op else None, password)
    if not ok or not op.is_active:
        raise unauthorized("The e-mail address or password is wrong.")
    cfg = current_app.config
    now = utcnow()
    session = OperatorSession(
        id=new_session_id(),
        operator_id=op.id,
        created_at=now,
        expires_at=now + timedelta(seconds=cfg["OPERATOR_TOKEN_TTL"]),
        ip=request.remote_addr,
    )
    db.session.add(session)
    op.last_login_at = now
    db.session.commit()
    token = encode_access_token(
        cfg["SECRET_KEY"],
        cfg["OPERATOR_TOKEN_TTL"],
        sub=str(op.id),
        ins=NO_INSTITUTION,
        role=OPERATOR,
        sid=session.id,
    )
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": cfg["OPERATOR_TOKEN_TTL"],
        "operator": operator_out(op),
    }


def check_session(principal: Principal) -> Operator:
    """The operator of a live session; 401 once it was ended, expired or the operator deactivated."""
    session = db.session.get(OperatorSession, principal.session_id)
    op = db.session.get(Operator, principal.user_id)
    expires_at = session.expires_at if session is not None else None
    if expires_at is not None and expires_at.tzinfo is None:  # SQLite hands back naive UTC
        expires_at = expires_at.replace(tzinfo=utcnow().tzinfo)
    if (
        session is None
        or op is None
        or session.operator_id != op.id
        or session.revoked_at is not None
        or expires_at <= utcnow()
        or not op.is_active
    ):
        raise unauthorized("This session has ended; log in again.")
    return op


def logout(principal: Principal) -> None:
    db.session.execute(
        update(OperatorSession)
        .where(OperatorSession.id == principal.session_id, OperatorSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    db.session.commit()
    # Also the per-request revocation copy, so admission answers 401 before the view runs.
    current_app.extensions["revocations"].revoke([principal.session_id])


# --- schools --------------------------------------------------------------------------------------------


def school_out(inst: Institution) -> dict:
    return {f: getattr(inst, f) for f in SCHOOL_FIELDS}


def schools_query():
    return select(Institution)


def school_or_404(slug: str) -> Institution:
    inst = db.session.execute(select(Institution).where(Institution.slug == slug)).scalar_one_or_none()
    if inst is None:
        raise NotFound("school")
    return inst


def _slug(name: str) -> str:
    """A free slug from the name: ascii, lowercase, hyphens; "-2", "-3"... when taken."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    base = re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-")[:70].strip("-") or "school"
    taken = set(
        db.session.execute(
            select(Institution.slug).where((Institution.slug == base) | Institution.slug.like(f"{base}-%"))
        ).scalars()
    )
    slug, n = base, 1
    while slug in taken:
        n += 1
        slug = f"{base}-{n}"
    return slug


def _record(inst_id, action, changes, by):
    # No actor_id: the operator is no user of this school (app/audit/services.py leaves it empty).
    audit.record(action, "institution", inst_id, {**changes, "by": [None, by]}, institution_id=inst_id)


def create_school(values: dict, by: str):
    """A school and its first admin, invited by e-mail, in one transaction. `values`: app/operator/
    schemas.py SchoolCreate. Returns (institution, admin user, app/auth/accounts.py Invitation)."""
    inst = Institution(
        name=values["name"],
        slug=_slug(values["name"]),
        timezone=values["timezone"],
        country=values["country"],
        currency=values["currency"],
        grading_scale=list(DEFAULT_GRADING_SCALE),
        absence_threshold=90,
    )
    db.session.add(inst)
    db.session.flush()
    # The school's own rows are written as that school, exactly as one of its requests would.
    with institution_scope(inst.id):
        _record(
            inst.id, "create", audit.snapshot(inst, ["name", "slug", "timezone", "country", "currency"]), by
        )
        admin = add_user(
            {
                "email": values["admin_email"],
                "role": "admin",
                "first_name": values["admin_first_name"],
                "last_name": values["admin_last_name"],
                "password_hash": unusable_password_hash(),
            }
        )
        invitation = issue_invitation(admin)
    commit_or_conflict()
    return inst, admin, invitation


def invite_admin(inst: Institution, values: dict, by: str):
    """Invite an admin to a school again, or a new one: the way back in when the first admin's link
    expired or they left. An address that is already this school's admin gets a new link; any other
    address gets a new admin login. Returns (user, Invitation)."""
    email = values["email"].lower()
    with institution_scope(inst.id):
        user = db.session.execute(
            select(User).where(func.lower(User.email) == email, User.deleted_at.is_(None))
        ).scalar_one_or_none()
        if user is not None and (user.role != "admin" or not user.is_active):
            raise Conflict("This address belongs to another login of this school; an admin can change it.")
        if user is None:
            user = add_user(
                {
                    "email": email,
                    "role": "admin",
                    "first_name": values["first_name"],
                    "last_name": values["last_name"],
                    "password_hash": unusable_password_hash(),
                }
            )
        invitation = issue_invitation(user)
        _record(inst.id, "invite_admin", {"email": [None, email]}, by)
    commit_or_conflict()
    return user, invitation


def suspend_school(inst: Institution, by: str, reason: str | None = None) -> int:
    """Suspend (again: nothing changes). Returns how many live sessions were ended."""
    if inst.suspended_at is not None:
        return 0
    inst.suspended_at = utcnow()
    ended = revoke_institution_sessions(inst.id, "school_suspended")
    _record(
        inst.id,
        "suspend",
        {
            "suspended_at": [None, inst.suspended_at.isoformat()],
            "reason": [None, reason],
            "sessions_ended": [None, ended],
        },
        by,
    )
    db.session.commit()
    return ended


def resume_school(inst: Institution, by: str) -> None:
    if inst.suspended_at is None:
        return
    before = inst.suspended_at
    inst.suspended_at = None
    _record(inst.id, "resume", {"suspended_at": [before.isoformat(), None]}, by)
    db.session.commit()
