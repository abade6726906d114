from datetime import datetime
from typing import Literal

from pydantic import Field

from app.core.schemas import Body, Out
from app.oneroster.clients import SCOPES

Scope = Literal[SCOPES]  # type: ignore[valid-type]


class ClientCreate(Body):
    name: str = Field(
        min_length=1, max_length=200, description="Who this client is, e.g. the platform's name"
    )
    scopes: list[Scope] = Field(
        min_length=1, max_length=len(SCOPES), description="OneRoster 1.2 scopes granted"
    )


class ClientOut(Out):
    id: int
    client_id: str
    name: str
    scopes: list[str]
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None
    last_token_at: datetime | None


class ClientSecretOut(ClientOut):
    client_secret: str = Field(description="Shown once; stored as a hash only")
