"""Announcements: a post by staff to an audience, and one row per person it reached (with read state).

A recipient is a person, not a login: a guardian without an account still has a row (the e-mail/SMS
went to them, the delivery counts include them), and sees the announcement once they get a login.
"""

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import TenantMixin, utcnow
from app.extensions import db

AUDIENCES = ("school", "grade", "class", "guardians", "staff")
# Who a recipient row names: a guardian, a student, or a staff login (users.id).
RECIPIENT_KINDS = ("guardian", "student", "user")


class Announcement(TenantMixin, db.Model):
    __tablename__ = "announcements"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    audience: Mapped[str] = mapped_column(String(10))
    grade_level: Mapped[int | None]
    class_id: Mapped[int | None] = mapped_column(ForeignKey("classes.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(10), default="queued")  # queued, delivered
    recipient_count: Mapped[int] = mapped_column(default=0)
    email_count: Mapped[int] = mapped_column(default=0)
    sms_count: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("audience IN ('school','grade','class','guardians','staff')", name="audience"),
        CheckConstraint("status IN ('queued','delivered')", name="status"),
        # GET /announcements (staff): the school's announcements, newest first; a teacher's own by author
        Index("ix_announcements_institution_id", "institution_id", "id"),
        Index("ix_announcements_author_id", "author_id", "id"),
    )


class AnnouncementRecipient(TenantMixin, db.Model):
    __tablename__ = "announcement_recipients"
    announcement_id: Mapped[int] = mapped_column(
        ForeignKey("announcements.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)  # guardian, student, user
    person_id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("kind IN ('guardian','student','user')", name="kind"),
        # GET /me/announcements: one person's announcements, newest first (the primary key serves the
        # fan-out's ON CONFLICT, the read mark and the delivery counts of one announcement)
        Index("ix_announcement_recipients_person", "kind", "person_id", "announcement_id"),
    )
