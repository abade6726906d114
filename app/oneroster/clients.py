"""OneRoster clients: credentials, tokens, revocation.

A client's token is an access token like a login's (app/core/security.py), naming role `oneroster`, its
client and its scopes instead of a user. Each token is a row of the sessions table (`auth_sessions`,
client_id set), so revoking it goes through the same store a logout does (app/core/revocation.py) and
admission refuses it on the next request. Its lifetime is ACCESS_TOKEN_TTL: the revocation copy in
Redis lives that long, so no longer-lived token may exist.
"""

import secrets

import jwt
from flask import current_app, request
from sqlalchemy import select

from app.audit import services as audit
from app.auth.models import AuthSession
from app.auth.services import revoke_sessions
from app.core.auth import NO_USER, ONEROSTER
from app.core.errors import ApiError, NotFound, ValidationFailed
from app.core.models import utcnow
from app.core.security import (
    decode_access_token,
    encode_access_token,
    hash_password,
    new_session_id,
    verify_password,
)
from app.extensions import db
from app.institutions.models import Institution
from app.institutions.services import refuse_if_suspended
from app.oneroster.models import OneRosterClient

UNSCOPED = {"skip_tenant": True}  # the token endpoint runs before any tenant is known

# The OneRoster 1.2 scopes (the binding's OAuth 2 scope URIs end in these names).
SCOPE_PREFIX = "https://purl.imsglobal.org/spec/or/v1p2/scope/"
SCOPES = (
    "roster-core.readonly",
    "roster.readonly",
    "roster-demographics.readonly",
    "gradebook.readonly",
    "gradebook.createput",
    "gradebook.delete",
    "resource.readonly",
)


def normalise_scopes(raw, *, field="scope") -> list[str]:
    """Space-separated scope names or URIs -> known short names, in SCOPES order; 422 on an unknown one."""
    names = {s.removeprefix(SCOPE_PREFIX) for s in (raw or "").split()}
    unknown = sorted(names - set(SCOPES))
    if unknown:
        raise ValidationFailed({field: f"unknown scope(s): {', '.join(unknown)}; known: {' '.join(SCOPES)}"})
    return [s for s in SCOPES if s in names]


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def client_dict(c: OneRosterClient) -> dict:
    return {
        "id": c.id,
        "client_id": c.client_id,
        "name": c.name,
        "scopes": c.scopes.split(),
        "created_at": c.created_at,
        "rotated_at": c.rotated_at,
        "revoked_at": c.revoked_at,
        "last_token_at": c.last_token_at,
    }


def create_client(institution_id: int, name: str, scopes: list[str]) -> tuple[OneRosterClient, str]:
    """(client, secret): the secret is shown once and stored as its hash."""
    if db.session.get(Institution, institution_id) is None:
        raise NotFound("school")
    if not scopes:
        raise ValidationFailed({"scopes": "name at least one scope"})
    secret = _new_secret()
    client = OneRosterClient(
        institution_id=institution_id,
        client_id=f"or-{secrets.token_hex(12)}",
        secret_hash=hash_password(secret),
        name=name,
        scopes=" ".join(scopes),
        created_at=utcnow(),
    )
    db.session.add(client)
    db.session.flush()
    audit.record(
        "create",
        "oneroster_client",
        client.id,
        {"name": [None, name], "scopes": [None, client.scopes]},
        institution_id=institution_id,
    )
    return client, secret


def _live_sessions(client_id) -> list[str]:
    return list(
        db.session.execute(
            select(AuthSession.id).where(AuthSession.client_id == client_id, AuthSession.revoked_at.is_(None))
        ).scalars()
    )


def revoke_client(client: OneRosterClient):
    """The client may get no more tokens, and the ones it holds stop working."""
    if client.revoked_at is None:
        client.revoked_at = utcnow()
        audit.record("revoke", "oneroster_client", client.id)
    revoke_sessions(_live_sessions(client.id), "client_revoked")


def rotate_secret(client: OneRosterClient) -> str:
    """A new secret; the old one and every token it obtained stop working."""
    if client.revoked_at is not None:
        raise ApiError(409, "This client is revoked; create a new one.", type_="conflict")
    secret = _new_secret()
    client.secret_hash = hash_password(secret)
    client.rotated_at = utcnow()
    audit.record("rotate", "oneroster_client", client.id)
    revoke_sessions(_live_sessions(client.id), "client_rotated")
    return secret


class OAuthError(Exception):
    """RFC 6749 section 5.2: {"error": code, "error_description": ...} with 400 or 401."""

    def __init__(self, status, code, description):
        super().__init__(description)
        self.status, self.code, self.description = status, code, description


def _authenticate(client_id, secret) -> OneRosterClient:
    client = db.session.execute(
        select(OneRosterClient).where(OneRosterClient.client_id == client_id), execution_options=UNSCOPED
    ).scalar_one_or_none()
    # verify_password checks a dummy hash for an unknown client: as slow as a wrong secret
    ok = verify_password(client.secret_hash if client else None, secret or "")
    if not ok or client is None or client.revoked_at is not None:
        raise OAuthError(401, "invalid_client", "Unknown client, wrong secret, or a revoked client.")
    return client


def issue_token(client_id, secret, grant_type, scope) -> dict:
    """POST /oauth/token (client credentials grant): a bearer token for the client's school."""
    client = _authenticate(client_id, secret)
    if grant_type != "client_credentials":
        raise OAuthError(400, "unsupported_grant_type", "Only grant_type=client_credentials is supported.")
    granted = client.scopes.split()
    if scope:
        try:
            asked = normalise_scopes(scope)
        except ValidationFailed:
            raise OAuthError(
                400, "invalid_scope", "A requested scope is not a OneRoster 1.2 scope."
            ) from None
        if not set(asked) <= set(granted):
            raise OAuthError(400, "invalid_scope", "A requested scope was not granted to this client.")
        granted = asked
    try:
        refuse_if_suspended(client.institution_id)
    except ApiError:
        raise OAuthError(401, "invalid_client", "The school is suspended.") from None
    session = AuthSession(
        id=new_session_id(),
        user_id=None,
        client_id=client.id,
        institution_id=client.institution_id,
        created_at=utcnow(),
        ip=request.remote_addr,
    )
    db.session.add(session)
    client.last_token_at = utcnow()
    cfg = current_app.config
    ttl = cfg["ACCESS_TOKEN_TTL"]
    scope_text = " ".join(granted)
    token = encode_access_token(
        cfg["SECRET_KEY"],
        ttl,
        sub=str(NO_USER),
        ins=client.institution_id,
        role=ONEROSTER,
        sid=session.id,
        cid=client.id,
        scp=scope_text,
    )
    db.session.commit()
    return {"access_token": token, "token_type": "bearer", "expires_in": ttl, "scope": scope_text}


def revoke_token(client_id, secret, token) -> None:
    """POST /oauth/revoke (RFC 7009): the client ends one of its own tokens; any other token is ignored."""
    client = _authenticate(client_id, secret)
    from_token = _session_of(token)
    if from_token is not None and from_token.client_id == client.id:
        revoke_sessions([from_token.id], "client_revoked_token")
    db.session.commit()


def _session_of(token) -> AuthSession | None:
    try:
        claims = decode_access_token(current_app.config["SECRET_KEY"], token or "")
    except jwt.InvalidTokenError:  # RFC 7009: an invalid token is answered 200 all the same
        return None
    return db.session.get(AuthSession, claims["sid"], execution_options=UNSCOPED)
