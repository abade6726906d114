"""Announcement shapes (app/announcements/routes.py)."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from app.core.schemas import Body, Out

Audience = Literal["school", "grade", "class", "guardians", "staff"]
AUDIENCE_HELP = (
    "school: every staff login, active student and their guardians; grade: the students enrolled today in "
    "a class of grade_level, and their guardians; class: the students of class_id and their guardians; "
    "guardians: the guardians of class_id's students only; staff: admins, teachers and accountants. "
    "Teachers post to class or guardians of a class they teach or lead."
)


class AnnouncementIn(Body):
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=5000)
    audience: Audience = Field(description=AUDIENCE_HELP)
    grade_level: int | None = Field(None, ge=0, le=20, description="required for audience grade, else absent")
    class_id: int | None = Field(None, description="required for audience class or guardians, else absent")


class AnnouncementOut(Out):
    id: int
    author_id: int | None
    title: str
    body: str
    audience: Audience
    grade_level: int | None
    class_id: int | None
    status: Literal["queued", "delivered"] = Field(description="queued until the fan-out task has run")
    recipient_count: int
    email_count: int = Field(description="e-mails queued in the outbox")
    sms_count: int = Field(description="text messages queued in the SMS outbox")
    read_count: int = Field(description="recipients who marked it read")
    created_at: datetime
    delivered_at: datetime | None


class MyAnnouncementOut(Out):
    id: int
    title: str
    body: str
    audience: Audience
    created_at: datetime
    read: bool
    read_at: datetime | None
