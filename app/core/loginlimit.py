"""Failed-login limits: stop password guessing without locking the owner out.

Every login attempt is counted against three fixed windows (settings in config.py):

  account + address   RATELIMIT_LOGIN           the tight one: a guesser at one address is stopped
  address             RATELIMIT_LOGIN_ADDRESS   looser: a whole school may sit behind one address
  account             RATELIMIT_LOGIN_ACCOUNT   a slow brake, from every address together

So a guesser elsewhere does not lock the owner out: the owner's own address has its own account +
address window, and only the slow brake (a guesser spread over many addresses) stops them too.

An attempt is counted BEFORE its password is checked. `attempt()` takes one unit from all three
windows in one atomic step (a Lua script in Redis; a lock in process) or, when any window is spent,
takes none and answers 429 without checking anything. A right password gives the units back (a
successful login uses up nothing); any answer but 401 does too (nothing was guessed). Hence N
concurrent wrong guesses never check more passwords than a window allows, and attempts refused with
429 count towards nothing: a blocked guesser cannot trip the brake by hammering on.

Redis down: the windows are kept in process (per worker), like the other limits.
"""

import hashlib
import logging
import threading
import time
from contextlib import contextmanager

import redis
from flask import current_app, g, request
from limits import parse as parse_limit

from app.core.errors import ApiError, rate_limit_headers
from app.core.redisconn import LIMITER_DB, make_client

log = logging.getLogger("schoolhouse.loginlimit")

# KEYS: the windows' counters; ARGV: for each, its limit then its length (s). All or nothing: returns
# {0, count1, ttl1, count2, ttl2, ...} when every window had room (each counted), else {i, ttl} for
# the first spent window i (nothing counted).
_TAKE = """
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i * 2 - 1]) then
    return {i, redis.call('TTL', key)}
  end
end
local out = {0}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[i * 2]) end
  out[#out + 1] = n
  out[#out + 1] = redis.call('TTL', key)
end
return out
"""

_GIVE_BACK = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 and redis.call('DECR', key) <= 0 then redis.call('DEL', key) end
end
return 0
"""

WHAT = (
    "for this account from this address",
    "from this address",
    "for this account",
)


class _LocalWindows:
    """The same all-or-nothing counting in process, for when Redis is absent or down."""

    def __init__(self):
        self._lock = threading.Lock()
        self._windows: dict[str, list[float]] = {}  # key -> [count, expires at (monotonic)]

    def take(self, keys, limits):
        now = time.monotonic()
        with self._lock:
            if len(self._windows) > 10_000:
                self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
            windows = [self._windows.get(k) for k in keys]
            windows = [w if w and w[1] > now else None for w in windows]
            for i, (w, (amount, _)) in enumerate(zip(windows, limits, strict=True)):
                if w and w[0] >= amount:
                    return i + 1, [(w[0], w[1] - now)]
            out = []
            for key, w, (_, seconds) in zip(keys, windows, limits, strict=True):
                if w is None:
                    w = self._windows[key] = [0, now + seconds]
                w[0] += 1
                out.append((w[0], w[1] - now))
            return 0, out

    def give_back(self, keys):
        with self._lock:
            for key in keys:
                w = self._windows.get(key)
                if w:
                    w[0] -= 1


class LoginLimits:
    def __init__(self, app):
        cfg = app.config
        self.enabled = cfg["RATELIMIT_ENABLED"]
        self.limits = [
            parse_limit(cfg["RATELIMIT_LOGIN"]),
            parse_limit(cfg["RATELIMIT_LOGIN_ADDRESS"]),
            parse_limit(cfg["RATELIMIT_LOGIN_ACCOUNT"]),
        ]
        self.windows = [(lim.amount, int(lim.get_expiry())) for lim in self.limits]
        self.headers_enabled = cfg.get("RATELIMIT_HEADERS_ENABLED", False)
        self.redis = make_client(app, LIMITER_DB)
        self.take_script = self.redis.register_script(_TAKE) if self.redis is not None else None
        self.give_back_script = self.redis.register_script(_GIVE_BACK) if self.redis is not None else None
        self.local = _LocalWindows()

    @staticmethod
    def keys(email: str, address: str | None) -> list[str]:
        # The e-mail as the login service looks it up (app/auth/services.py: strip, lower), hashed so
        # the counters hold no addresses of people.
        account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
        address = address or "unknown"
        return [f"sh-login:pair:{account}:{address}", f"sh-login:addr:{address}", f"sh-login:acct:{account}"]

    def _take(self, keys):
        """(store used, refused window or 0, [(count, seconds left)])."""
        if self.take_script is not None:
            args = [v for window in self.windows for v in window]
            try:
                out = [int(v) for v in self.take_script(keys=keys, args=args)]
                if out[0]:  # refused: {window, its seconds left}
                    return "redis", out[0], [(self.windows[out[0] - 1][0], out[1])]
                return "redis", 0, list(zip(out[1::2], out[2::2], strict=True))
            except redis.RedisError as exc:
                log.warning("login limits: Redis unavailable, counting in process: %s", exc)
        refused, windows = self.local.take(keys, self.windows)
        return "local", refused, windows

    def _give_back(self, store, keys):
        if store == "redis" and self.give_back_script is not None:
            try:
                self.give_back_script(keys=keys)
                return
            except redis.RedisError as exc:  # the attempt stays counted: errs on the safe side
                log.warning("login limits: could not give back an attempt: %s", exc)
        else:
            self.local.give_back(keys)

    @contextmanager
    def attempt(self, email: str):
        """Wrap the password check: 429 when a window is spent; a wrong password (401) stays counted."""
        if not self.enabled:
            yield
            return
        keys = self.keys(email, request.remote_addr)
        store, refused, windows = self._take(keys)
        if refused:
            limit = self.limits[refused - 1]
            seconds = max(1, int(windows[0][1]))
            raise ApiError(
                429,
                f"Too many failed logins {WHAT[refused - 1]} ({limit}). Try again later.",
                headers=rate_limit_headers(limit.amount, time.time() + seconds),
            )
        if self.headers_enabled:  # the window closest to its limit
            i = min(range(len(windows)), key=lambda n: self.limits[n].amount - windows[n][0])
            g.login_limit_headers = {
                "X-RateLimit-Limit": str(self.limits[i].amount),
                "X-RateLimit-Remaining": str(max(0, self.limits[i].amount - windows[i][0])),
                "X-RateLimit-Reset": str(int(time.time() + windows[i][1])),
            }
        try:
            yield
        except ApiError as e:
            if e.status != 401:
                self._give_back(store, keys)
            raise
        except BaseException:
            self._give_back(store, keys)
            raise
        else:
            self._give_back(store, keys)


def login_attempt(email: str):
    """`with login_attempt(email): <check the password>` (see the module's docstring)."""
    return current_app.extensions["login_limits"].attempt(email)


def _add_headers(response):
    for name, value in (g.get("login_limit_headers") or {}).items():
        response.headers.setdefault(name, value)
    return response


def register_login_limits(app):
    limits = app.extensions["login_limits"] = LoginLimits(app)
    if limits.headers_enabled:
        app.after_request(_add_headers)
