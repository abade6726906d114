from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import TimestampMixin
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
