from datetime import datetime

from sqlalchemy import JSON, DateTime, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import TenantMixin
from app.extensions import db


class OutboxEmail(TenantMixin, db.Model):
    """Written in the transaction of the event that causes it; a task delivers it exactly once."""

    __tablename__ = "email_outbox"
    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200))  # e.g. absence:{student}:{date}:{guardian}
    to_address: Mapped[str] = mapped_column(String(255))
    template: Mapped[str] = mapped_column(String(60))
    context: Mapped[dict] = mapped_column(JSON, default=dict)
    subject: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(10), default="pending")  # pending, sending, sent, failed
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # exactly-once creation: one message per event and recipient
        Index("uq_email_outbox_institution_dedupe", "institution_id", "dedupe_key", unique=True),
        # the sender's queue: pending messages due now
        Index("ix_email_outbox_pending_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        # lease recovery: rows left in "sending" past their lease (next_attempt_at) by a worker that died
        Index(
            "ix_email_outbox_sending_lease", "next_attempt_at", postgresql_where=text("status = 'sending'")
        ),
    )
