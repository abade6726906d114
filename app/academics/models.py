from datetime import date

from sqlalchemy import Boolean, Date, ForeignKey, Index, String, UniqueConstraint, func, literal, text
from sqlalchemy.dialects.postgresql import ExcludeConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.models import SoftDeleteMixin, TenantMixin, TimestampMixin
from app.extensions import db


class AcademicYear(TenantMixin, TimestampMixin, db.Model):
    __tablename__ = "academic_years"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    is_current: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        # natural key: year name per institution ("2026/27")
        UniqueConstraint("institution_id", "name", name="uq_academic_years_institution_name"),
    )


class Term(TenantMixin, TimestampMixin, db.Model):
    __tablename__ = "terms"
    id: Mapped[int] = mapped_column(primary_key=True)
    academic_year_id: Mapped[int] = mapped_column(ForeignKey("academic_years.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(40))
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)

    __table_args__ = (
        # natural key: term name within a year; also GET /terms?academic_year_id=
        UniqueConstraint("academic_year_id", "name", name="uq_terms_year_name"),
        # roll call: the term containing a date (start_date <= d AND end_date >= d) within the tenant
        Index("ix_terms_institution_dates", "institution_id", "start_date", "end_date"),
    )


class Subject(TenantMixin, TimestampMixin, db.Model):
    __tablename__ = "subjects"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100))

    __table_args__ = (
        # natural key: subject code per institution
        UniqueConstraint("institution_id", "code", name="uq_subjects_institution_code"),
    )


class SchoolClass(TenantMixin, TimestampMixin, SoftDeleteMixin, db.Model):
    __tablename__ = "classes"
    id: Mapped[int] = mapped_column(primary_key=True)
    academic_year_id: Mapped[int] = mapped_column(ForeignKey("academic_years.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(60))
    grade_level: Mapped[int]
    section: Mapped[str] = mapped_column(String(10))
    homeroom_teacher_id: Mapped[int | None] = mapped_column(ForeignKey("teachers.id", ondelete="SET NULL"))
    capacity: Mapped[int | None]

    __table_args__ = (
        # OneRoster delta (dateLastModified>...): the school's rows changed since a time (app/oneroster)
        Index("ix_classes_institution_updated", "institution_id", "updated_at"),
        # natural key: one grade+section per year; also GET /classes?academic_year_id=&grade_level=
        UniqueConstraint(
            "institution_id",
            "academic_year_id",
            "grade_level",
            "section",
            name="uq_classes_institution_year_grade_section",
        ),
        # GET /classes?grade_level=: the tenant's classes of one grade (invoice generation by grade too)
        Index("ix_classes_institution_grade", "institution_id", "grade_level"),
        # teacher scope: classes a teacher leads as homeroom teacher
        Index(
            "ix_classes_homeroom_teacher_id",
            "homeroom_teacher_id",
            postgresql_where=text("homeroom_teacher_id IS NOT NULL"),
        ),
    )


class ClassSubject(TenantMixin, TimestampMixin, db.Model):
    __tablename__ = "class_subjects"
    id: Mapped[int] = mapped_column(primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="RESTRICT"))
    teacher_id: Mapped[int | None] = mapped_column(ForeignKey("teachers.id", ondelete="SET NULL"))

    subject = relationship("Subject", lazy="raise")
    teacher = relationship("Teacher", lazy="raise")

    __table_args__ = (
        # OneRoster delta (dateLastModified>...): the school's rows changed since a time (app/oneroster)
        Index("ix_class_subjects_institution_updated", "institution_id", "updated_at"),
        # OneRoster /classes, /enrollments (migration 0013): a school's sections in id order (the
        # default order) and in sourcedId order, and the sections of one subject (course.sourcedId='course-N')
        Index("ix_class_subjects_institution_id", "institution_id", "id"),
        Index(
            "ix_class_subjects_institution_sourced_id",
            "institution_id",
            text("('section-' || CAST(id AS VARCHAR))"),
        ),
        Index("ix_class_subjects_institution_subject", "institution_id", "subject_id"),
        # natural key: a subject is taught once per class; also GET /class-subjects?class_id=
        UniqueConstraint("class_id", "subject_id", name="uq_class_subjects_class_subject"),
        # teacher scope: the classes a teacher teaches (every teacher permission check)
        Index("ix_class_subjects_teacher_id", "teacher_id"),
    )


class Enrolment(TenantMixin, TimestampMixin, db.Model):
    __tablename__ = "enrolments"
    id: Mapped[int] = mapped_column(primary_key=True)
    student_id: Mapped[int] = mapped_column(ForeignKey("students.id", ondelete="CASCADE"))
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id", ondelete="CASCADE"))
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)  # NULL while current
    reason: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        # OneRoster delta (dateLastModified>...): the school's rows changed since a time (app/oneroster)
        Index("ix_enrolments_institution_updated", "institution_id", "updated_at"),
        # OneRoster /enrollments (migration 0013): a school's enrolments in id order (the default order),
        # sourcedId order, beginDate order, user.sourcedId order
        Index("ix_enrolments_institution_id", "institution_id", "id"),
        Index(
            "ix_enrolments_institution_sourced_id", "institution_id", text("('enr-' || CAST(id AS VARCHAR))")
        ),
        Index("ix_enrolments_institution_start_id", "institution_id", "start_date", "id"),
        Index(
            "ix_enrolments_institution_user_sourced_id",
            "institution_id",
            text("('student-' || CAST(student_id AS VARCHAR))"),
            "id",
        ),
        # GET /students/{id}/enrolments and "enrolled in class X on date D": a student's history by date
        Index("ix_enrolments_student_start", "student_id", "start_date"),
        # one current enrolment per student (a move closes the old row first)
        Index(
            "uq_enrolments_current_student",
            "student_id",
            unique=True,
            postgresql_where=text("end_date IS NULL"),
            sqlite_where=text("end_date IS NULL"),
        ),
        # GET /classes/{id}/students: the current roster of a class
        Index(
            "ix_enrolments_class_current", "class_id", "student_id", postgresql_where=text("end_date IS NULL")
        ),
        # roll call on a past date: who was in class X between start and end
        Index("ix_enrolments_class_dates", "class_id", "start_date", "end_date"),
        # at most one enrolment per student on any date (inclusive bounds; an open end is unbounded);
        # PostgreSQL only (btree_gist, migration 0004); the embedded default's SQLite has no exclusion
        # constraints, there app/academics/services.py's clash check is the rule
        ExcludeConstraint(
            (text("student_id"), "="),
            (func.daterange(text("start_date"), text("end_date"), literal("[]")), "&&"),
            name="ex_enrolments_student_dates",
            using="gist",
        ).ddl_if(dialect="postgresql"),
    )
