from datetime import datetime

from sqlalchemy import JSON, DateTime, Index, SmallInteger, String, Text, text
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


class OutboxSms(TenantMixin, db.Model):
    """An SMS, written in the transaction of its event and sent exactly once, as OutboxEmail is. The text
    is rendered when it is queued, so its encoding and segment count are known (and shown) up front."""

    __tablename__ = "sms_outbox"
    id: Mapped[int] = mapped_column(primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200))
    to_number: Mapped[str] = mapped_column(String(20))  # E.164, +254712345678
    kind: Mapped[str] = mapped_column(String(40))  # absence_alert, fee_reminder, payment_receipt, ...
    body: Mapped[str] = mapped_column(Text)
    encoding: Mapped[str] = mapped_column(String(5))  # gsm7 or ucs2
    segments: Mapped[int] = mapped_column(SmallInteger)
    status: Mapped[str] = mapped_column(String(10), default="pending")  # pending, sending, sent, failed
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_message_id: Mapped[str | None] = mapped_column(String(100))
    cost: Mapped[str | None] = mapped_column(String(30))
    delivery_status: Mapped[str | None] = mapped_column(String(30))  # from the provider's report
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # exactly-once creation: one message per event and recipient
        Index("uq_sms_outbox_institution_dedupe", "institution_id", "dedupe_key", unique=True),
        # the sender's queue: pending messages due now
        Index("ix_sms_outbox_pending_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        # lease recovery: rows left in "sending" past their lease
        Index("ix_sms_outbox_sending_lease", "next_attempt_at", postgresql_where=text("status = 'sending'")),
        # delivery reports name the provider's message id
        Index(
            "ix_sms_outbox_provider_message_id",
            "provider_message_id",
            postgresql_where=text("provider_message_id IS NOT NULL"),
        ),
    )
