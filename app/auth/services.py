"""Login, refresh-token rotation with reuse detection, logout, password change."""

from datetime import timedelta

from flask import current_app, request
from sqlalchemy import func, select, update

from app.audit import services as audit
from app.auth.models import AccountToken, AuthSession, RefreshToken
from app.core.auth import Principal, unauthorized
from app.core.errors import ValidationFailed
from app.core.models import utcnow
from app.core.security import (
    encode_access_token,
    hash_password,
    new_session_id,
    new_token,
    token_digest,
    verify_password,
)
from app.extensions import db
from app.institutions.services import refuse_if_suspended
from app.people.models import Guardian, Student, Teacher, User

UNSCOPED = {"skip_tenant": True}  # before login there is no tenant yet


# A login of these roles acts as its person: without a live one it may not log in.
PERSON_OF_ROLE = {"student": 0, "teacher": 1, "guardian": 2}


def linked_ids(user_id):
    """(student_id, teacher_id, guardian_id) of a login's live (not deleted) people; at most one is
    set in practice."""

    def one(model):
        return db.session.execute(
            select(model.id).where(model.user_id == user_id, model.deleted_at.is_(None)),
            execution_options=UNSCOPED,
        ).scalar_one_or_none()

    return one(Student), one(Teacher), one(Guardian)


def may_log_in(user, links) -> bool:
    """Active, not deleted, and, for a student, teacher or guardian login, its person not deleted.
    Checked at login and at every refresh; a delete or deactivation also ends the live sessions in
    its own transaction (app/people/services.py). Institutions have no suspended state yet."""
    if user is None or not user.is_active or user.deleted_at is not None:
        return False
    person = PERSON_OF_ROLE.get(user.role)
    return person is None or links[person] is not None


def _access_token(user, session_id, links):
    cfg = current_app.config
    stu, tea, gua = links
    return encode_access_token(
        cfg["SECRET_KEY"],
        cfg["ACCESS_TOKEN_TTL"],
        sub=str(user.id),
        ins=user.institution_id,
        role=user.role,
        sid=session_id,
        stu=stu,
        tea=tea,
        gua=gua,
    )


def _issue_refresh(session: AuthSession):
    token = new_token()
    now = utcnow()
    db.session.add(
        RefreshToken(
            session_id=session.id,
            institution_id=session.institution_id,
            token_hash=token_digest(token),
            created_at=now,
            expires_at=now + timedelta(seconds=current_app.config["REFRESH_TOKEN_TTL"]),
        )
    )
    return token


def me_dict(user, links):
    stu, tea, gua = links
    return {
        "id": user.id,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "role": user.role,
        "institution_id": user.institution_id,
        "student_id": stu,
        "teacher_id": tea,
        "guardian_id": gua,
    }


def _tokens(user, session, links):
    return {
        "access_token": _access_token(user, session.id, links),
        "refresh_token": _issue_refresh(session),
        "token_type": "Bearer",
        "expires_in": current_app.config["ACCESS_TOKEN_TTL"],
        "user": me_dict(user, links),
    }


def login(email, password):
    user = db.session.execute(
        select(User).where(func.lower(User.email) == email.strip().lower(), User.deleted_at.is_(None)),
        execution_options=UNSCOPED,
    ).scalar_one_or_none()
    ok = verify_password(user.password_hash if user else None, password)
    links = linked_ids(user.id) if ok else None
    if not ok or not may_log_in(user, links):
        if user is not None:
            audit.record_security_event(
                "login_failed",
                institution_id=user.institution_id,
                actor_id=user.id,
                detail={"email": user.email},
            )
        raise unauthorized("The e-mail address or password is wrong.")
    refuse_if_suspended(user.institution_id)  # only after the password: it says the account exists
    session = AuthSession(
        id=new_session_id(),
        user_id=user.id,
        institution_id=user.institution_id,
        created_at=utcnow(),
        ip=request.remote_addr,
    )
    db.session.add(session)
    user.last_login_at = utcnow()
    result = _tokens(user, session, links)
    db.session.commit()
    return result


def revoke_sessions(session_ids, reason):
    if not session_ids:
        return
    db.session.execute(
        update(AuthSession)
        .where(AuthSession.id.in_(session_ids), AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), revoked_reason=reason),
        execution_options=UNSCOPED,
    )
    current_app.extensions["revocations"].revoke(session_ids)


