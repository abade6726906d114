from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import TenantMixin, TimestampMixin
from app.extensions import db

JOB_STATUSES = ("queued", "running", "done", "failed", "expired")


class StoredFile(TenantMixin, db.Model):
    """A file the system wrote or received (exports, uploads); the bytes live on disk under instance/."""

    __tablename__ = "files"
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String(500))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # expired-file clean-up (beat): files past their expiry
        Index("ix_files_expires_at", "expires_at", postgresql_where=text("expires_at IS NOT NULL")),
    )


class Job(TenantMixin, TimestampMixin, db.Model):
    """An export or import job: what the API shows while a worker runs it."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(primary_key=True)
    job_type: Mapped[str] = mapped_column(String(10))  # export, import
    kind: Mapped[str] = mapped_column(String(40))  # attendance_register, students, ...
    format: Mapped[str | None] = mapped_column(String(10))
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(10), default="queued")
    progress_percent: Mapped[int] = mapped_column(default=0)
    rows_done: Mapped[int] = mapped_column(BigInteger, default=0)
    row_count: Mapped[int | None] = mapped_column(BigInteger)
    result: Mapped[dict | None] = mapped_column(JSON)  # import: created/updated/failed with reasons
    error: Mapped[str | None] = mapped_column(Text)
    input_file_id: Mapped[int | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"))
    output_file_id: Mapped[int | None] = mapped_column(ForeignKey("files.id", ondelete="SET NULL"))
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    attempts: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # "at most 2 running exports per institution" and GET /exports?status=
        Index("ix_jobs_institution_type_status", "institution_id", "job_type", "status"),
        # expired-export clean-up (beat)
        Index("ix_jobs_expires_at", "expires_at", postgresql_where=text("status = 'done'")),
    )
