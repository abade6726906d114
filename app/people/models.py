from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.models import SoftDeleteMixin, TenantMixin, TimestampMixin
from app.extensions import db

ROLES = ("admin", "teacher", "guardian", "student", "accountant")


class User(TenantMixin, TimestampMixin, SoftDeleteMixin, db.Model):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # login: find the account by e-mail, case-insensitively, across institutions
        Index("uq_users_email_lower", func.lower(text("email")), unique=True),
        # GET /users?role=&is_active=: the tenant's users by role and status
        Index("ix_users_institution_role_active", "institution_id", "role", "is_active"),
        # GET /users?q=: case-insensitive prefix search on last name within the tenant
        Index(
            "ix_users_institution_last_name_lower",
            "institution_id",
            func.lower(text("last_name")).label("last_name_lower"),
            postgresql_ops={"last_name_lower": "text_pattern_ops"},
        ),
        # GET /users?q=: the same on first name (OR-ed with the last-name index)
        Index(
            "ix_users_institution_first_name_lower",
            "institution_id",
            func.lower(text("first_name")).label("first_name_lower"),
            postgresql_ops={"first_name_lower": "text_pattern_ops"},
        ),
    )


class Student(TenantMixin, TimestampMixin, SoftDeleteMixin, db.Model):
    __tablename__ = "students"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    admission_number: Mapped[str] = mapped_column(String(40))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    gender: Mapped[str | None] = mapped_column(String(20))
    grade_level: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(20), default="active")  # active, graduated, withdrawn
    email: Mapped[str | None] = mapped_column(String(255))

    guardian_links = relationship(
        "StudentGuardian", back_populates="student", lazy="raise", cascade="all, delete-orphan"
    )

    __table_args__ = (
        # OneRoster /users, /demographics (migration 0013): a school's students in the order a page asks
        # for, deleted ones included (tobedeleted): by id (the default), dateLastModified (also the
        # delta filter dateLastModified>...), given/family name, birth date, and the expressions of
        # app/oneroster/rostering.py: the sourcedId, status, enabledUser and sex
        Index("ix_students_institution_id", "institution_id", "id"),
        Index("ix_students_institution_updated_id", "institution_id", "updated_at", "id"),
        Index("ix_students_institution_given_name_id", "institution_id", "first_name", "id"),
        Index("ix_students_institution_family_name_id", "institution_id", "last_name", "id"),
        Index("ix_students_institution_birth_date", "institution_id", "date_of_birth", "id"),
        Index(
            "ix_students_institution_sourced_id",
            "institution_id",
            text("('student-' || CAST(id AS VARCHAR))"),
        ),
        Index(
            "ix_students_institution_oneroster_status",
            "institution_id",
            text("(CASE WHEN deleted_at IS NOT NULL THEN 'tobedeleted' ELSE 'active' END)"),
            "id",
        ),
        Index("ix_students_institution_enabled", "institution_id", text("(status = 'active')"), "id"),
        Index(
            "ix_students_institution_sex",
            "institution_id",
            text("(CASE WHEN gender IN ('male', 'female') THEN gender ELSE 'unspecified' END)"),
            "id",
        ),
        # OneRoster givenName~'...' / familyName~'...' (contains): trigram indexes (pg_trgm, migration 0013)
        Index(
            "ix_students_first_name_trgm",
            func.lower(text("first_name")).label("first_name_trgm"),
            postgresql_using="gin",
            postgresql_ops={"first_name_trgm": "gin_trgm_ops"},
        ),
        Index(
            "ix_students_last_name_trgm",
            func.lower(text("last_name")).label("last_name_trgm"),
            postgresql_using="gin",
            postgresql_ops={"last_name_trgm": "gin_trgm_ops"},
        ),
        # natural key: admission number per institution (also the import upsert key)
        UniqueConstraint("institution_id", "admission_number", name="uq_students_institution_admission"),
        # GET /auth/me and student self-access: the student row of a login
        Index("ix_students_user_id", "user_id", unique=True),
        # GET /students?q=: case-insensitive prefix search on last name, live rows of the tenant
        Index(
            "ix_students_institution_last_name_lower",
            "institution_id",
            func.lower(text("last_name")).label("last_name_lower"),
            postgresql_ops={"last_name_lower": "text_pattern_ops"},
            postgresql_where=text("deleted_at IS NULL"),
        ),
        # GET /students?q=: the same on first name (OR-ed with the last-name index)
        Index(
            "ix_students_institution_first_name_lower",
            "institution_id",
            func.lower(text("first_name")).label("first_name_lower"),
            postgresql_ops={"first_name_lower": "text_pattern_ops"},
            postgresql_where=text("deleted_at IS NULL"),
        ),
        # GET /students?sort=last_name: keyset pages of live students in name order
        Index(
            "ix_students_institution_last_name_id",
            "institution_id",
            "last_name",
            "id",
            postgresql_where=text("deleted_at IS NULL"),
        ),
        # GET /students?status=&grade_level=: live students of the tenant by status and grade, in id order
        Index(
            "ix_students_institution_status_grade",
            "institution_id",
            "status",
            "grade_level",
            "id",
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )


class Guardian(TenantMixin, TimestampMixin, SoftDeleteMixin, db.Model):
    __tablename__ = "guardians"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(40))
    # How the school reaches this guardian: email, sms or both (absence alerts, fee reminders, receipts).
    notify_by: Mapped[str] = mapped_column(String(5), default="email", server_default="email")

    __table_args__ = (
        # OneRoster delta (dateLastModified>...): the school's rows changed since a time (app/oneroster)
        Index("ix_guardians_institution_updated", "institution_id", "updated_at"),
        CheckConstraint("notify_by IN ('email','sms','both')", name="notify_by"),
        # GET /auth/me and guardian access: the guardian row of a login
        Index("ix_guardians_user_id", "user_id", unique=True),
        # GET /guardians?q=: case-insensitive prefix search on last name
        Index(
            "ix_guardians_institution_last_name_lower",
            "institution_id",
            func.lower(text("last_name")).label("last_name_lower"),
            postgresql_ops={"last_name_lower": "text_pattern_ops"},
        ),
        # GET /guardians?q=: the same on first name (OR-ed with the last-name index)
        Index(
            "ix_guardians_institution_first_name_lower",
            "institution_id",
            func.lower(text("first_name")).label("first_name_lower"),
            postgresql_ops={"first_name_lower": "text_pattern_ops"},
        ),
    )