class SessionsTable:
    """The revocation store's view of the sessions table (app/core/revocation.py: SessionsTable)."""

    def revoked(self, sid) -> bool:
        revoked_at = db.session.execute(
            select(AuthSession.revoked_at).where(AuthSession.id == sid), execution_options=UNSCOPED
        ).scalar_one_or_none()
        return revoked_at is not None

    def revoked_since(self, since) -> list[str]:
        return list(
            db.session.execute(
                select(AuthSession.id).where(AuthSession.revoked_at >= since), execution_options=UNSCOPED
            ).scalars()
        )

    def mark_unconfirmed(self, sids) -> None:
        # In the revoking transaction: the mark commits (or rolls back) with the revocation itself.
        db.session.execute(
            update(AuthSession).where(AuthSession.id.in_(sids)).values(revocation_unconfirmed=True),
            execution_options=UNSCOPED,
        )

    def any_unconfirmed(self) -> bool:
        return (
            db.session.execute(
                select(AuthSession.id).where(AuthSession.revocation_unconfirmed).limit(1),
                execution_options=UNSCOPED,
            ).first()
            is not None
        )

    def confirm(self, revoked_before) -> None:
        # Its own short transaction: the Redis copy is rebuilt whatever the current request does.
        with db.engine.begin() as conn:
            conn.execute(
                update(AuthSession.__table__)
                .where(AuthSession.revocation_unconfirmed, AuthSession.revoked_at <= revoked_before)
                .values(revocation_unconfirmed=False)
            )


def revoke_user_sessions(user_id, reason, keep=None):
    ids = (
        db.session.execute(
            select(AuthSession.id).where(AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)),
            execution_options=UNSCOPED,
        )
        .scalars()
        .all()
    )
    revoke_sessions([i for i in ids if i != keep], reason)


def refresh(raw_token):
    row = db.session.execute(
        select(RefreshToken).where(RefreshToken.token_hash == token_digest(raw_token)),
        execution_options=UNSCOPED,
    ).scalar_one_or_none()
    if row is None:
        raise unauthorized("The refresh token is not valid.")
    session = db.session.get(AuthSession, row.session_id, execution_options=UNSCOPED)
    refuse_if_suspended(session.institution_id)
    if row.used_at is not None:
        # A spent token came back: someone holds a copy. End the whole chain.
        revoke_sessions([session.id], "refresh_reuse")
        db.session.commit()
        audit.record_security_event(
            "refresh_token_reused", institution_id=session.institution_id, actor_id=session.user_id
        )
        raise unauthorized("This refresh token was already used; the session has been ended.")
    if session.revoked_at is not None or row.expires_at <= utcnow():
        raise unauthorized("The session has ended; log in again.")
    # Conditional update: of two concurrent refreshes with the same token, exactly one wins.
    won = db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
        .values(used_at=utcnow()),
        execution_options=UNSCOPED,
    ).rowcount
    if won != 1:
        db.session.rollback()
        raise unauthorized("This refresh token was already used.")
    user = db.session.get(User, session.user_id, execution_options=UNSCOPED)
    links = linked_ids(user.id) if user is not None else None
    if not may_log_in(user, links):
        revoke_sessions([session.id], "user_inactive")
        db.session.commit()
        raise unauthorized("The account is no longer active.")
    result = _tokens(user, session, links)
    db.session.commit()
    return result


def logout(principal: Principal):
    revoke_sessions([principal.session_id], "logout")
    db.session.commit()


def change_password(principal: Principal, current_password, new_password):
    user = db.session.get(User, principal.user_id)
    if not verify_password(user.password_hash, current_password):
        raise ValidationFailed({"current_password": "is wrong"})
    user.password_hash = hash_password(new_password)
    # Links mailed earlier (invitation, reset: app/auth/accounts.py) stop working with it.
    db.session.execute(
        update(AccountToken)
        .where(AccountToken.user_id == user.id, AccountToken.used_at.is_(None))
        .values(used_at=utcnow())
    )
    audit.record("password_change", "user", user.id)
    revoke_user_sessions(user.id, "password_change", keep=principal.session_id)
    db.session.commit()


def me(principal: Principal):
    user = db.session.get(User, principal.user_id)
    return me_dict(user, (principal.student_id, principal.teacher_id, principal.guardian_id))
