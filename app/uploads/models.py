from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import TenantMixin
from app.extensions import db

# What a file is, by its owner: a person's photo, a school's logo, a student's documents.
PHOTO, LOGO = "photo", "logo"
DOCUMENT_KINDS = ("birth_certificate", "transfer_letter", "medical_form", "other")
OWNER_TYPES = ("student", "teacher", "institution")
# thumbnail_status: pending (the task has yet to run), done, failed (not an image Pillow could read
# again), none (a PDF: no thumbnail), erased (its owner was deleted: docs/UPLOADS.md)
THUMBNAIL_STATUSES = ("pending", "done", "failed", "none", "erased")
ONE_PER_OWNER = f"kind IN ('{PHOTO}', '{LOGO}')"


class Upload(TenantMixin, db.Model):
    """A photo, logo or document a school keeps. The bytes live in the upload storage
    (app/uploads/storage.py) under `storage_key`; images are stored re-encoded, without metadata."""

    __tablename__ = "uploads"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_type: Mapped[str] = mapped_column(String(20))
    owner_id: Mapped[int] = mapped_column()  # a student's or teacher's id, or the institution's for a logo
    kind: Mapped[str] = mapped_column(String(30))
    title: Mapped[str | None] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column()
    height: Mapped[int | None] = mapped_column()
    storage_key: Mapped[str] = mapped_column(String(500))
    thumbnail_key: Mapped[str | None] = mapped_column(String(500))
    thumbnail_status: Mapped[str] = mapped_column(String(10))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # GET /students/{id}/documents (newest first), and a person's files when they are erased
        Index("ix_uploads_owner", "institution_id", "owner_type", "owner_id", "id"),
        # one photo per person and one logo per school; GET .../photo and the report cards' logo
        Index(
            "uq_uploads_one_per_owner",
            "institution_id",
            "owner_type",
            "owner_id",
            "kind",
            unique=True,
            postgresql_where=text(ONE_PER_OWNER),
            sqlite_where=text(ONE_PER_OWNER),
        ),
        # the beat sweep: images whose thumbnail is still pending (a lost message)
        Index(
            "ix_uploads_thumbnail_pending",
            "created_at",
            postgresql_where=text("thumbnail_status = 'pending'"),
            sqlite_where=text("thumbnail_status = 'pending'"),
        ),
    )
