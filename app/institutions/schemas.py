from pydantic import Field, field_validator

from app.core.schemas import Body, Email, Out
from app.institutions.calendar import known_zone


class ScaleBand(Body):
    letter: str = Field(min_length=1, max_length=3)
    min: float = Field(ge=0, le=100)


class InstitutionUpdate(Body):
    name: str | None = Field(None, min_length=1, max_length=200)
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$")
    timezone: str | None = Field(None, min_length=1, max_length=64)
    email: Email | None = None
    phone: str | None = Field(None, max_length=40)
    address: str | None = Field(None, max_length=500)
    grading_scale: list[ScaleBand] | None = None
    absence_threshold: int | None = Field(None, ge=0, le=100)
    read_only = frozenset({"slug"})

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name):
        # Checked when saved: the calendar counts an unknown zone as UTC, which would silently shift
        # every "today" and day boundary of the school.
        if name is not None and not known_zone(name):
            raise ValueError("is not a time zone of the IANA database, e.g. Africa/Nairobi")
        return name

    @field_validator("grading_scale")
    @classmethod
    def _scale(cls, bands):
        if bands is None:
            return bands
        mins = [b.min for b in bands]
        if mins != sorted(mins, reverse=True) or len(set(mins)) != len(mins):
            raise ValueError("bands must be listed from the highest minimum to the lowest, without repeats")
        if mins[-1] != 0:
            raise ValueError("the last band must start at 0")
        return bands


class InstitutionOut(Out):
    id: int
    name: str
    slug: str
    currency: str
    timezone: str
    email: str | None
    phone: str | None
    address: str | None
    grading_scale: list
    absence_threshold: int
