from datetime import datetime

from pydantic import Field

from app.auth.passwords import NewPassword
from app.core.schemas import Body, Email, Out
from app.institutions.schemas import Country, Currency, TimeZone


class OperatorCreate(Body):
    """`flask operators create` (app/operator/cli.py)."""

    email: Email
    name: str = Field(min_length=1, max_length=200)
    password: NewPassword


class OperatorLoginIn(Body):
    email: str = Field(min_length=3, max_length=255)
    password: str = Field(min_length=1, max_length=1024)


class OperatorOut(Out):
    id: int
    email: str
    name: str
    last_login_at: datetime | None


class OperatorTokensOut(Out):
    access_token: str
    token_type: str
    expires_in: int
    operator: OperatorOut


class SchoolCreate(Body):
    name: str = Field(min_length=1, max_length=200)
    timezone: TimeZone = Field(description="IANA time zone, e.g. Africa/Nairobi")
    country: Country = Field(description="ISO 3166-1 alpha-2, e.g. KE")
    currency: Currency = Field(description="ISO 4217, e.g. KES")
    admin_email: Email = Field(description="the first admin: invited by e-mail to choose a password")
    admin_first_name: str = Field("School", min_length=1, max_length=100)
    admin_last_name: str = Field("Administrator", min_length=1, max_length=100)


class AdminInvitationIn(Body):
    email: Email
    first_name: str = Field("School", min_length=1, max_length=100)
    last_name: str = Field("Administrator", min_length=1, max_length=100)


class AdminInvitationOut(Out):
    user_id: int
    email: str
    invitation_expires_at: datetime


class SuspendIn(Body):
    reason: str | None = Field(None, max_length=500)


class SchoolOut(Out):
    id: int
    name: str
    slug: str
    timezone: str
    country: str | None
    currency: str
    created_at: datetime
    suspended_at: datetime | None


class SchoolCreatedOut(SchoolOut):
    admin_user_id: int
    admin_email: str
    invitation_expires_at: datetime


class SuspendedOut(SchoolOut):
    sessions_ended: int
