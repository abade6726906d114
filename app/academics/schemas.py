import datetime as dt
from datetime import date

from pydantic import ConfigDict, Field, model_validator

from app.core.schemas import Body, Out, rule


class _Dated(Body):
    model_config = ConfigDict(json_schema_extra=rule("end_date not before start_date"))

    @model_validator(mode="after")
    def _order(self):
        s, e = getattr(self, "start_date", None), getattr(self, "end_date", None)
        if s and e and e < s:
            raise ValueError("end_date must not be before start_date")
        return self


class YearCreate(_Dated):
    name: str = Field(min_length=1, max_length=40)
    start_date: date
    end_date: date
    is_current: bool = False


class YearUpdate(_Dated):
    name: str = Field(None, min_length=1, max_length=40)
    start_date: date = None
    end_date: date = None
    is_current: bool = None


class YearOut(Out):
    id: int
    name: str
    start_date: date
    end_date: date
    is_current: bool


class TermCreate(_Dated):
    academic_year_id: int
    name: str = Field(min_length=1, max_length=40)
    start_date: date
    end_date: date


class TermUpdate(_Dated):
    name: str = Field(None, min_length=1, max_length=40)
    start_date: date = None
    end_date: date = None


class TermOut(Out):
    id: int
    academic_year_id: int
    name: str
    start_date: date
    end_date: date


class SubjectCreate(Body):
    code: str = Field(min_length=1, max_length=20)
    name: str = Field(min_length=1, max_length=100)


class SubjectUpdate(Body):
    code: str = Field(None, min_length=1, max_length=20)
    name: str = Field(None, min_length=1, max_length=100)


class SubjectOut(Out):
    id: int
    code: str
    name: str


class ClassCreate(Body):
    academic_year_id: int
    name: str = Field(min_length=1, max_length=60)
    grade_level: int = Field(ge=0, le=20)
    section: str = Field(min_length=1, max_length=10)
    homeroom_teacher_id: int | None = None
    capacity: int | None = Field(None, ge=1, le=1000)


class ClassUpdate(Body):
    name: str = Field(None, min_length=1, max_length=60)
    grade_level: int = Field(None, ge=0, le=20)
    section: str = Field(None, min_length=1, max_length=10)
    homeroom_teacher_id: int | None = None
    capacity: int | None = Field(None, ge=1, le=1000)


class ClassOut(Out):
    id: int
    academic_year_id: int
    name: str
    grade_level: int
    section: str
    homeroom_teacher_id: int | None
    capacity: int | None


class ClassSubjectCreate(Body):
    class_id: int
    subject_id: int
    teacher_id: int | None = None


class ClassSubjectUpdate(Body):
    teacher_id: int | None = None


class ClassSubjectOut(Out):
    id: int
    class_id: int
    subject_id: int
    teacher_id: int | None


class EnrolmentCreate(_Dated):
    student_id: int
    class_id: int
    start_date: date = Field(
        json_schema_extra=rule("the dates overlap no other enrolment of the student (409 naming it)")
    )
    # Given: a closed period (backdating into a gap). Absent: open-ended, and a current enrolment that
    # began earlier is closed the day before (a move).
    end_date: date | None = None
    reason: str | None = Field(None, max_length=200)


class EnrolmentUpdate(_Dated):
    start_date: date = Field(
        None, json_schema_extra=rule("the dates overlap no other enrolment of the student (409 naming it)")
    )
    end_date: date | None = None
    reason: str | None = Field(None, max_length=200)


class TransferIn(Body):
    class_id: int
    date: dt.date = Field(
        json_schema_extra=rule(
            "after the start of the enrolment, which covers it: its last day is the day before, the new "
            "class's first day is this date"
        )
    )
    reason: str | None = Field(None, max_length=200)


class EnrolmentEnd(Body):
    end_date: date = Field(json_schema_extra=rule("not before the enrolment's start, which has not ended"))
    reason: str | None = Field(None, max_length=200)


class EnrolmentOut(Out):
    id: int
    student_id: int
    class_id: int
    start_date: date
    end_date: date | None
    reason: str | None


class TransferOut(Out):
    ended: EnrolmentOut
    started: EnrolmentOut


class RosterEntryOut(Out):
    id: int
    admission_number: str
    first_name: str
    last_name: str
    status: str
    enrolment_id: int
    enrolled_since: date
