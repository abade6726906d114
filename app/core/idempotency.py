"""`Idempotency-Key` for writes that clients retry (payments, roll call).

The same key with the same body replays the first answer; with another body it is a 409. The
record is stored in the same transaction as the write, so a crash leaves neither.
"""

import hashlib

import orjson
from flask import current_app, g, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.core.errors import Conflict, ValidationFailed
from app.core.idempotency_model import IdempotencyRecord
from app.core.models import utcnow
from app.core.schemas import HAS_NUL, NUL, dumps, json_default
from app.extensions import db

HEADER = "Idempotency-Key"


def _hash(payload) -> str:
    return hashlib.sha256(
        orjson.dumps(payload, default=json_default, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


def _find(endpoint, key):
    return db.session.execute(
        select(IdempotencyRecord).where(
            IdempotencyRecord.user_id == g.principal.user_id,
            IdempotencyRecord.endpoint == endpoint,
            IdempotencyRecord.key == key,
        )
    ).scalar_one_or_none()


def _replay(record, digest):
    if record.request_hash != digest:
        raise Conflict(f"This {HEADER} was already used with a different request body.")
    resp = current_app.json.response(record.response_body)
    resp.status_code = record.response_status
    resp.headers["Idempotent-Replayed"] = "true"
    return resp


def run_idempotent(endpoint: str, payload, write):
    """`write()` does the work WITHOUT committing and returns (body, status); this commits.
    Returns a Flask response."""
    key = request.headers.get(HEADER)
    if key is None:
        body, status = write()
        db.session.commit()
        resp = current_app.json.response(body)
        resp.status_code = status
        return resp
    if not 1 <= len(key) <= 200:
        raise ValidationFailed({HEADER: "must be 1 to 200 characters"})
    if NUL in key:  # stored as text (see app/core/schemas.py)
        raise ValidationFailed({HEADER: HAS_NUL})
    digest = _hash(payload)
    existing = _find(endpoint, key)
    if existing is not None:
        return _replay(existing, digest)
    body, status = write()
    body = orjson.loads(dumps(body))  # stored exactly as sent (a replay is the same text)
    db.session.add(
        IdempotencyRecord(
            user_id=g.principal.user_id,
            endpoint=endpoint,
            key=key,
            request_hash=digest,
            response_status=status,
            response_body=body,
            created_at=utcnow(),
        )
    )
    try:
        db.session.commit()
    except IntegrityError:
        # A concurrent request with the same key won the race: answer what it answered.
        db.session.rollback()
        existing = _find(endpoint, key)
        if existing is None:
            raise
        return _replay(existing, digest)
    resp = current_app.json.response(body)
    resp.status_code = status
    return resp
