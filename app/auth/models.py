from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import TenantMixin
from app.extensions import db


class AuthSession(TenantMixin, db.Model):
    """One login: its refresh tokens form a chain; revoking the session ends both token kinds."""

    __tablename__ = "auth_sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # A login's session names its user; a OneRoster client's token (app/oneroster) its client instead.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[int | None] = mapped_column(ForeignKey("oneroster_clients.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_reason: Mapped[str | None] = mapped_column(String(40))
    ip: Mapped[str | None] = mapped_column(String(45))
    # Revoked, but Redis did not confirm its copy: checks ask the database until the copy is rebuilt.
    revocation_unconfirmed: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)

    __table_args__ = (
        # revoke every session of a user (role or password change)
        Index("ix_auth_sessions_user_id", "user_id"),
        # revoking or rotating a OneRoster client ends its tokens
        Index("ix_auth_sessions_client_id", "client_id", postgresql_where=text("client_id IS NOT NULL")),
        # "is any revocation missing from Redis?": one probe of a partial index
        Index(
            "ix_auth_sessions_revocation_unconfirmed",
            "id",
            postgresql_where=text("revocation_unconfirmed"),
            sqlite_where=text("revocation_unconfirmed"),
        ),
        # rebuilding the Redis copy: sessions revoked within one access-token lifetime
        Index("ix_auth_sessions_revoked_at", "revoked_at"),
    )


class RefreshToken(TenantMixin, db.Model):
    __tablename__ = "refresh_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("auth_sessions.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(
        String(64)
    )  # sha256 of the token; the token itself is never stored
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # POST /auth/refresh: find the presented token
        Index("uq_refresh_tokens_token_hash", "token_hash", unique=True),
        # logout/revocation: a session's tokens
        Index("ix_refresh_tokens_session_id", "session_id"),
    )


class AccountToken(TenantMixin, db.Model):
    """A link's secret for setting a password: an invitation or a password reset (app/auth/accounts.py).
    Single use (used_at), expiring, and stored as its sha256 only: the database never holds a working link."""

    __tablename__ = "account_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(10))  # invite, reset
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # following a link: find its token
        Index("uq_account_tokens_token_hash", "token_hash", unique=True),
        # a new link or a new password spends the user's open ones; "one reset mail a minute"
        Index("ix_account_tokens_user_id", "user_id", "purpose"),
    )
