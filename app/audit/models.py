from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import BigId, TenantMixin
from app.extensions import db


class AuditEntry(TenantMixin, db.Model):
    """Append-only: a PostgreSQL trigger (see the migration) refuses UPDATE and DELETE."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(40))  # create, update, delete, login_failed, access_denied...
    entity_type: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    changes: Mapped[dict | None] = mapped_column(JSON)  # {"field": [before, after]}
    request_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # GET /audit-log?from=&to=: the tenant's log in time order (keyset on created_at, id)
        Index("ix_audit_log_institution_created", "institution_id", "created_at", "id"),
        # GET /audit-log?entity_type=&entity_id=: the history of one record
        Index("ix_audit_log_institution_entity", "institution_id", "entity_type", "entity_id", "id"),
        # GET /audit-log?actor_id=: what one user did
        Index("ix_audit_log_institution_actor", "institution_id", "actor_id", "id"),
    )
