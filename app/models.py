"""Imports every model so metadata (Alembic, create_all) sees the whole schema."""

from app.academics.models import AcademicYear, ClassSubject, Enrolment, SchoolClass, Subject, Term  # noqa: F401
from app.announcements.models import Announcement, AnnouncementRecipient  # noqa: F401
from app.attendance.models import AttendanceCheckin, AttendanceCode, AttendanceRecord, AttendanceSession  # noqa: F401
from app.audit.models import AuditEntry  # noqa: F401
from app.auth.models import AccountToken, AuthSession, RefreshToken  # noqa: F401
from app.core.idempotency_model import IdempotencyRecord  # noqa: F401
from app.finance.models import (  # noqa: F401
    C2bPayment,
    FeeCategory,
    Invoice,
    InvoiceLine,
    MpesaAccount,
    Payment,
    StkRequest,
)
from app.grading.models import Assessment, AssessmentType, Grade, ReportRemark  # noqa: F401
from app.institutions.models import Closure, Institution  # noqa: F401
from app.jobs.models import Job, StoredFile  # noqa: F401
from app.notifications.models import OutboxEmail, OutboxSms  # noqa: F401
from app.oneroster.models import OneRosterClient, OneRosterSourcedId  # noqa: F401
from app.operator.models import Operator, OperatorSession  # noqa: F401
from app.people.models import Guardian, Student, StudentGuardian, Teacher, User  # noqa: F401
from app.privacy.models import Disclosure, Erasure  # noqa: F401
from app.rollover.models import Rollover  # noqa: F401
from app.timetable.models import Lesson, Period, Room  # noqa: F401
from app.uploads.models import Upload  # noqa: F401
