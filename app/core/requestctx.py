"""Request id and timing on every response; requests too large to serve refused first."""

import re
import time
import uuid

from flask import g, request
from flask.sessions import NullSession, SessionInterface

from app.core.caching import etag_for
from app.core.errors import ApiError

_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{8,128}$")


def begin_request():
    # Per-request state lives on g; reset it, since an app context can outlive one request (tests, CLI).
    rid = request.environ.get("HTTP_X_REQUEST_ID", "")
    # (The caller and the admission state are admission's to reset: app/core/admission.py.)
    vars(g._get_current_object()).update(
        started=time.perf_counter(),
        request_id=rid if _SANE_ID.match(rid) else uuid.uuid4().hex,
    )
    check_request_size()  # before admission: an oversized token is not decoded


# The app's own bounds on what precedes the body (the body's is MAX_CONTENT_LENGTH). gunicorn's limits
# (gunicorn.conf.py) sit above these, so under gunicorn a request between the two gets this answer,
# with its request id, and one beyond gunicorn's gets gunicorn's answer in the same problem+json shape.
MAX_TARGET_BYTES = 4096  # path and query string
MAX_HEADER_BYTES = 8190  # one header line, "Name: value" (gunicorn's default limit)


def check_request_size():
    """414 for a URL, 431 for a header line, above the bounds (problem+json naming the header)."""
    env = request.environ
    target = env.get("RAW_URI") or env.get("REQUEST_URI")
    size = len(target) if target else len(env.get("PATH_INFO", "")) + 1 + len(env.get("QUERY_STRING", ""))
    if size > MAX_TARGET_BYTES:
        raise ApiError(414, f"The URL is longer than {MAX_TARGET_BYTES} bytes.")
    # The environ itself, not request.headers (which builds a header object per item on every request).
    for key, value in env.items():
        if key[:5] == "HTTP_" and len(key) - 3 + len(value) > MAX_HEADER_BYTES:  # "Name: value"
            name = key[5:].replace("_", "-").title()
            raise ApiError(
                431,
                f"The {name} header is longer than {MAX_HEADER_BYTES} bytes.",
                errors={name: f"must be at most {MAX_HEADER_BYTES} bytes with its name"},
            )


def finish_request(response):
    # Runs on every response: the request-local proxies are resolved once, and headers this hook owns
    # are appended (Headers.set would first scan the list for an old value).
    ctx = g._get_current_object()
    req = request._get_current_object()  # type: ignore[attr-defined]
    headers = response.headers
    headers.add("X-Request-ID", getattr(ctx, "request_id", None) or uuid.uuid4().hex)
    status = response.status_code
    if getattr(ctx, "principal", None) is not None:
        # Personal data: browsers may keep it but must revalidate; shared proxies never store it.
        if "Cache-Control" not in headers:
            headers.add("Cache-Control", "private, no-cache")
        if (
            req.method == "GET"
            and status == 200
            and not response.direct_passthrough
            and response.mimetype == "application/json"
        ):
            if "ETag" not in headers:  # a cached answer brings the one computed when it was stored
                headers.add("ETag", f'"{etag_for(response.get_data())}"')
            if "HTTP_IF_NONE_MATCH" in req.environ:  # werkzeug's conditional logic only when asked
                response.make_conditional(req)
    started = getattr(ctx, "started", None)
    if started is not None:
        headers.add("X-Response-Time", f"{(time.perf_counter() - started) * 1000:.2f}ms")
    return response


def register_request_context(app):
    # Registered before admission, so every answer (even a 401/429) has an id.
    app.before_request(begin_request)  # (one hook, not two: each hook costs every request a dispatch)
    app.after_request(finish_request)


class NoCookieSessions(SessionInterface):
    """No cookie session (the API is stateless, bearer tokens only): nothing to open, sign or save."""

    def open_session(self, app, request):
        return NullSession()

    def save_session(self, app, session, response):
        return None
