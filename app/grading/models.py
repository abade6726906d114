import datetime as dt
from decimal import Decimal

from sqlalchemy import (
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Numeric,
    String,
    UniqueConstraint,
    func,
    literal_column,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import BigId, TenantMixin, TimestampMixin
from app.extensions import db


class AssessmentType(TenantMixin, TimestampMixin, db.Model):
    __tablename__ = "assessment_types"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(60))
    weight: Mapped[Decimal] = mapped_column(Numeric(5, 2))  # relative weight in term results

    __table_args__ = (
        # natural key: type name per institution
        UniqueConstraint("institution_id", "name", name="uq_assessment_types_institution_name"),
        CheckConstraint("weight >= 0", name="weight_nonnegative"),
    )


class Assessment(TenantMixin, TimestampMixin, db.Model):
    __tablename__ = "assessments"
    id: Mapped[int] = mapped_column(primary_key=True)
    class_subject_id: Mapped[int] = mapped_column(ForeignKey("class_subjects.id", ondelete="CASCADE"))
    term_id: Mapped[int] = mapped_column(ForeignKey("terms.id", ondelete="RESTRICT"))
    assessment_type_id: Mapped[int] = mapped_column(ForeignKey("assessment_types.id", ondelete="RESTRICT"))
    title: Mapped[str] = mapped_column(String(200))
    max_score: Mapped[Decimal] = mapped_column(Numeric(7, 2))
    date: Mapped[dt.date] = mapped_column(Date)

    __table_args__ = (
        # OneRoster delta (dateLastModified>...): the school's rows changed since a time (app/oneroster)
        Index("ix_assessments_institution_updated", "institution_id", "updated_at"),
        # GET /assessments?class_subject_id=&term_id= and term results per class subject
        Index("ix_assessments_class_subject_term", "class_subject_id", "term_id"),
        # term results: all assessments of a term in the tenant
        Index("ix_assessments_term", "term_id"),
        CheckConstraint("max_score > 0", name="max_score_positive"),
    )


class Grade(TenantMixin, TimestampMixin, db.Model):
    __tablename__ = "grades"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessments.id", ondelete="CASCADE"))
    student_id: Mapped[int] = mapped_column(ForeignKey("students.id", ondelete="CASCADE"))
    score: Mapped[Decimal] = mapped_column(Numeric(7, 2))
    comment: Mapped[str | None] = mapped_column(String(500))
    graded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    __table_args__ = (
        # OneRoster delta (dateLastModified>...): the school's rows changed since a time (app/oneroster)
        Index("ix_grades_institution_updated", "institution_id", "updated_at"),
        # natural key + bulk upsert target: one grade per student and assessment; GET /assessments/{id}/grades
        UniqueConstraint("assessment_id", "student_id", name="uq_grades_assessment_student"),
        # term results and report cards: a student's grades
        Index("ix_grades_student_id", "student_id"),
        CheckConstraint("score >= 0", name="score_nonnegative"),
    )


REMARK_KINDS = ("subject", "class_teacher", "head")


class ReportRemark(TenantMixin, TimestampMixin, db.Model):
    """What a report card says in words: the subject teacher's comment per subject (kind "subject"),
    the class teacher's and the head's remarks; one of each per student and term."""

    __tablename__ = "report_card_remarks"
    id: Mapped[int] = mapped_column(primary_key=True)
    student_id: Mapped[int] = mapped_column(ForeignKey("students.id", ondelete="CASCADE"))
    term_id: Mapped[int] = mapped_column(ForeignKey("terms.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(15))
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(String(2000))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    __table_args__ = (
        CheckConstraint("kind IN ('subject','class_teacher','head')", name="kind"),
        CheckConstraint("(kind = 'subject') = (subject_id IS NOT NULL)", name="subject_only_for_subject"),
        # natural key (one remark of a kind per student, term and subject) and the report cards' read:
        # the remarks of a class's students for one term (student_id IN (...) AND term_id = ?)
        Index(
            "uq_report_card_remarks_student_term_kind_subject",
            "student_id",
            "term_id",
            "kind",
            func.coalesce(literal_column("subject_id"), 0),
            unique=True,
        ),
    )
