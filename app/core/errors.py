"""One error shape everywhere: RFC 9457 `application/problem+json`, with `request_id` and per-field `errors`."""

import logging
import time

from flask import current_app, g, request
from sqlalchemy.exc import DBAPIError, IntegrityError
from werkzeug.exceptions import HTTPException

from app.core.conflicts import clash_message
from app.core.dbpool import may_rerun, rerun_read
from app.extensions import db

log = logging.getLogger("schoolhouse.errors")
PROBLEM = "application/problem+json"
TYPE_BASE = "https://schoolhouse.dev/problems/"


class ApiError(Exception):
    """Raised by services and views; rendered as a problem response."""

    def __init__(self, status, detail, *, title=None, errors=None, type_=None, headers=None, extra=None):
        super().__init__(detail)
        self.status, self.detail, self.title = status, detail, title
        self.errors, self.type, self.headers = errors, type_, headers or {}
        self.extra = extra  # RFC 9457 extension members (e.g. the lessons a double booking names)


class NotFound(ApiError):
    def __init__(self, what="resource"):
        super().__init__(404, f"The {what} was not found.")


class ValidationFailed(ApiError):
    def __init__(self, errors, detail=None):
        names = ", ".join(sorted(errors))
        super().__init__(
            422,
            detail or f"Invalid input: {names}.",
            title="Validation failed",
            errors=errors,
            type_="validation",
        )


class Conflict(ApiError):
    def __init__(self, detail, errors=None, extra=None):
        super().__init__(409, detail, errors=errors, type_="conflict", extra=extra)


class Forbidden(ApiError):
    def __init__(self, detail="You do not have permission to do this."):
        super().__init__(403, detail, type_="forbidden")


TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    414: "URI too long",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests",
    431: "Request header fields too large",
    500: "Internal server error",
    503: "Service unavailable",
}


def problem(status, detail, *, title=None, errors=None, type_=None, headers=None, extra=None):
    body = {
        **(extra or {}),
        "type": TYPE_BASE + (type_ or str(status)),
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "request_id": g.get("request_id"),
    }
    if errors:
        body["errors"] = errors
    resp = current_app.json.response(body)
    resp.status_code = status
    resp.mimetype = PROBLEM
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _api_error(e: ApiError):
    if e.status == 429:
        _audit_rate_limit()
    return problem(
        e.status, e.detail, title=e.title, errors=e.errors, type_=e.type, headers=e.headers, extra=e.extra
    )


def _http_error(e: HTTPException):
    status = e.code or 500
    detail = {
        404: "No such resource.",
        405: f"{request.method} is not allowed here.",
        413: "The request body is too large.",
        415: "Send the body as application/json.",
        429: f"Rate limit exceeded ({e.description}). Try again later.",
    }.get(status, e.description)
    headers = {}
    if status == 405 and hasattr(e, "valid_methods") and e.valid_methods:
        headers["Allow"] = ", ".join(sorted(e.valid_methods))
    if status == 429:  # Flask-Limiter's route limits
        _audit_rate_limit()
        limit = getattr(getattr(e, "limit", None), "limit", None)
        headers.update(
            {"Retry-After": "60"}
            if limit is None
            else rate_limit_headers(limit.amount, time.time() + limit.get_expiry())
        )  # window's end, at most
    return problem(status, detail, headers=headers)


def rate_limit_headers(amount, reset_at):
    """Retry-After and X-RateLimit-* on every 429, whichever limiter refused. (On successful requests
    they are off by default; RATELIMIT_HEADERS_ENABLED turns them on.)"""
    return {
        "Retry-After": str(max(1, int(reset_at - time.time()))),
        "X-RateLimit-Limit": str(amount),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(reset_at)),
    }


def _audit_rate_limit():
    # Security events are audited (operations issue); the hook is soft so errors never cascade.
    hook = current_app.extensions.get("security_event")
    if hook:
        hook("rate_limited", detail={"path": request.path})


def _unhandled(e: Exception):
    # The exception (its text may hold SQL, parameters, personal data) goes to the log only, in every
    # mode; the answer carries the request id that finds it there.
    log.exception("unhandled error on %s %s (request %s)", request.method, request.path, g.get("request_id"))
    return problem(500, "An unexpected error occurred. Quote the request id when reporting it.")


def _database_error(e: DBAPIError):
    db.session.rollback()  # nothing half-written; the session is usable for what follows (audit, logs)
    if e.connection_invalidated:
        return _connection_lost(e)
    message = clash_message(e) if isinstance(e, IntegrityError) else None
    if message is not None:  # a unique or foreign-key clash no service turned into its own 409
        return problem(409, message, type_="conflict")
    return _unhandled(e)


def _connection_lost(e: DBAPIError):
    # The pooled connection died under the request (app/core/dbpool.py): a read runs once more on a
    # fresh one; a write, or a read that lost its connection twice, is a 503 the client may retry.
    log.warning("database connection lost on %s %s: %s", request.method, request.path, type(e).__name__)
    if may_rerun():
        try:
            return rerun_read()
        except Exception as again:  # noqa: BLE001 - answered as if the first run had raised it
            return current_app.handle_user_exception(again)
    return problem(
        503,
        "The database connection was lost; the request may not have been applied. Try again.",
        headers={"Retry-After": "1"},
    )


def register_errors(app):
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DBAPIError, _database_error)
    app.register_error_handler(Exception, _unhandled)
