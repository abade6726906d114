"""Imports every model so metadata (Alembic, create_all) sees the whole schema."""

from app.academics.models import AcademicYear, ClassSubject, Enrolment, SchoolClass, Subject, Term  # noqa: F401
from app.attendance.models import AttendanceCheckin, AttendanceRecord, AttendanceSession  # noqa: F401
from app.audit.models import AuditEntry  # noqa: F401
from app.auth.models import AccountToken, AuthSession, RefreshToken  # noqa: F401
from app.core.idempotency_model import IdempotencyRecord  # noqa: F401
from app.finance.models import FeeCategory, Invoice, InvoiceLine, Payment  # noqa: F401
from app.grading.models import Assessment, AssessmentType, Grade  # noqa: F401
from app.institutions.models import Institution  # noqa: F401
from app.jobs.models import Job, StoredFile  # noqa: F401
from app.notifications.models import OutboxEmail  # noqa: F401
from app.oneroster.models import OneRosterClient  # noqa: F401
from app.operator.models import Operator, OperatorSession  # noqa: F401
from app.people.models import Guardian, Student, StudentGuardian, Teacher, User  # noqa: F401
from app.timetable.models import Lesson, Period, Room  # noqa: F401
