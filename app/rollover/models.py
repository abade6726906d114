from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import TenantMixin, TimestampMixin
from app.extensions import db

ROLLOVER_STATUSES = ("queued", "running", "applied", "failed", "undone")
ACTIONS = ("promote", "repeat", "graduate", "withdraw")


class Rollover(TenantMixin, TimestampMixin, db.Model):
    """One year-end rollover of a school (app/rollover/services.py): what was asked, what it made (ids, for
    the undo), and what it did (the summary the API shows)."""

    __tablename__ = "rollovers"
    id: Mapped[int] = mapped_column(primary_key=True)
    source_year_id: Mapped[int] = mapped_column(ForeignKey("academic_years.id", ondelete="CASCADE"))
    # SET NULL: an undo deletes the year it made; the record stays, as "undone"
    target_year_id: Mapped[int | None] = mapped_column(ForeignKey("academic_years.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(10), default="queued")
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    request: Mapped[dict] = mapped_column(JSON, default=dict)  # new_year and overrides as given
    summary: Mapped[dict | None] = mapped_column(JSON)
    created_ids: Mapped[dict | None] = mapped_column(JSON)  # what the undo removes or restores
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    undone_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # idempotent apply: one rollover of a year that is not undone (a second POST finds it)
        Index(
            "uq_rollovers_source_live",
            "source_year_id",
            unique=True,
            postgresql_where=text("status <> 'undone'"),
            sqlite_where=text("status <> 'undone'"),
        ),
    )
