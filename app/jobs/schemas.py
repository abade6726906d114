"""Export requests (one params model per kind, unknown fields rejected) and job responses."""

from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, Field, PositiveInt, field_validator

from app.core.schemas import DATE_PATTERN, Body, Out, rule
from app.jobs.storage import CONTENT_TYPES

MAX_RANGE_DAYS = 366 * 3


class ExportIn(Body):
    kind: str = Field(
        description="attendance_register, attendance_summary, attendance_records, class_roster, "
        "gradebook, report_cards, fee_statement, fee_collection, audit_log, oneroster_bulk, "
        "oneroster_delta, timetable_class, timetable_teacher",
        json_schema_extra=rule("one of these kinds"),
    )
    format: str = Field(
        description="csv, xlsx, pdf or zip, as the kind allows",
        json_schema_extra=rule("a format of the kind"),
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="the kind's parameters",
        json_schema_extra=rule("the parameters of the kind"),
    )


class Params(Body):
    pass


class _Range(Params):
    from_: date = Field(alias="from")
    to: date

    @field_validator("to")
    @classmethod
    def _order(cls, to, info):
        start = info.data.get("from_")
        if start is not None and start > to:
            raise ValueError("must not be before from")
        if start is not None and (to - start).days > MAX_RANGE_DAYS:
            raise ValueError(f"the range must not exceed {MAX_RANGE_DAYS} days")
        return to


class RegisterParams(Params):
    class_id: PositiveInt
    month: str = Field(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM")

    @field_validator("month")
    @classmethod
    def _month(cls, value):
        year, month = (int(p) for p in value.split("-"))
        if not (1 <= month <= 12 and 1900 <= year <= 9999):
            raise ValueError("must be a month, YYYY-MM")
        return value

    def first_day(self) -> date:
        year, month = (int(p) for p in self.month.split("-"))
        return date(year, month, 1)


class RangeClassParams(_Range):
    class_id: PositiveInt | None = None


class ClassParams(Params):
    class_id: PositiveInt


class ClassTermParams(Params):
    class_id: PositiveInt
    term_id: PositiveInt


class TimetableClassParams(Params):
    class_id: PositiveInt
    week_of: date | None = Field(None, description="a day of the week shown; default: the school's today")


class TimetableTeacherParams(Params):
    teacher_id: PositiveInt
    week_of: date | None = Field(None, description="a day of the week shown; default: the school's today")


class StudentParams(Params):
    student_id: PositiveInt


class RangeParams(_Range):
    pass


class OneRosterBulkParams(Params):
    history: bool = Field(
        False,
        description="also list ended homeroom enrollments (with their endDate), so the grades of students "
        "who have since left a class import with them: for moving a school to another system, not for a "
        "learning platform (one that ignores endDate would put students back into classes they left)",
    )


class OneRosterDeltaParams(Params):
    since: datetime = Field(
        description="records changed after this moment (ISO 8601; without a zone: UTC)",
        json_schema_extra=rule("a date-time"),
    )

    def since_utc(self) -> datetime:
        return self.since if self.since.tzinfo else self.since.replace(tzinfo=UTC)


class ProgressOut(Out):
    percent: int
    rows_done: int


class ExportOut(Out):
    id: int
    kind: str
    format: str
    params: dict
    status: str = Field(description="queued, running, done, failed or expired")
    progress: ProgressOut
    row_count: int | None = Field(description="estimated while queued/running, exact when done")
    size_bytes: int | None
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    download_url: str | None = Field(description="signed and short-lived (EXPORT_LINK_TTL); only when done")


class ImportOut(Out):
    id: int
    kind: str
    dry_run: bool
    status: str
    progress: ProgressOut
    row_count: int | None
    result: dict | None = Field(
        description="rows, created, updated, unchanged, failed and the failed rows with their reasons; "
        "oneroster: created and updated per kind of record, skipped, errors as {file, line, field, error}, "
        "written (false after a dry run or any error); "
        "created_ids (the records created); students: enrolled; teachers and guardians: logins_created, "
        "logins_linked, created_user_ids; guardians: links_created, links_updated"
    )
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


# -- documentation only (the OpenAPI document, app/core/openapi.py) -------------------------------------

# A form or query flag as app/jobs/services.py's _flag reads it: true/1/yes, false/0/no in any case, or
# empty (false).
FLAG = {
    "type": "string",
    "pattern": "^([ \t]*([Tt][Rr][Uu][Ee]|1|[Yy][Ee][Ss]|[Ff][Aa][Ll][Ss][Ee]|0|[Nn][Oo])[ \t]*)?$",
    "description": "true or false (also 1/0, yes/no); empty is false",
}


class ImportForm(BaseModel):
    """The multipart/form-data body of an import (the service reads the form itself)."""

    file: bytes = Field(
        description="The CSV file: a header row, then one record per row",
        json_schema_extra={
            "contentMediaType": "text/csv",
            **rule("UTF-8 CSV with the template's header row"),
        },
    )
    dry_run: str = Field("", json_schema_extra=FLAG)


class OneRosterImportForm(BaseModel):
    """A OneRoster import's form: the binding's zip, and the dry-run flag."""

    file: bytes = Field(
        description="The OneRoster 1.2 CSV zip: manifest.csv and the data files",
        json_schema_extra={"contentMediaType": "application/zip", **rule("a OneRoster 1.2 CSV zip")},
    )
    dry_run: str = Field("", json_schema_extra=FLAG)


# An enrolment may be prepared ahead (next term's classes), not for a date nobody can plan for
# (app/jobs/services.py _start_date).
MAX_START_AHEAD_DAYS = 366
START_DATE_RULE = f"at most {MAX_START_AHEAD_DAYS} days after the school's today"

# A student import's first day of enrolment as app/jobs/services.py's _start_date reads it: a date, or
# empty (the school's today).
START_DATE = {
    "type": "string",
    "pattern": f"^[ \t]*({DATE_PATTERN[1:-1]})?[ \t]*$",
    "description": "YYYY-MM-DD; empty is the school's today",
}


class StudentImportForm(ImportForm):
    """A student import's form: also the first day of the enrolments it makes."""

    start_date: str = Field("", json_schema_extra={**START_DATE, **rule(START_DATE_RULE)})


# A finished export, in the format it was asked in.
DOWNLOAD_TYPES = {t.split(";")[0]: {"type": "string", "format": "binary"} for t in CONTENT_TYPES.values()}
