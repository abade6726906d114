"""Rate limits: the general API tier (per user, or per address before login) and the route limits.

Route limits (failed logins, the sensitive budget) are Flask-Limiter's: views are only *marked* here
(`@login_limited`, `@sensitive`, `@exempt`), and `configure_limiter` applies the marks once the
blueprints are registered. Flask-Limiter skips every unmarked view.

The API tier, which every request pays, is `ApiTier`: a fixed-window counter that shares one Redis
round trip with the session-revocation check (and, on a cached read, with the cache lookup). Written
by hand because Flask-Limiter's general path was a round trip of its own plus a large share of a
cached read in Python (measured: docs/BENCHMARKS.md, "Where the time went").
`limits` (Flask-Limiter's own engine) parses the setting and is the in-process fallback when Redis is
down.
"""

import logging
import time

import redis
from flask import current_app, g, request
from flask_limiter import Limiter
from limits import parse as parse_limit
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from app.core.errors import ApiError, rate_limit_headers
from app.core.redisconn import LIMITER_DB, make_client
from config import redis_db_url

log = logging.getLogger("schoolhouse.ratelimit")

# Lua, run with the limiter database selected. ARGV[1] = counter key ('' = do not count),
# ARGV[2] = window seconds, ARGV[3] = the session's revocation key ('' = anonymous). Sets `count`
# (0 when not counted) and `revoked` (1/0, or -1 when the Redis copy of revocations is incomplete
# and the database must answer). Shared by GATE below and the response cache's lookup script.
GATE_LUA = """
local count = 0
if ARGV[1] ~= '' then
  count = redis.call('INCR', ARGV[1])
  if count == 1 then redis.call('EXPIRE', ARGV[1], ARGV[2]) end
end
local revoked = -1
if ARGV[3] ~= '' and redis.call('EXISTS', 'revoked:ready') == 1 then revoked = redis.call('EXISTS', ARGV[3]) end
"""
GATE = GATE_LUA + "return {count, revoked}"


class ApiTier:
    """The general API limit (RATELIMIT_API) plus the session check, in one Redis round trip."""

    def __init__(self, app):
        cfg = app.config
        self.enabled = cfg["RATELIMIT_ENABLED"]
        self.limit = parse_limit(cfg["RATELIMIT_API"])
        self.window = int(self.limit.get_expiry())
        self.headers_enabled = cfg.get("RATELIMIT_HEADERS_ENABLED", False)
        self.redis = make_client(app, LIMITER_DB)
        self.script = self.redis.register_script(GATE) if self.redis is not None else None
        self.fallback = FixedWindowRateLimiter(MemoryStorage())  # Redis absent or down: per process

    def args(self, who, session_id):
        """ARGV[1..3] of GATE_LUA for this caller (`who`: "user:<id>" or "addr:<ip>"), noting the
        window's end on g for the 429 and the optional headers."""
        revocation_key = f"revoked:{session_id}" if session_id else ""
        if not self.enabled:
            return ["", self.window, revocation_key]
        slot = int(time.time()) // self.window
        g.rate_window = (who, (slot + 1) * self.window)
        return [f"sh-rl:api:{who}:{slot}", self.window + 1, revocation_key]

    def gate(self, who, session_id=None):
        """Count this request and check the session (None: anonymous). Raises 429; returns the
        revocation answer (True/False, or None when the caller must ask the RevocationStore)."""
        args = self.args(who, session_id)
        if self.script is not None:
            try:
                count, revoked = self.script(args=args)
                self.judge(count)
                return None if revoked < 0 else bool(revoked)
            except redis.RedisError as exc:
                log.warning("rate-limit storage unavailable, counting in process: %s", exc)
        self.count_in_process()
        return None

    def count_in_process(self):
        if not self.enabled:
            return
        who, _ = g.rate_window
        allowed = self.fallback.hit(self.limit, "api", who)
        stats = self.fallback.get_window_stats(self.limit, "api", who)
        g.rate_window = (who, int(stats.reset_time))
        self.judge(self.limit.amount - stats.remaining if allowed else self.limit.amount + 1)

    def judge(self, count):
        if not self.enabled or not count:
            return
        g.rate_count = count
        if count > self.limit.amount:
            raise too_many_requests(self.limit, g.rate_window[1])

    def headers(self, response):
        """X-RateLimit-* on every counted response, when RATELIMIT_HEADERS_ENABLED."""
        count = g.get("rate_count")
        if self.headers_enabled and count:
            response.headers.setdefault("X-RateLimit-Limit", str(self.limit.amount))
            response.headers.setdefault("X-RateLimit-Remaining", str(max(0, self.limit.amount - count)))
            response.headers.setdefault("X-RateLimit-Reset", str(g.rate_window[1]))


def too_many_requests(limit, reset_at):
    return ApiError(
        429,
        f"Rate limit exceeded ({limit}). Try again later.",
        headers=rate_limit_headers(limit.amount, reset_at),
    )


def caller_key():
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
        key_func=caller_key,
        default_limits=[],  # the API tier is ApiTier's
        storage_uri=url or "memory://",
        storage_options=options,
        # Redis down: the route limits count in process instead of answering 500 (PITFALLS §5).
        in_memory_fallback_enabled=bool(url),
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
                wrapped = limiter.limit(
                    provider,
                    key_func=key_func,
                    scope=scope,
                    deduct_when=_failed if scope.startswith("login") else None,
                )(wrapped)
        # The limiter checks decorated limits inside its wrapper, so the wrapper must be the view.
        app.view_functions[endpoint] = wrapped

    # Flask-Limiter 4 checks a decorated limit inside the decorator's wrapper; its before_request hook
    # only serves default and blueprint limits, which are not used here (the API tier is ApiTier's),
    # so it is dropped (it still ran its resolution on every request: docs/BENCHMARKS.md).
    hooks = app.before_request_funcs.get(None, [])
    if limiter._check_request_limit in hooks:  # absent when the limiter is disabled
        hooks.remove(limiter._check_request_limit)
    app.extensions["rate_limiter"] = limiter
    app.extensions["api_tier"] = ApiTier(app)
    return limiter
