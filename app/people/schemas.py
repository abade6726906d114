from datetime import date, datetime
from typing import Literal

from pydantic import Field

from app.auth.passwords import NewPassword
from app.core.schemas import Body, Email, Out, rule

Role = Literal["admin", "teacher", "guardian", "student", "accountant"]
StudentStatus = Literal["active", "graduated", "withdrawn"]
Name = Field(min_length=1, max_length=100)


class UserCreate(Body):
    email: Email
    password: NewPassword
    role: Role
    first_name: str = Name
    last_name: str = Name
    is_active: bool = True
    # Link the login to the person it belongs to (required for teacher, guardian and student logins).
    student_id: int | None = None
    teacher_id: int | None = None
    guardian_id: int | None = None


class UserUpdate(Body):
    email: Email = None
    role: Role = Field(
        None, json_schema_extra=rule("not one's own; teacher, guardian or student only at creation")
    )
    first_name: str = Field(None, min_length=1, max_length=100)
    last_name: str = Field(None, min_length=1, max_length=100)
    is_active: bool = None


class UserOut(Out):
    id: int
    email: str
    role: str
    first_name: str
    last_name: str
    is_active: bool
    last_login_at: datetime | None
    created_at: datetime


class StudentCreate(Body):
    admission_number: str = Field(min_length=1, max_length=40)
    first_name: str = Name
    last_name: str = Name
    date_of_birth: date | None = None
    gender: str | None = Field(None, max_length=20)
    grade_level: int | None = Field(None, ge=0, le=20)
    status: StudentStatus = "active"
    email: Email | None = None


class StudentUpdate(Body):
    admission_number: str = Field(None, min_length=1, max_length=40)
    first_name: str = Field(None, min_length=1, max_length=100)
    last_name: str = Field(None, min_length=1, max_length=100)
    date_of_birth: date | None = None
    gender: str | None = Field(None, max_length=20)
    grade_level: int | None = Field(None, ge=0, le=20)
    status: StudentStatus = None
    email: Email | None = None


class StudentOut(Out):
    id: int
    admission_number: str
    first_name: str
    last_name: str
    date_of_birth: date | None
    gender: str | None
    grade_level: int | None
    status: str
    email: str | None
    user_id: int | None
    created_at: datetime
    updated_at: datetime


class GuardianLinkOut(Out):
    id: int
    first_name: str
    last_name: str
    email: str | None
    phone: str | None
    relationship: str
    is_primary: bool


class StudentDetailOut(StudentOut):
    guardians: list[GuardianLinkOut]


class GuardianLinkIn(Body):
    guardian_id: int
    relationship: str = Field("guardian", min_length=1, max_length=40)
    is_primary: bool = False


Channel = Literal["email", "sms", "both"]
CHANNEL_HELP = "how the school reaches this guardian: absence alerts, fee reminders, payment receipts"


class GuardianCreate(Body):
    first_name: str = Name
    last_name: str = Name
    email: Email | None = None
    phone: str | None = Field(None, max_length=40)
    notify_by: Channel = Field("email", description=CHANNEL_HELP)


class GuardianUpdate(Body):
    first_name: str = Field(None, min_length=1, max_length=100)
    last_name: str = Field(None, min_length=1, max_length=100)
    email: Email | None = None
    phone: str | None = Field(None, max_length=40)
    notify_by: Channel = Field(None, description=CHANNEL_HELP)


class ChannelIn(Body):
    notify_by: Channel = Field(description=CHANNEL_HELP)


class GuardianOut(Out):
    id: int
    first_name: str
    last_name: str
    email: str | None
    phone: str | None
    notify_by: Channel
    user_id: int | None


class TeacherCreate(Body):
    employee_number: str = Field(min_length=1, max_length=40)
    first_name: str = Name
    last_name: str = Name
    email: Email | None = None
    phone: str | None = Field(None, max_length=40)
    specialization: str | None = Field(None, max_length=100)
    hired_on: date | None = None


class TeacherUpdate(Body):
    employee_number: str = Field(None, min_length=1, max_length=40)
    first_name: str = Field(None, min_length=1, max_length=100)
    last_name: str = Field(None, min_length=1, max_length=100)
    email: Email | None = None
    phone: str | None = Field(None, max_length=40)
    specialization: str | None = Field(None, max_length=100)
    hired_on: date | None = None


_STAFF_ONLY = "Staff only: null for guardians and students."


class TeacherOut(Out):
    id: int
    employee_number: str | None = Field(description=_STAFF_ONLY)
    first_name: str
    last_name: str
    email: str | None = Field(description=_STAFF_ONLY)
    phone: str | None = Field(description=_STAFF_ONLY)
    specialization: str | None
    hired_on: date | None = Field(description=_STAFF_ONLY)
    user_id: int | None = Field(description=_STAFF_ONLY)


STAFF_ONLY_TEACHER_FIELDS = ("employee_number", "email", "phone", "hired_on", "user_id")
