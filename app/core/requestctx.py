"""Request id and timing on every response."""
import re
import time
import uuid

from flask import current_app, g, request
from flask.sessions import NullSession, SessionInterface

from app.core.caching import etag_for

_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{8,128}$")


def begin_request():
    # Per-request state lives on g; reset it, since an app context can outlive one request (tests, CLI).
    g.principal = None
    g.revocation_pending = g.gated = False
    g.rate_count = g.rate_window = None
    g.cache_status = g.cache_namespace = None
    g.started = time.perf_counter()
    rid = request.headers.get("X-Request-ID", "")
    g.request_id = rid if _SANE_ID.match(rid) else uuid.uuid4().hex


def finish_request(response):
    response.headers["X-Request-ID"] = g.get("request_id") or uuid.uuid4().hex
    if g.get("revocation_pending") and response.status_code < 400:
        # Every authenticated path must have checked the session; never let a 2xx out unchecked.
        raise RuntimeError(f"session not checked on {request.endpoint}")
    if g.get("cache_status"):
        response.headers["X-Cache"] = g.cache_status
    if g.get("principal") is not None:
        # Personal data: browsers may keep it but must revalidate; shared proxies never store it.
        response.headers.setdefault("Cache-Control", "private, no-cache")
        if request.method == "GET" and response.status_code == 200 and not response.direct_passthrough \
                and response.mimetype == "application/json":
            response.set_etag(etag_for(response.get_data()), weak=False)
            if "HTTP_IF_NONE_MATCH" in request.environ:  # werkzeug's full conditional logic costs ~30 µs
                response.make_conditional(request)
    current_app.extensions["api_tier"].headers(response)
    started = g.get("started")
    if started is not None:
        response.headers["X-Response-Time"] = f"{(time.perf_counter() - started) * 1000:.2f}ms"
    return response


def register_request_context(app):
    # Registered before the auth hook and the limiter, so every answer (even a 401/429) has an id.
    app.before_request(begin_request)
    app.after_request(finish_request)


class NoCookieSessions(SessionInterface):
    """No cookie session (the API is stateless, bearer tokens only): nothing to open, sign or save."""

    def open_session(self, app, request):
        return NullSession()

    def save_session(self, app, session, response):
        return None
