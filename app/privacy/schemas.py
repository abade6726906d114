"""Privacy requests and answers: the erasure's confirmation and statement, the record of disclosures."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from app.core.schemas import Body, Out


class ErasureIn(Body):
    confirm: Literal[True] = Field(
        description="must be true: an erasure cannot be undone (the person's data is anonymised everywhere)"
    )


class KeptOut(Out):
    what: str = Field(description="a table whose rows about the person stay")
    rows: int | None
    why: str


class AccessEndedOut(Out):
    login: bool
    sessions_ended: int


class ErasureOut(Out):
    subject: str = Field(description="student or guardian")
    id: int
    erased_at: str
    anonymised: dict[str, int] = Field(description="rows changed, per table")
    access_ended: AccessEndedOut
    kept: list[KeptOut] = Field(description="what was kept, and why")
    already_erased: bool = Field(description="true when this person had been erased before: nothing changed")


class DisclosureOut(Out):
    id: int
    actor_id: int | None = Field(description="the staff member's login")
    actor_role: str
    student_id: int | None
    guardian_id: int | None
    record: str = Field(
        description="student_guardians (the student's record with guardians' contacts) or guardian_contacts"
    )
    request_id: str | None
    created_at: datetime
