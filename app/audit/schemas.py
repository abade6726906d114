from datetime import datetime

from app.core.schemas import Out


class AuditOut(Out):
    id: int
    actor_id: int | None
    action: str
    entity_type: str
    entity_id: str | None
    changes: dict | None
    request_id: str | None
    ip: str | None
    created_at: datetime
