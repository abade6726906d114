"""Periods, rooms and lessons: request bodies (unknown fields rejected) and response descriptions."""

from datetime import date, time

from pydantic import ConfigDict, Field, model_validator

from app.core.schemas import Body, Out, rule
from app.timetable.models import MAX_PERIOD

# Wall-clock times of the school's day as HH:MM (24 h), never with an offset: a bell rings at 08:00
# local time whatever the date. Read as text so no offset or leap second ever reaches the database.
CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
Weekday = Field(ge=0, le=6, description="0 = Monday ... 6 = Sunday")


def _clock(value):
    if value is None:
        return None
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


class _Times(Body):
    model_config = ConfigDict(json_schema_extra=rule("ends_at after starts_at"))

    @model_validator(mode="after")
    def _order(self):
        s, e = getattr(self, "starts_at", None), getattr(self, "ends_at", None)
        if s and e and _clock(e) <= _clock(s):
            raise ValueError("ends_at must be after starts_at")
        return self

    def times(self) -> dict:
        """The body's values with the clock texts as times (what the model stores)."""
        values = self.model_dump(exclude_unset=True)
        for name in ("starts_at", "ends_at"):
            if name in values:
                values[name] = _clock(values[name])
        return values


class PeriodCreate(_Times):
    weekday: int = Weekday
    number: int = Field(ge=1, le=MAX_PERIOD, description="the number a roll names (PUT .../attendance)")
    name: str = Field(min_length=1, max_length=40)
    starts_at: str = Field(pattern=CLOCK, description="HH:MM, the school's local time")
    ends_at: str = Field(pattern=CLOCK, description="HH:MM, after starts_at")


class PeriodUpdate(_Times):
    """A period stays on its weekday (its lessons are that day's): make another one for another day."""

    number: int = Field(None, ge=1, le=MAX_PERIOD)
    name: str = Field(None, min_length=1, max_length=40)
    starts_at: str = Field(None, pattern=CLOCK)
    ends_at: str = Field(None, pattern=CLOCK)


class PeriodOut(Out):
    id: int
    weekday: int
    number: int
    name: str
    starts_at: str = Field(description="HH:MM")
    ends_at: str = Field(description="HH:MM")


class RoomCreate(Body):
    name: str = Field(min_length=1, max_length=60)
    capacity: int | None = Field(None, ge=1, le=10_000)


class RoomUpdate(Body):
    name: str = Field(None, min_length=1, max_length=60)
    capacity: int | None = Field(None, ge=1, le=10_000)


class RoomOut(Out):
    id: int
    name: str
    capacity: int | None


class LessonCreate(Body):
    model_config = ConfigDict(json_schema_extra=rule("end_date not before start_date"))

    class_subject_id: int
    teacher_id: int | None = Field(
        None, description="default: the class subject's teacher", json_schema_extra=rule("a live teacher")
    )
    room_id: int | None = None
    period_id: int
    start_date: date | None = Field(
        None,
        description="default: the first day of the class's year",
        json_schema_extra=rule("in the class's year"),
    )
    end_date: date | None = Field(
        None,
        description="default: the last day of the class's year",
        json_schema_extra=rule("in the class's year"),
    )

    @model_validator(mode="after")
    def _order(self):
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date must not be before start_date")
        return self


class LessonUpdate(Body):
    """The class subject stays: a lesson of another subject is another lesson."""

    model_config = ConfigDict(json_schema_extra=rule("end_date not before start_date"))

    teacher_id: int = Field(None, json_schema_extra=rule("a live teacher"))
    room_id: int | None = None
    period_id: int = None
    start_date: date = Field(None, json_schema_extra=rule("in the class's year"))
    end_date: date = Field(None, json_schema_extra=rule("in the class's year"))

    @model_validator(mode="after")
    def _order(self):
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError("end_date must not be before start_date")
        return self


class LessonOut(Out):
    id: int
    class_subject_id: int
    class_id: int
    subject_id: int
    teacher_id: int
    room_id: int | None
    period_id: int
    weekday: int
    start_date: date
    end_date: date


class SlotOut(Out):
    """One lesson of a day, with the names a timetable shows."""

    lesson_id: int
    period_id: int
    period_number: int
    period_name: str
    starts_at: str = Field(description="HH:MM, the school's local time")
    ends_at: str = Field(description="HH:MM")
    class_id: int
    class_name: str
    subject_id: int
    subject_name: str
    teacher_id: int
    teacher_name: str
    room_id: int | None
    room_name: str | None


class DayOut(Out):
    """Whose day it is (a teacher, or a student: the guardian's children one by one) and its lessons."""

    role: str = Field(description="teacher or student")
    person_id: int = Field(description="the teacher's or the student's id")
    name: str
    class_id: int | None = Field(description="the student's class on that date (null: not enrolled)")
    lessons: list[SlotOut]


class MyTimetableOut(Out):
    date: date
    weekday: int
    weekday_name: str
    timetables: list[DayOut]
