import datetime as dt
from datetime import date
from typing import Literal

from pydantic import ConfigDict, Field

from app.core.schemas import Body, Out, rule


class NewTermIn(Body):
    # checked with the year (app/rollover/services.py), so a 422 names the term by its place
    model_config = ConfigDict(
        json_schema_extra=rule(
            "end_date not before start_date; inside the new year; overlapping no other term"
        )
    )
    name: str = Field(min_length=1, max_length=40)
    start_date: date
    end_date: date


class NewYearIn(Body):
    model_config = ConfigDict(
        json_schema_extra=rule(
            "name not taken by another year of the school (and at most 40 characters once counted up); "
            "start_date after the source year's end; end_date not before start_date"
        )
    )
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
    action: Literal["promote", "repeat", "graduate", "withdraw"] = Field(
        json_schema_extra=rule("promote: the year has a class of the student's grade + 1")
    )


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
