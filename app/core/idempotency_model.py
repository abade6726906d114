from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import TenantMixin
from app.extensions import db


class IdempotencyRecord(TenantMixin, db.Model):  # type: ignore[name-defined]  # Flask-SQLAlchemy builds db.Model at run time
    """First answer to a retried write (payments, roll call), keyed by the client's Idempotency-Key."""

    __tablename__ = "idempotency_keys"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(100))
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int]
    response_body: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # replay lookup: a user's key on an endpoint
        Index("uq_idempotency_keys_scope", "institution_id", "user_id", "endpoint", "key", unique=True),
        # clean-up of old keys (beat)
        Index("ix_idempotency_keys_created_at", "created_at"),
    )
