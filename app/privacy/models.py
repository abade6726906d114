"""Privacy records: who on the staff read a student's sensitive records (a record of disclosures), and
the erasures done (what was anonymised, what was kept and why)."""

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import BigId, TenantMixin
from app.extensions import db


class Disclosure(TenantMixin, db.Model):
    """One staff read of a student's sensitive records (the student with their guardians' contacts, or a
    guardian's contacts). Every such read, also when the answer came from the cache (docs/PRIVACY.md)."""

    __tablename__ = "disclosures"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # No foreign keys to people: the record of who saw what outlives an erasure or a deletion.
    actor_id: Mapped[int | None] = mapped_column()
    actor_role: Mapped[str] = mapped_column(String(20))
    student_id: Mapped[int | None] = mapped_column()
    guardian_id: Mapped[int | None] = mapped_column()
    record: Mapped[str] = mapped_column(String(40))  # student_guardians, guardian_contacts
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # GET /students/{id}/disclosures: reads of the student's record, newest first
        Index("ix_disclosures_institution_student", "institution_id", "student_id", "id"),
        # GET /students/{id}/disclosures: reads of the student's guardians' contacts
        Index("ix_disclosures_institution_guardian", "institution_id", "guardian_id", "id"),
    )


class Erasure(TenantMixin, db.Model):
    """One erasure (anonymisation) of a student or a guardian, with the statement given to the admin."""

    __tablename__ = "erasures"
    id: Mapped[int] = mapped_column(primary_key=True)
    subject_type: Mapped[str] = mapped_column(String(10))  # student, guardian
    subject_id: Mapped[int] = mapped_column()
    performed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    statement: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # a second erasure of the same person finds the first (idempotent)
        UniqueConstraint("institution_id", "subject_type", "subject_id", name="uq_erasures_subject"),
    )
