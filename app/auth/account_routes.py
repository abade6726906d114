"""Accounts over the API: invitations (admins), forgotten passwords, and setting a password from an
e-mailed link. The links themselves open the page in app/auth/pages.py; these are for API clients."""

from flask import Blueprint, jsonify
from sqlalchemy import select

from app.auth import accounts
from app.auth.schemas import (
    AcceptedOut,
    ForgotPasswordIn,
    InvitationIn,
    InvitationOut,
    LinkOut,
    PasswordSetIn,
)
from app.core.auth import SCHOOL, public, roles
from app.core.errors import NotFound
from app.core.openapi import doc
from app.core.queryargs import TEXT, Param, QueryArgs
from app.core.schemas import dump, fields_of, parse_body
from app.extensions import db
from app.people.models import User
from app.people.schemas import UserOut

bp = Blueprint("accounts", __name__)


@bp.record_once
def _mail_links(state):
    # The links of these mails are made when they are sent (app/notifications/services.py mail_context).
    links = state.app.extensions.setdefault("mail_links", {})
    links["account_invitation"] = links["password_reset"] = accounts.mail_links


USER_FIELDS = fields_of(UserOut)
FORGOT_ANSWER = (
    "If this address belongs to an account, a link to choose a new password is on its way. "
    "It works once, for a short time."
)
# A link's token that is not one (400), spent or expired (410), or of a suspended school (403).
LINK_ERRORS = (400, 403, 410)
LINK_RULES = {
    "token": "the token of a link the school e-mailed, unused and unexpired: else 400 (not a link) or 410"
}
LINK_ARGS = QueryArgs(Param("token", TEXT, required=True, description="The `token` of the e-mailed link."))


def _invitation_out(user, expires_at):
    return {**dump(user, USER_FIELDS), "invitation_expires_at": expires_at}


@bp.post("/auth/password/forgot")
@public
@doc(
    "Forgot password: e-mail a reset link (the same answer whether or not the address has an account)",
    body=ForgotPasswordIn,
    out=AcceptedOut,
    status=202,
    polled=False,
    tags=["auth"],
    description="The link opens a page to choose a new password (or use POST /auth/password/set). It "
    "works once, for PASSWORD_RESET_TTL seconds (30 minutes); using it ends every session of the "
    "account. At most one link is mailed per account every few minutes.",
)
def forgot_password():
    accounts.request_password_reset(parse_body(ForgotPasswordIn).email)
    return jsonify({"detail": FORGOT_ANSWER}), 202


@bp.get("/auth/password/link")
@public
@doc(
    "What an e-mailed link is for (invitation or reset, the account, the school), without using it",
    out=LinkOut,
    query=LINK_ARGS,
    tags=["auth"],
    errors=LINK_ERRORS,
    rules=LINK_RULES,
)
def describe_link():
    return jsonify(accounts.describe_link(LINK_ARGS.parse()["token"]))


@bp.post("/auth/password/set")
@public
@doc(
    "Choose a password with the token of an invitation or reset link (the link is then spent)",
    body=PasswordSetIn,
    out=LinkOut,
    tags=["auth"],
    description="400 for a token that is not valid, 410 for one already used, replaced or expired, "
    "403 when the school is suspended. Ends every session of the account.",
    errors=LINK_ERRORS,
    rules=LINK_RULES,
)
def set_password():
    body = parse_body(PasswordSetIn)
    return jsonify(accounts.set_password_from_link(body.token, body.new_password))


@bp.post("/invitations")
@roles("admin", reach=SCHOOL)
@doc(
    "Invite someone: a login without a password, and an e-mail with a link to choose one",
    body=InvitationIn,
    out=InvitationOut,
    status=201,
    tags=["users"],
    description="Like POST /users, without a password: the person chooses it from the link, which "
    "works once, for INVITATION_TTL seconds (7 days).",
)
def invite():
    user, invitation = accounts.invite_user(parse_body(InvitationIn).model_dump())
    return jsonify(_invitation_out(user, invitation.expires_at)), 201


@bp.post("/users/<int:ident>/invitation")
@roles("admin", reach=SCHOOL)
@doc(
    "Send a login's invitation again (a new link; earlier invitation links stop working)",
    out=InvitationOut,
    status=201,
    tags=["users"],
)
def resend_invitation(ident):
    user = db.session.execute(
        select(User).where(User.id == ident, User.deleted_at.is_(None))
    ).scalar_one_or_none()
    if user is None:
        raise NotFound("user")
    invitation = accounts.resend_invitation(user)
    return jsonify(_invitation_out(user, invitation.expires_at)), 201
