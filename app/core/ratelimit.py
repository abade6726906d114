"""Rate limits (Flask-Limiter), one Limiter per app so each app gets its own storage and tiers.

Views are only *marked* here (`@login_limited`, `@sensitive`, `@exempt`); `configure_limiter` creates
the app's Limiter and applies the marks once the blueprints are registered. Tiers are read from config
on every check, so `RATELIMIT_*` settings take effect without code changes.
"""
from flask import current_app, g, request
from flask_limiter import Limiter

from app.core.redisconn import LIMITER_DB
from config import redis_db_url


def user_or_address_key():
    principal = g.get("principal")
    return f"user:{principal.user_id}" if principal else f"addr:{request.remote_addr}"


def login_account_key():
    data = request.get_json(silent=True) if request.is_json else None
    email = data.get("email") if isinstance(data, dict) else None
    if isinstance(email, str) and email.strip():
        return f"login:{email.strip().lower()}"
    return f"login-addr:{request.remote_addr}"


def login_address_key():
    return f"login-addr:{request.remote_addr}"


def api_limit():
    return current_app.config["RATELIMIT_API"]


def login_limit():
    return current_app.config["RATELIMIT_LOGIN"]


def login_address_limit():
    return current_app.config["RATELIMIT_LOGIN_ADDRESS"]


def sensitive_limit():
    return current_app.config["RATELIMIT_SENSITIVE"]


def _failed(response):
    return response.status_code == 401


def _mark(view, entry):
    view.__dict__.setdefault("rate_limits", []).append(entry)
    return view


def login_limited(view):
    """Failed logins only: per account (the 6th wrong password answers 429) and, looser, per address
    (a whole school often sits behind one address)."""
    _mark(view, ("limit", login_limit, login_account_key, "login-account"))
    return _mark(view, ("limit", login_address_limit, login_address_key, "login-address"))


def sensitive(view):
    """Password and role changes, user creation, exports: one shared, tighter budget per user."""
    return _mark(view, ("shared", sensitive_limit, None, "sensitive"))


def exempt(view):
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
        key_func=user_or_address_key,
        default_limits=[api_limit],
        storage_uri=url or "memory://",
        storage_options=options,
        # Redis down: a per-process in-memory limit takes over instead of 500s (PITFALLS §5).
        in_memory_fallback_enabled=bool(url),
        in_memory_fallback=[api_limit] if url else [],
        headers_enabled=cfg.get("RATELIMIT_HEADERS_ENABLED", False),
        key_prefix="sh-rl",
        strategy=cfg.get("RATELIMIT_STRATEGY", "fixed-window"),
        enabled=cfg["RATELIMIT_ENABLED"],
    )
    limiter.init_app(app)
    for endpoint, view in list(app.view_functions.items()):
        if getattr(view, "rate_limit_exempt", False):
            limiter.exempt(view)
        wrapped = view
        for kind, provider, key_func, scope in getattr(view, "rate_limits", ()):
            if kind == "shared":
                wrapped = limiter.shared_limit(provider, scope=scope)(wrapped)
            else:
                wrapped = limiter.limit(provider, key_func=key_func, scope=scope,
                                        deduct_when=_failed if scope.startswith("login") else None)(wrapped)
        # The limiter checks decorated limits inside its wrapper, so the wrapper must be the view.
        app.view_functions[endpoint] = wrapped
    app.extensions["rate_limiter"] = limiter
    return limiter
