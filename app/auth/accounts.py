"""Accounts over their life: the invitation that opens one, the forgotten password, and setting a
password from the link either sends.

A link carries a 256-bit token; `account_tokens` keeps only its sha256 (app/core/security.py
token_digest), its purpose, its user and its expiry. The token is an HMAC, under SECRET_KEY, of a
random nonce that only the outbox row keeps; the mail's link is made from it when the mail is sent
(app/notifications/services.py mail_context). So the database holds no working link, in either table,
and nobody makes one without the key. A link works once: the first use spends it in a conditional
UPDATE, so of two concurrent uses exactly one wins. Setting a password spends every other open link of
that person and ends all their sessions.

"Forgot password" answers the same whether or not the address has an account: the same status and
body, and about the same time, because the request never sends mail itself. It queues the message in
the outbox (app/notifications) and, when a broker is there, hands it to a worker; without one
(tasks in-process) the outbox dispatcher sends it within a minute (config.BEAT_SCHEDULE).
"""

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from functools import lru_cache
from typing import NamedTuple

from flask import current_app
from sqlalchemy import and_, func, or_, select, update

from app.audit import services as audit
from app.auth.models import AccountToken, AuthSession
from app.auth.services import UNSCOPED, revoke_sessions, revoke_user_sessions
from app.core.background import in_process
from app.core.crud import commit_or_conflict
from app.core.errors import ApiError
from app.core.links import public_url
from app.core.models import utcnow
from app.core.security import hash_password, new_token, token_digest
from app.extensions import db
from app.institutions.calendar import zone
from app.institutions.models import Institution
from app.institutions.services import refuse_if_suspended, school_suspended
from app.notifications.services import enqueue_email, send_after_commit
from app.people.models import User
from app.people.services import add_user

INVITE, RESET = "invite", "reset"
TTL_SETTING = {INVITE: "INVITATION_TTL", RESET: "PASSWORD_RESET_TTL"}
# A reset link is mailed at most this often per person, however often the form is sent.
RESET_MAIL_EVERY = timedelta(minutes=5)
SET_PASSWORD_PAGE = "account_pages.password_page"  # where the e-mailed links lead (app/auth/pages.py)

ROLE_LABELS = {
    "admin": "administrator",
    "teacher": "teacher",
    "guardian": "parent or guardian",
    "student": "student",
    "accountant": "accountant",
}


@lru_cache(maxsize=1)
def unusable_password_hash() -> str:
    """The stored hash of a login whose owner has not chosen a password yet: the hash of a random secret
    this process forgets at once. No password matches it, and checking one costs as long as any other
    (a login attempt cannot tell a waiting account by its speed). One per process: hashing is slow."""
    return hash_password(secrets.token_urlsafe(32))


# --- the links ----------------------------------------------------------------------------------------


