"""SMS delivery-report shapes (app/notifications/routes.py)."""

from pydantic import BaseModel, ConfigDict, Field

from app.core.schemas import Out


class DeliveryReportIn(BaseModel):
    """Africa's Talking's delivery report (more fields may come; they are ignored)."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=100, description="the messageId the send answered")
    status: str = Field(min_length=1, max_length=30, description="Success, Failed, Rejected, Buffered, ...")
    phoneNumber: str | None = None
    failureReason: str | None = None


class DeliveryReportOut(Out):
    recorded: bool = Field(description="false: no message of ours has this id")
