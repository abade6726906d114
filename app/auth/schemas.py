from pydantic import Field

from app.core.schemas import Body, Out, rule


class LoginIn(Body):
    email: str = Field(min_length=3, max_length=255)
    password: str = Field(min_length=1, max_length=1024)


class RefreshIn(Body):
    refresh_token: str = Field(min_length=10, max_length=200)


class PasswordChangeIn(Body):
    current_password: str = Field(
        min_length=1, max_length=1024, json_schema_extra=rule("the caller's password")
    )
    new_password: str = Field(min_length=10, max_length=1024)


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
