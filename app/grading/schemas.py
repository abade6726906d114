"""Gradebook bodies and answers. Scores, weights and percentages travel as decimal strings."""

import datetime as dt
from decimal import Decimal
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from app.core.schemas import Body, Out, decimal_text, rule

# Numeric(7, 2) / Numeric(5, 2) columns: the bounds the database can hold.
# The 0..max_score range is checked against the assessment, with a message naming both bounds.
Score = decimal_text(7, 2)
Weight = decimal_text(5, 2, minimum="0")
MaxScore = decimal_text(7, 2, positive=True)


class AssessmentTypeCreate(Body):
    name: str = Field(min_length=1, max_length=60)
    weight: Weight


class AssessmentTypeUpdate(Body):
    name: str = Field(None, min_length=1, max_length=60)
    weight: Weight = None


class AssessmentTypeOut(Out):
    id: int
    name: str
    weight: Decimal


class AssessmentCreate(Body):
    class_subject_id: int
    term_id: int
    assessment_type_id: int
    title: str = Field(min_length=1, max_length=200)
    max_score: MaxScore
    date: dt.date = Field(json_schema_extra=rule("within the term"))


class AssessmentUpdate(Body):
    # The class subject is fixed: its grades belong to that class's students.
    term_id: int = None
    assessment_type_id: int = None
    title: str = Field(None, min_length=1, max_length=200)
    max_score: MaxScore = Field(None, json_schema_extra=rule("not below a score already recorded"))
    date: dt.date = Field(None, json_schema_extra=rule("within the term"))
    read_only = frozenset({"class_subject_id"})


class AssessmentOut(Out):
    id: int
    class_subject_id: int
    term_id: int
    assessment_type_id: int
    title: str
    max_score: Decimal
    date: dt.date
    created_at: dt.datetime
    updated_at: dt.datetime


class GradeIn(Body):
    student_id: int
    score: Score = Field(json_schema_extra=rule("from 0 to the assessment's max_score"))
    comment: str | None = Field(None, max_length=500)  # left out: the stored comment is kept


class GradesIn(Body):
    grades: list[GradeIn] = Field(min_length=1, max_length=1000)


class GradeOut(Out):
    id: int
    assessment_id: int
    student_id: int
    admission_number: str
    first_name: str
    last_name: str
    score: Decimal
    max_score: Decimal
    percentage: Decimal
    letter: str
    comment: str | None
    graded_by_id: int | None
    updated_at: dt.datetime


class GradeCounts(Out):
    created: int
    updated: int
    unchanged: int


class GradesPutOut(Out):
    assessment_id: int
    data: list[GradeOut]
    counts: GradeCounts


class SubjectResultOut(Out):
    subject_id: int
    subject_code: str
    subject_name: str
    assessments: int  # graded assessments that count
    average: Decimal  # weighted average percentage, 1 decimal place
    letter: str


class TeacherSubjectResultOut(SubjectResultOut):
    teacher_name: str | None


class OverallOut(Out):
    average: Decimal | None  # mean of the subject averages; null without any grade
    letter: str | None


class TermResultsOut(Out):
    student_id: int
    term_id: int
    subjects: list[SubjectResultOut]
    overall: OverallOut


class RankingEntryOut(Out):
    position: int | None  # competition ranking (1, 2, 2, 4); null without any grade
    student_id: int
    admission_number: str
    first_name: str
    last_name: str
    average: Decimal | None
    letter: str | None


class RankingOut(Out):
    class_id: int
    term_id: int
    class_size: int
    data: list[RankingEntryOut]


class CardStudentOut(Out):
    id: int
    first_name: str
    last_name: str
    admission_number: str


class CardClassOut(Out):
    id: int
    name: str


class CardTermOut(Out):
    id: int
    name: str
    start_date: dt.date
    end_date: dt.date


class AttendanceTotalsOut(Out):
    present: int
    absent: int
    late: int
    excused: int
    total: int


class SubjectRemarkOut(Out):
    subject_id: int
    subject_name: str
    text: str
    author: str | None


class RemarksOut(Out):
    subjects: list[SubjectRemarkOut]  # the subject teachers' comments
    class_teacher: str | None
    head: str | None


class ReportCardOut(Out):
    school: str
    # Always None: the logo is served at GET /institution/logo and drawn on the PDF (app/jobs/pdf.py)
    logo: str | None
    remarks: RemarksOut
    student: CardStudentOut
    class_: CardClassOut | None = Field(alias="class")
    term: CardTermOut
    subjects: list[TeacherSubjectResultOut]
    overall: OverallOut
    position: int | None
    class_size: int | None
    attendance: AttendanceTotalsOut


class RemarkIn(Body):
    model_config = ConfigDict(json_schema_extra=rule("subject_id is given for kind subject, and only for it"))

    term_id: int
    kind: Literal["subject", "class_teacher", "head"] = Field(
        json_schema_extra=rule(
            "subject: the subject's teacher in the student's class (or an admin); class_teacher: the "
            "class's homeroom teacher (or an admin); head: an admin"
        )
    )
    subject_id: int | None = Field(None, json_schema_extra=rule("required for kind subject, else absent"))
    # null or absent: the remark is removed
    text: str | None = Field(None, min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _subject_for_subject(self):
        if (self.kind == "subject") != (self.subject_id is not None):
            raise ValueError("subject_id is required for kind subject and only for it")
        return self


class RemarksSavedOut(Out):
    student_id: int
    term_id: int
    remarks: RemarksOut
