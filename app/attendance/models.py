import datetime as dt

from sqlalchemy import (
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import BigId, TenantMixin, TimestampMixin
from app.extensions import db

STATUSES = ("present", "absent", "late", "excused")

# The codes a new (demo) school starts with (app/seed.py): code, label, the status it counts as.
DEFAULT_CODES = (
    ("P", "Present", "present"),
    ("L", "Late", "late"),
    ("A", "Absent, no reason given", "absent"),
    ("SICK", "Sick", "excused"),
    ("MED", "Medical appointment", "excused"),
    ("REL", "Religious observance", "excused"),
    ("SUSP", "Suspended", "absent"),
    ("TRIP", "Field trip (school activity)", "present"),
)


class AttendanceCode(TenantMixin, TimestampMixin, db.Model):
    """A school's own reason for a mark (sick, suspended, field trip), counted as one of STATUSES."""

    __tablename__ = "attendance_codes"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20))
    label: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(10))

    __table_args__ = (
        CheckConstraint("status IN ('present','absent','late','excused')", name="status"),
        # natural key, and the roll call's lookup of the codes a roll carries
        UniqueConstraint("institution_id", "code", name="uq_attendance_codes_institution_code"),
    )


class AttendanceRecord(TenantMixin, TimestampMixin, db.Model):
    __tablename__ = "attendance_records"
    # Response cache versions per student and per class (app/core/caching.py): a roll for one class leaves
    # the other classes' students' cached attendance alone.
    __cache_scopes__ = ("student_id", "class_id")
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    student_id: Mapped[int] = mapped_column(ForeignKey("students.id", ondelete="CASCADE"))
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"))
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subjects.id", ondelete="SET NULL"))
    period: Mapped[int] = mapped_column(SmallInteger, default=0)  # 0 = the whole day
    date: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(10))
    note: Mapped[str | None] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(10), default="manual")  # manual, qr, import
    # the school's reason (app/attendance/models.py AttendanceCode); status is what it counts as
    code_id: Mapped[int | None] = mapped_column(ForeignKey("attendance_codes.id", ondelete="RESTRICT"))
    marked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    __table_args__ = (
        CheckConstraint("status IN ('present','absent','late','excused')", name="status"),
        # natural key + roll-call upsert target: one mark per student, date, period (and subject);
        # also GET /students/{id}/attendance?from=&to= (student_id, date range)
        Index(
            "uq_attendance_student_date_period_subject",
            "student_id",
            "date",
            "period",
            func.coalesce(text("subject_id"), 0),
            unique=True,
        ),
        # GET /classes/{id}/attendance/{date} and class daily summaries
        Index("ix_attendance_class_date", "class_id", "date"),
        # GET /attendance/summary and absence alerts: the tenant's marks on a date by status
        Index("ix_attendance_institution_date_status", "institution_id", "date", "status"),
        # deleting an attendance code: is any mark still carrying it (few marks do)
        Index("ix_attendance_code_id", "code_id", postgresql_where=text("code_id IS NOT NULL")),
    )


class AttendanceSession(TenantMixin, db.Model):
    """A QR check-in window opened by a teacher for one class period."""

    __tablename__ = "attendance_sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"))
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subjects.id", ondelete="SET NULL"))
    period: Mapped[int] = mapped_column(SmallInteger, default=0)
    date: Mapped[dt.date] = mapped_column(Date)
    opened_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    opened_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # GET /classes/{id}/attendance-sessions: a class's sessions, newest first
        Index("ix_attendance_sessions_class_date", "class_id", "date"),
    )


class AttendanceCheckin(TenantMixin, db.Model):
    """One use of a QR session per student: the unique key makes a reused token fail."""

    __tablename__ = "attendance_checkins"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("attendance_sessions.id", ondelete="CASCADE"))
    student_id: Mapped[int] = mapped_column(ForeignKey("students.id", ondelete="CASCADE"))
    checked_in_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # check-in: a student checks in once per session
        Index("uq_attendance_checkins_session_student", "session_id", "student_id", unique=True),
    )
