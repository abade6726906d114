"""Route limits (Flask-Limiter): the sensitive budget, the export budget, token refreshes; and the 429.

Views are only *marked* here (`@sensitive`, `@exports`, `@refreshes`, `@exempt`), and `configure_limiter`
applies the marks once
the blueprints are registered. Flask-Limiter skips every unmarked view. The general API tier, which
every request pays, is counted by admission (app/core/admission.py); failed logins by
app/core/loginlimit.py (counted before the password is checked, which Flask-Limiter's
count-after-the-answer cannot do).
"""

from functools import partial

from flask import current_app, g, request
from flask_limiter import Limiter

from app.core.errors import ApiError, rate_limit_headers
from app.core.redisconn import LIMITER_DB
from config import redis_db_url


def too_many_requests(limit, reset_at):
    return ApiError(
        429,
        f"Rate limit exceeded ({limit}). Try again later.",
        headers=rate_limit_headers(limit.amount, reset_at),
    )


def caller_key():
    principal = g.get("principal")
    return f"user:{principal.user_id}" if principal else f"addr:{request.remote_addr}"


def address_key():
    return f"addr:{request.remote_addr}"


def _setting(name):
    return lambda: current_app.config[name]


def _mark(view, entry):
    view.__dict__.setdefault("rate_limits", []).append(entry)
    return view


def sensitive(view):
    """Password and role changes, user creation: one shared, tighter budget per user."""
    return _mark(view, ("shared", _setting("RATELIMIT_SENSITIVE"), None, "sensitive"))


def exports(view):
    """Exports of personal data: a budget of their own per user, which a working day fits."""
    return _mark(view, ("shared", _setting("RATELIMIT_EXPORTS"), None, "exports"))


def refreshes(view):
    """Token refreshes, outside the API tier: per address, loose enough for a school behind one NAT
    (a refresh needs a refresh token nobody can guess; the limit only stops floods)."""
    return exempt(_mark(view, ("limit", _setting("RATELIMIT_REFRESH"), address_key, "refresh")))


def exempt(view):
    """Not counted against the API tier (admission); any route limit it is marked with still applies."""
    view.rate_limit_exempt = True
    return view


def configure_limiter(app):
    cfg = app.config
    url = redis_db_url(cfg.get("REDIS_URL"), LIMITER_DB)
    options = {}
    if url:
        t = cfg["REDIS_SOCKET_TIMEOUT"]
        options = {"socket_timeout": t, "socket_connect_timeout": t}
    limiter = Limiter(
        key_func=caller_key,
        default_limits=[],  # the API tier is admission's
        storage_uri=url or "memory://",
        storage_options=options,
        # Redis down: the route limits count in process instead of answering 500.
        in_memory_fallback_enabled=bool(url),
        headers_enabled=cfg.get("RATELIMIT_HEADERS_ENABLED", False),
        key_prefix="sh-rl",
        strategy=cfg.get("RATELIMIT_STRATEGY", "fixed-window"),
        enabled=cfg["RATELIMIT_ENABLED"],
    )
    limiter.init_app(app)
    for endpoint, view in list(app.view_functions.items()):
        if getattr(view, "rate_limit_exempt", False) and not getattr(view, "rate_limits", ()):
            limiter.exempt(view)
        wrapped = view
        for kind, provider, key_func, scope in getattr(view, "rate_limits", ()):
            if kind == "shared":
                wrapped = limiter.shared_limit(provider, scope=scope)(wrapped)
            else:
                wrapped = limiter.limit(provider, key_func=key_func, scope=scope)(wrapped)
        # The limiter checks decorated limits inside its wrapper, so the wrapper must be the view.
        app.view_functions[endpoint] = wrapped

    # Flask-Limiter 4 checks a decorated limit inside the decorator's wrapper; its before_request hook
    # only serves default and blueprint limits, which are not used here (the API tier is admission's),
    # so it is dropped (it still ran its resolution on every request: docs/BENCHMARKS.md).
    hooks = app.before_request_funcs.get(None, [])
    if limiter._check_request_limit in hooks:  # absent when the limiter is disabled
        hooks.remove(limiter._check_request_limit)
    _only_for_limited_views(app, limiter)
    app.extensions["rate_limiter"] = limiter
    return limiter


def _only_for_limited_views(app, limiter):
    """Flask-Limiter's after-request (its headers) and teardown (a context reset) ran on every answer;
    they concern the views with a route limit only, so its after-request runs for those endpoints and
    the teardown goes (its context lives on the request context, discarded with the request)."""
    limited = {endpoint for endpoint, view in app.view_functions.items() if getattr(view, "rate_limits", ())}
    after = app.after_request_funcs.get(None, [])
    for i, hook in enumerate(after):
        if isinstance(hook, partial) and hook.args == (limiter,):
            after[i] = _for_endpoints(hook, limited)
            break
    teardown = app.teardown_request_funcs.get(None, [])
    for hook in list(teardown):
        if getattr(hook, "__self__", None) is limiter:
            teardown.remove(hook)


def _for_endpoints(hook, endpoints):
    def run(response):
        return hook(response) if request.endpoint in endpoints else response

    return run