class StudentGuardian(TenantMixin, db.Model):
    __tablename__ = "student_guardians"
    student_id: Mapped[int] = mapped_column(ForeignKey("students.id", ondelete="CASCADE"), primary_key=True)
    guardian_id: Mapped[int] = mapped_column(ForeignKey("guardians.id", ondelete="CASCADE"), primary_key=True)
    relationship_type: Mapped[str] = mapped_column("relationship", String(40), default="guardian")
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)

    student = relationship("Student", back_populates="guardian_links", lazy="raise")
    guardian = relationship("Guardian", lazy="joined")

    __table_args__ = (
        # guardian access checks and absence alerts: the children of a guardian
        Index("ix_student_guardians_guardian_id", "guardian_id"),
    )


class Teacher(TenantMixin, TimestampMixin, SoftDeleteMixin, db.Model):
    __tablename__ = "teachers"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    employee_number: Mapped[str] = mapped_column(String(40))
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(40))
    specialization: Mapped[str | None] = mapped_column(String(100))
    hired_on: Mapped[date | None] = mapped_column(Date)

    __table_args__ = (
        # OneRoster delta (dateLastModified>...): the school's rows changed since a time (app/oneroster)
        Index("ix_teachers_institution_updated", "institution_id", "updated_at"),
        # natural key: employee number per institution
        UniqueConstraint("institution_id", "employee_number", name="uq_teachers_institution_employee_number"),
        # GET /auth/me and every teacher permission check: the teacher row of a login
        Index("ix_teachers_user_id", "user_id", unique=True),
        # GET /teachers?q=: case-insensitive prefix search on last name
        Index(
            "ix_teachers_institution_last_name_lower",
            "institution_id",
            func.lower(text("last_name")).label("last_name_lower"),
            postgresql_ops={"last_name_lower": "text_pattern_ops"},
        ),
        # GET /teachers?q=: the same on first name (OR-ed with the last-name index)
        Index(
            "ix_teachers_institution_first_name_lower",
            "institution_id",
            func.lower(text("first_name")).label("first_name_lower"),
            postgresql_ops={"first_name_lower": "text_pattern_ops"},
        ),
    )
