from datetime import date
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from app.core.schemas import Body, Email, Out, rule
from app.institutions.codes import country_problem, currency_problem, timezone_problem


def _checked(problem):
    def check(value: str) -> str:
        message = problem(value)
        if message:
            raise ValueError(message)
        return value

    return AfterValidator(check)


TimeZone = Annotated[
    str,
    Field(min_length=1, max_length=64, json_schema_extra=rule("an IANA time zone name")),
    _checked(timezone_problem),
]
Country = Annotated[
    str,
    Field(pattern=r"^[A-Z]{2}$", json_schema_extra=rule("an ISO 3166-1 alpha-2 country code")),
    _checked(country_problem),
]
Currency = Annotated[
    str,
    Field(pattern=r"^[A-Z]{3}$", json_schema_extra=rule("an ISO 4217 currency code")),
    _checked(currency_problem),
]


class ScaleBand(Body):
    letter: str = Field(min_length=1, max_length=3)
    min: float = Field(ge=0, le=100)


class InstitutionUpdate(Body):
    name: str = Field(None, min_length=1, max_length=200)
    currency: Currency = None
    timezone: TimeZone = None
    country: Country | None = None
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
    country: str | None


ClosureKind = Literal["holiday", "strike", "exam", "other"]


class _ClosureDates(Body):
    model_config = ConfigDict(json_schema_extra=rule("end_date not before start_date"))

    @model_validator(mode="after")
    def _order(self):
        s, e = getattr(self, "start_date", None), getattr(self, "end_date", None)
        if s and e and e < s:
            raise ValueError("end_date must not be before start_date")
        return self


class ClosureCreate(_ClosureDates):
    # absent or null: the whole school is closed; a class id: that class only (an exam week, a trip)
    class_id: int | None = None
    start_date: date
    end_date: date
    kind: ClosureKind = "holiday"
    name: str = Field(min_length=1, max_length=100)


class ClosureUpdate(_ClosureDates):
    start_date: date = None
    end_date: date = None
    kind: ClosureKind = None
    name: str = Field(None, min_length=1, max_length=100)


class ClosureOut(Out):
    id: int
    class_id: int | None
    start_date: date
    end_date: date
    kind: ClosureKind
    name: str