def link_token(nonce: str) -> str:
    """The token of a link, from the nonce its mail keeps (see the module's docstring)."""
    key = current_app.config["SECRET_KEY"].encode()
    digest = hmac.new(key, f"schoolhouse.account-link:{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def link_url(nonce: str) -> str:
    return public_url(SET_PASSWORD_PAGE, token=link_token(nonce))


def mail_links(context: dict, institution_id) -> dict:
    """The invitation's or reset's link, made as the mail is sent (app/notifications mail_context)."""
    nonce = context.get("link_nonce")
    return {"link": link_url(nonce)} if nonce else {}  # none: the render fails for good, as it should


def _new_link(user: User, purpose: str, now) -> tuple[str, AccountToken]:
    """(the nonce its mail keeps, the token row)."""
    nonce = new_token()
    row = AccountToken(
        institution_id=user.institution_id,
        user_id=user.id,
        purpose=purpose,
        token_hash=token_digest(link_token(nonce)),
        created_at=now,
        expires_at=now + timedelta(seconds=current_app.config[TTL_SETTING[purpose]]),
    )
    db.session.add(row)
    db.session.flush()
    return nonce, row


def _spend_open_links(user_id, now, purpose=None):
    stmt = update(AccountToken).where(AccountToken.user_id == user_id, AccountToken.used_at.is_(None))
    if purpose is not None:
        stmt = stmt.where(AccountToken.purpose == purpose)
    db.session.execute(stmt.values(used_at=now), execution_options=UNSCOPED)


def _expires_display(moment, inst: Institution) -> str:
    local = moment.astimezone(zone(inst.timezone))
    return f"{local:%A} {local.day} {local:%B %Y, %H:%M} ({inst.timezone or 'UTC'})"


def _queue_mail(user: User, purpose: str, nonce: str, row: AccountToken) -> tuple[int | None, str]:
    """(outbox id, the link the message will carry)."""
    inst = db.session.get(Institution, user.institution_id)
    context = {
        "school": inst.name,
        "school_email": inst.email,
        "school_phone": inst.phone,
        "user_name": f"{user.first_name} {user.last_name}".strip(),
        "email": user.email,
        "role_label": ROLE_LABELS.get(user.role, user.role),
        "link_nonce": nonce,  # not a link: mail_links makes it with SECRET_KEY
        "expires_display": _expires_display(row.expires_at, inst),
        "minutes": current_app.config["PASSWORD_RESET_TTL"] // 60,
    }
    if purpose == INVITE:
        template, subject = "account_invitation", f"Your Schoolhouse account at {inst.name}"
    else:
        template, subject = "password_reset", f"Reset your Schoolhouse password ({inst.name})"
    outbox_id = enqueue_email(
        user.institution_id, f"{purpose}:{row.id}", user.email, template, context, subject
    )
    return outbox_id, link_url(nonce)


# --- invitations -------------------------------------------------------------------------------------


class Invitation(NamedTuple):
    expires_at: datetime
    link: str  # for the e-mail; shown elsewhere only where mail stays on this machine (app/operator/cli.py)


def issue_invitation(user: User, now=None) -> Invitation:
    """Queue an invitation to `user` in the caller's transaction; older invitation links stop working."""
    now = now or utcnow()
    _spend_open_links(user.id, now, INVITE)
    nonce, row = _new_link(user, INVITE, now)
    outbox_id, link = _queue_mail(user, INVITE, nonce, row)
    if outbox_id is not None:
        send_after_commit(outbox_id)
    audit.record(
        "invite",
        "user",
        user.id,
        {"expires_at": [None, row.expires_at.isoformat()]},
        institution_id=user.institution_id,
    )
    return Invitation(row.expires_at, link)


def invite_user(values: dict):
    """A new login without a password, and the e-mail that lets its owner choose one."""
    values = {**values, "password_hash": unusable_password_hash()}
    user = add_user(values)
    invitation = issue_invitation(user)
    commit_or_conflict()
    return user, invitation


def resend_invitation(user: User):
    if user.deleted_at is not None or not user.is_active:
        raise ApiError(
            409, "This login is deactivated; activate it before inviting its owner.", type_="conflict"
        )
    invitation = issue_invitation(user)
    db.session.commit()
    return invitation


# --- forgotten passwords ------------------------------------------------------------------------------


def _reset_mailed_lately(user_id, now) -> bool:
    return (
        db.session.execute(
            select(AccountToken.id)
            .where(
                AccountToken.user_id == user_id,
                AccountToken.purpose == RESET,
                AccountToken.created_at > now - RESET_MAIL_EVERY,
            )
            .limit(1),
            execution_options=UNSCOPED,
        ).first()
        is not None
    )


def request_password_reset(email: str) -> None:
    """Mail a reset link to the account with this address, if there is one that may log in. Tells the
    caller nothing either way (see the module's docstring)."""
    now = utcnow()
    user = db.session.execute(
        select(User).where(func.lower(User.email) == email.strip().lower(), User.deleted_at.is_(None)),
        execution_options=UNSCOPED,
    ).scalar_one_or_none()
    if (
        user is None
        or not user.is_active
        or school_suspended(user.institution_id)
        or _reset_mailed_lately(user.id, now)
    ):
        return
    nonce, row = _new_link(user, RESET, now)
    outbox_id, _ = _queue_mail(user, RESET, nonce, row)
    if outbox_id is not None and not in_process():  # in-process, sending now would take visible time
        send_after_commit(outbox_id)
    audit.record(
        "password_reset_requested", "user", user.id, institution_id=user.institution_id, actor_id=user.id
    )
    db.session.commit()


# --- following a link ----------------------------------------------------------------------------------


def _link_problem(status, detail, kind):
    return ApiError(status, detail, title="Link not usable", type_=f"link-{kind}")


def _open_link(raw: str, now):
    """(token row, user) of a usable link, or the problem that says why it is not."""
    row = db.session.execute(
        select(AccountToken).where(AccountToken.token_hash == token_digest(raw or "")),
        execution_options=UNSCOPED,
    ).scalar_one_or_none()
    if row is None:
        raise _link_problem(400, "This link is not valid. Check that it was copied whole.", "invalid")
    ask = "ask the school office for a new invitation" if row.purpose == INVITE else "ask for a new one"
    if row.used_at is not None:
        raise _link_problem(410, f"This link was already used or replaced by a newer one; {ask}.", "used")
    expires_at = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=now.tzinfo)
    if expires_at <= now:
        raise _link_problem(410, f"This link has expired; {ask}.", "expired")
    user = db.session.get(User, row.user_id, execution_options=UNSCOPED)
    if user is None or user.deleted_at is not None or not user.is_active:
        raise _link_problem(410, "This account is no longer active.", "used")
    refuse_if_suspended(user.institution_id)
    return row, user


