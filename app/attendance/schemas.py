"""Roll call and QR check-in: request bodies (unknown fields rejected) and response descriptions."""

import re
from datetime import date, datetime
from typing import Literal

from pydantic import ConfigDict, field_validator, model_validator

from app.core.errors import ValidationFailed
from app.core.schemas import Body, Field, Out, parse_body, rule

Status = Literal["present", "absent", "late", "excused"]
MAX_PERIOD = 20


class RollEntry(Body):
    model_config = ConfigDict(json_schema_extra=rule("status or code (or both, agreeing)"))

    student_id: int
    # what the mark counts as; may be left out when `code` is given (the code says it)
    status: Status | None = None
    code: str | None = Field(
        None,
        min_length=1,
        max_length=20,
        json_schema_extra=rule("one of the school's attendance codes (GET /attendance-codes)"),
    )
    note: str | None = Field(None, max_length=500)

    @model_validator(mode="after")
    def _status_or_code(self):
        if self.status is None and self.code is None:
            raise ValueError("give a status or an attendance code")
        return self

    @field_validator("note")
    @classmethod
    def _blank_is_none(cls, v):
        # "" and None mean the same (no note); keeping one form makes resends compare equal.
        return v or None


class RollIn(Body):
    subject_id: int | None = None
    period: int = Field(0, ge=0, le=MAX_PERIOD)  # 0 = the whole day
    records: list[RollEntry] = Field(min_length=1, max_length=500)


class SessionIn(Body):
    subject_id: int | None = None
    period: int = Field(0, ge=0, le=MAX_PERIOD)
    minutes: int = Field(5, ge=1, le=60)


class CheckinIn(Body):
    token: str = Field(
        min_length=1, max_length=500, json_schema_extra=rule("the code of an open check-in session")
    )


_INDEXED = re.compile(r"^records\.(\d+)")


def parse_roll() -> RollIn:
    """Like parse_body, with list positions written the way clients index them: records[3].status."""
    try:
        return parse_body(RollIn)
    except ValidationFailed as exc:
        raise ValidationFailed({_INDEXED.sub(r"records[\1]", k): v for k, v in exc.errors.items()}) from None


# --- responses (OpenAPI descriptions; serialisation builds plain dicts) ---------------------------------


class MarkerOut(Out):
    id: int
    name: str


class RollRowOut(Out):
    student_id: int
    admission_number: str
    first_name: str
    last_name: str
    status: Status | None  # null: not marked yet
    code: str | None  # the school's attendance code, when the mark carries one
    note: str | None
    source: str | None
    marked_by: MarkerOut | None
    marked_at: datetime | None


class RollTotalsOut(Out):
    present: int
    absent: int
    late: int
    excused: int
    unmarked: int
    enrolled: int


class RollCountsOut(Out):
    created: int
    updated: int
    unchanged: int


class RollOut(Out):
    closure: str | None  # the closure covering the day for this class (no roll is taken then)
    class_id: int
    date: date
    subject_id: int | None
    period: int
    students: list[RollRowOut]
    totals: RollTotalsOut


class RollSavedOut(RollOut):
    counts: RollCountsOut


class RecordOut(Out):
    id: int
    date: date
    class_id: int
    subject_id: int | None
    period: int
    status: Status
    note: str | None
    code_id: int | None
    source: str
    marked_by_id: int | None
    marked_at: datetime


class StatusTotalsOut(Out):
    present: int
    absent: int
    late: int
    excused: int
    marked: int


class HistoryOut(Out):
    data: list[RecordOut]
    next_cursor: str | None
    student_id: int
    from_: date | None = Field(None, alias="from")
    to: date | None
    totals: StatusTotalsOut
    rate: float | None  # (present + late) / marked, percent, 1 decimal


class SummaryRowOut(Out):
    present: int
    absent: int
    late: int
    excused: int
    marked: int
    enrolled: int
    unmarked: int
    rate: float | None


class ClassSummaryOut(SummaryRowOut):
    class_id: int
    name: str


class SummaryOut(Out):
    date: date
    period: int
    subject_id: int | None
    school: SummaryRowOut
    classes: list[ClassSummaryOut]


class AbsenteeOut(Out):
    student_id: int
    admission_number: str
    first_name: str
    last_name: str
    present: int
    absent: int
    late: int
    excused: int
    marked: int
    rate: float


class AbsenteesOut(Out):
    data: list[AbsenteeOut]
    next_cursor: str | None
    from_: date = Field(alias="from")
    to: date
    threshold: float


class SessionOut(Out):
    id: int
    class_id: int
    subject_id: int | None
    period: int
    date: date
    opened_by_id: int | None
    opened_at: datetime
    expires_at: datetime
    checked_in: int


class SessionCreatedOut(SessionOut):
    token: str
    qr_svg: str


class CheckinOut(Out):
    session_id: int
    student_id: int
    class_id: int
    subject_id: int | None
    period: int
    date: date
    status: Status
    source: str
    checked_in_at: datetime


# --- attendance codes ------------------------------------------------------------------------------------


class CodeCreate(Body):
    code: str = Field(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9_-]+$")
    label: str = Field(min_length=1, max_length=100)
    status: Status


class CodeUpdate(Body):
    """The label only: what a code counts as is fixed once marks carry it (create a new code instead)."""

    label: str = Field(None, min_length=1, max_length=100)


class CodeOut(Out):
    id: int
    code: str
    label: str
    status: Status
