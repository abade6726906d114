from datetime import date, datetime

from sqlalchemy import JSON, CheckConstraint, Date, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import TenantMixin, TimestampMixin
from app.extensions import db

# Letter boundaries (minimum percentage) used when an institution has not set its own.
DEFAULT_GRADING_SCALE = [
    {"letter": "A", "min": 80},
    {"letter": "B", "min": 70},
    {"letter": "C", "min": 60},
    {"letter": "D", "min": 50},
    {"letter": "E", "min": 40},
    {"letter": "F", "min": 0},
]


class Institution(TimestampMixin, db.Model):
    __tablename__ = "institutions"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(80), unique=True)  # uq: institution by slug (seed, admin tools)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    email: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(40))
    address: Mapped[str | None] = mapped_column(String(500))
    grading_scale: Mapped[list] = mapped_column(JSON, default=lambda: list(DEFAULT_GRADING_SCALE))
    # Chronic absence: attendance rate below this percentage over a range.
    absence_threshold: Mapped[int] = mapped_column(default=90)
    country: Mapped[str | None] = mapped_column(String(2))  # ISO 3166-1 alpha-2 (app/institutions/codes.py)
    # Set by the platform's operator (app/operator): its people cannot log in; its records stay.
    suspended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


CLOSURE_KINDS = ("holiday", "strike", "exam", "other")


class Closure(TenantMixin, TimestampMixin, db.Model):
    """Days the school (class_id NULL) or one class is closed: no roll is taken, statistics skip them."""

    __tablename__ = "closures"
    id: Mapped[int] = mapped_column(primary_key=True)
    class_id: Mapped[int | None] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"))
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(10), default="holiday")
    name: Mapped[str] = mapped_column(String(100))

    __table_args__ = (
        CheckConstraint("kind IN ('holiday','strike','exam','other')", name="kind"),
        CheckConstraint("end_date >= start_date", name="dates"),
        # "is this day closed for class C" (roll call) and the closures within a range (statistics,
        # GET /closures?sort=start_date): the tenant's closures by date
        Index("ix_closures_institution_dates", "institution_id", "start_date", "end_date"),
        # deleting a class removes its closures (ON DELETE CASCADE looks them up by class)
        Index("ix_closures_class_id", "class_id"),
    )
