from datetime import datetime
from typing import Literal

from pydantic import Field

from app.auth.passwords import NewPassword
from app.core.schemas import Body, Email, Out, rule
from app.people.schemas import Name, Role, UserOut


class LoginIn(Body):
    email: str = Field(min_length=3, max_length=255)
    password: str = Field(min_length=1, max_length=1024)


class RefreshIn(Body):
    refresh_token: str = Field(min_length=10, max_length=200)


class PasswordChangeIn(Body):
    current_password: str = Field(
        min_length=1, max_length=1024, json_schema_extra=rule("the caller's password")
    )
    new_password: NewPassword


class MeOut(Out):
    id: int
    email: str
    first_name: str
    last_name: str
    role: str
    institution_id: int
    student_id: int | None
    teacher_id: int | None
    guardian_id: int | None


class TokensOut(Out):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int
    user: MeOut


# --- accounts: invitations, forgotten passwords, links (app/auth/accounts.py) ---------------------------


class ForgotPasswordIn(Body):
    email: Email


class AcceptedOut(Out):
    detail: str


class PasswordSetIn(Body):
    token: str = Field(min_length=10, max_length=200, description="the `token` of the e-mailed link")
    new_password: NewPassword


class LinkOut(Out):
    purpose: Literal["invite", "reset"]
    email: str
    school: str
    expires_at: datetime | None = None


class InvitationIn(Body):
    email: Email
    role: Role
    first_name: str = Name
    last_name: str = Name
    # The person the login belongs to (required for teacher, guardian and student logins).
    student_id: int | None = None
    teacher_id: int | None = None
    guardian_id: int | None = None


class InvitationOut(UserOut):
    invitation_expires_at: datetime