def describe_link(raw: str) -> dict:
    """What a link is for, without using it (a mail scanner fetching the page must not spend it)."""
    row, user = _open_link(raw, utcnow())
    inst = db.session.get(Institution, user.institution_id)
    return {"purpose": row.purpose, "email": user.email, "school": inst.name, "expires_at": row.expires_at}


def set_password_from_link(raw: str, password: str) -> dict:
    """Use a link once: the account's new password; its other links are spent and its sessions end."""
    now = utcnow()
    row, user = _open_link(raw, now)
    won = db.session.execute(
        update(AccountToken)
        .where(AccountToken.id == row.id, AccountToken.used_at.is_(None))
        .values(used_at=now),
        execution_options=UNSCOPED,
    ).rowcount
    if won != 1:  # another request used it a moment ago
        db.session.rollback()
        raise _link_problem(410, "This link was already used.", "used")
    user.password_hash = hash_password(password)
    _spend_open_links(user.id, now)
    action = "invitation_accepted" if row.purpose == INVITE else "password_reset"
    audit.record(action, "user", user.id, institution_id=user.institution_id, actor_id=user.id)
    revoke_user_sessions(user.id, "password_reset")
    inst = db.session.get(Institution, user.institution_id)
    result = {"purpose": row.purpose, "email": user.email, "school": inst.name}
    db.session.commit()
    return result


# --- a whole school -------------------------------------------------------------------------------------


def revoke_institution_sessions(institution_id, reason) -> int:
    """End every live session of a school's people (its suspension, app/operator). Returns how many."""
    # Through the school's users: ix_auth_sessions_user_id per user, not a scan of every session.
    people = select(User.id).where(User.institution_id == institution_id)
    ids = list(
        db.session.execute(
            select(AuthSession.id).where(
                or_(
                    AuthSession.user_id.in_(people),
                    # its OneRoster clients' tokens (app/oneroster): the partial ix_auth_sessions_client_id
                    and_(AuthSession.client_id.is_not(None), AuthSession.institution_id == institution_id),
                ),
                AuthSession.revoked_at.is_(None),
            ),
            execution_options=UNSCOPED,
        ).scalars()
    )
    revoke_sessions(ids, reason)
    return len(ids)
