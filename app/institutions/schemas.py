from pydantic import Field, field_validator

from app.core.schemas import Body, Email, Out, rule


class ScaleBand(Body):
    letter: str = Field(min_length=1, max_length=3)
    min: float = Field(ge=0, le=100)


class InstitutionUpdate(Body):
    name: str = Field(None, min_length=1, max_length=200)
    currency: str = Field(None, pattern=r"^[A-Z]{3}$")
    timezone: str = Field(None, min_length=1, max_length=64, json_schema_extra=rule("an IANA time zone name"))
    email: Email | None = None
    phone: str | None = Field(None, max_length=40)
    address: str | None = Field(None, max_length=500)
    grading_scale: list[ScaleBand] = Field(
        None,
        min_length=1,
        json_schema_extra=rule("minimums from the highest down, without repeats, the last 0"),
    )
    absence_threshold: int = Field(None, ge=0, le=100)
    read_only = frozenset({"slug"})

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
