"""Operators and their sessions: tables of their own, not `users` rows.

An operator belongs to no school. Stored as a `users` row it would need a nullable institution_id,
and every tenant-owned query is scoped by the caller's institution (app/core/tenancy.py), which, when
there is none, runs unscoped on purpose (the CLI, seeds, maintenance): one view that missed a role
check would then read every school at once. Kept apart, an operator can never be mistaken for a
school's person: no login of a school finds it, no school's query returns it, and its token carries
an institution that owns nothing (app/core/auth.py NO_INSTITUTION), which admission keeps out of every
school view (app/core/admission.py).
"""

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from app.extensions import db


class Operator(db.Model):
    __tablename__ = "operators"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # operator login: by e-mail, case-insensitively
        Index("uq_operators_email_lower", func.lower(text("email")), unique=True),
    )


class OperatorSession(db.Model):
    """One operator login. Every operator request checks its row (few requests, so the database is
    asked each time): logging out or deactivating the operator ends it at once."""

    __tablename__ = "operator_sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ip: Mapped[str | None] = mapped_column(String(45))

    __table_args__ = (
        # deactivating an operator ends its sessions
        Index("ix_operator_sessions_operator_id", "operator_id"),
    )
