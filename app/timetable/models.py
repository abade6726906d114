"""The timetable: the bell schedule (periods per weekday), rooms, and lessons (a class subject taught by a
teacher in a room, in one period of one weekday, for a date range).

A lesson's slot is its period (a period belongs to one weekday, so `weekday` on a lesson is the period's,
kept for the day's queries). No teacher, room or class is in two lessons of one slot with overlapping
dates: app/timetable/services.py checks it in every database, and on PostgreSQL three exclusion
constraints (migration 0011_timetable) hold it against concurrent writers as well.
"""

import datetime as dt

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, SmallInteger, String, Time, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import TenantMixin, TimestampMixin
from app.extensions import db

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MAX_PERIOD = 20  # the highest period number a roll can name (app/attendance/schemas.py MAX_PERIOD)


class Period(TenantMixin, TimestampMixin, db.Model):
    """One period of the bell schedule: number N on a weekday (0 = Monday), from starts_at to ends_at
    (the school's local time). A roll for "period N" on a date is for this period of that weekday."""

    __tablename__ = "periods"
    id: Mapped[int] = mapped_column(primary_key=True)
    weekday: Mapped[int] = mapped_column(SmallInteger)
    number: Mapped[int] = mapped_column(SmallInteger)
    name: Mapped[str] = mapped_column(String(40))
    starts_at: Mapped[dt.time] = mapped_column(Time)
    ends_at: Mapped[dt.time] = mapped_column(Time)

    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),
        CheckConstraint(f"number BETWEEN 1 AND {MAX_PERIOD}", name="number"),
        CheckConstraint("ends_at > starts_at", name="times"),
        # natural key: period N of a weekday; also GET /periods?weekday= and the roll's period check
        UniqueConstraint("institution_id", "weekday", "number", name="uq_periods_institution_weekday_number"),
    )


class Room(TenantMixin, TimestampMixin, db.Model):
    __tablename__ = "rooms"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(60))
    capacity: Mapped[int | None]

    __table_args__ = (
        # natural key: room name per institution
        UniqueConstraint("institution_id", "name", name="uq_rooms_institution_name"),
    )


class Lesson(TenantMixin, TimestampMixin, db.Model):
    __tablename__ = "lessons"
    id: Mapped[int] = mapped_column(primary_key=True)
    class_subject_id: Mapped[int] = mapped_column(ForeignKey("class_subjects.id", ondelete="CASCADE"))
    # the class subject's class and subject (which never change), kept here for the clash rule and lists
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="RESTRICT"))
    teacher_id: Mapped[int] = mapped_column(ForeignKey("teachers.id", ondelete="RESTRICT"))
    room_id: Mapped[int | None] = mapped_column(ForeignKey("rooms.id", ondelete="RESTRICT"))
    period_id: Mapped[int] = mapped_column(ForeignKey("periods.id", ondelete="RESTRICT"))
    weekday: Mapped[int] = mapped_column(SmallInteger)  # the period's (a period never changes its weekday)
    start_date: Mapped[dt.date] = mapped_column(Date)
    end_date: Mapped[dt.date] = mapped_column(Date)

    __table_args__ = (
        CheckConstraint("end_date >= start_date", name="dates"),
        # GET /me/timetable and the class export: a class's lessons on a weekday
        Index("ix_lessons_class_weekday", "class_id", "weekday"),
        # GET /me/timetable and the teacher export: a teacher's lessons on a weekday
        Index("ix_lessons_teacher_weekday", "teacher_id", "weekday"),
        # the clash check by room, and GET /lessons?room_id=
        Index("ix_lessons_room_period", "room_id", "period_id"),
        # deleting a period or class subject: the lessons that use it
        Index("ix_lessons_period_id", "period_id"),
        Index("ix_lessons_class_subject_id", "class_subject_id"),
    )
