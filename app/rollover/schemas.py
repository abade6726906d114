import datetime as dt
from datetime import date
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from app.core.schemas import Body, Out, rule


class NewTermIn(Body):
    model_config = ConfigDict(json_schema_extra=rule("end_date not before start_date"))
    name: str = Field(min_length=1, max_length=40)
    start_date: date
    end_date: date

    @model_validator(mode="after")
    def _order(self):
        if self.end_date < self.start_date:
            raise ValueError("end_date must not be before start_date")
        return self


class NewYearIn(Body):
    name: str = Field(
        None,
        min_length=1,
        max_length=40,
        description="Default: the source year's name with its years counted up (2025/26 -> 2026/27).",
    )
    start_date: date = Field(None, description="Default: the source year's start, one calendar year on.")
    end_date: date = Field(None, description="Default: the source year's end, one calendar year on.")
    terms: list[NewTermIn] = Field(
        None,
        min_length=1,
        max_length=12,
        description="Default: the source year's terms, names kept, dates moved with the year. Fee "
        "categories are copied term by term in date order (first to first).",
    )


class OverrideIn(Body):
    student_id: int = Field(json_schema_extra=rule("a student enrolled in a class of the source year"))
    action: Literal["promote", "repeat", "graduate", "withdraw"]


class RolloverIn(Body):
    dry_run: bool = Field(False, description="true: answer with the preview; nothing is written, no job.")
    overrides: list[OverrideIn] = Field(default_factory=list, max_length=50_000)
    new_year: NewYearIn = None


class RolloverJobOut(Out):
    id: int
    status: str
    progress: dict
    error: str | None
    attempts: int
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class RolloverOut(Out):
    id: int
    source_year_id: int
    target_year_id: int | None
    status: Literal["queued", "running", "applied", "failed", "undone"]
    summary: dict | None
    created_at: dt.datetime
    applied_at: dt.datetime | None
    undone_at: dt.datetime | None
    job: RolloverJobOut | None


class RolloverAnswer(Out):
    dry_run: bool
    created: bool = Field(description="false: the year's rollover already existed; nothing changed")
    preview: dict | None = Field(
        description="dry_run: the new year and terms, counts copied, students per grade and class and where "
        "they go, graduates and withdrawals by name, carried balances"
    )
    rollover: RolloverOut | None
