"""Settings, read from the environment when the app is created (a `.env` file is honoured).

Every setting is listed in README.md. Values are read in `__init__`, not at import, so a process that
changes its environment before `create_app()` (tests, CLI) gets what it asked for.
"""

import ipaddress
import math
import os
import secrets
from collections import Counter
from datetime import timedelta
from pathlib import Path

from celery.schedules import crontab
from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent
VERSION = "1.0.0"  # this release of Schoolhouse; `GET /` shows it
TESTING_SECRET_KEY = "testing-secret-key-not-for-production-0123456789"
# Keys that were ever published (here, in tests, in old versions of this file): never valid in production.
KNOWN_EXAMPLE_KEYS = {"", "dev", "change-me", "dev-insecure-key-change-me", TESTING_SECRET_KEY}
SECRET_KEY_MIN_LENGTH = 32
SECRET_KEY_MIN_BITS = 128
KEY_HINT = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


def env(name, default=None, cast=str):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if cast is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return cast(raw)


def redis_db_url(base, db):
    """Same Redis server, another database number (cache 0, limiter 1, broker 2: app/core/redisconn.py)."""
    if not base:
        return None
    head, sep, tail = base.rpartition("/")
    if "//" in head and tail.isdigit():
        return f"{head}/{db}"
    return f"{base.rstrip('/')}/{db}"


def _shannon_bits(values) -> float:
    """Bits of information in a sequence, estimated from how often each value occurs in it."""
    n = len(values)
    if not n:
        return 0.0
    return -sum(c * math.log2(c / n) for c in Counter(values).values())


def secret_key_problem(key: str | None) -> str | None:
    """Why `key` is too weak to sign tokens in production, or None when it will do.

    The rule, kept simple enough to explain: at least 32 characters, none of the published example
    keys, not one short piece repeated, and at least 128 bits by a Shannon estimate taken both over the
    characters and over the steps between neighbouring characters (so 'aaaa...', 'abab...' and
    'abcdef...' all fail). `secrets.token_urlsafe(32)` gives about 200 bits by this estimate.
    """
    if not key:
        return "is not set"
    if key in KNOWN_EXAMPLE_KEYS:
        return "is a published example key"
    if len(key) < SECRET_KEY_MIN_LENGTH:
        return f"is shorter than {SECRET_KEY_MIN_LENGTH} characters"
    if key in (key + key)[1:-1]:
        return "is a short piece repeated"
    steps = [ord(b) - ord(a) for a, b in zip(key, key[1:], strict=False)]
    bits = min(_shannon_bits(key), _shannon_bits(steps) * len(key) / len(steps))
    if bits < SECRET_KEY_MIN_BITS:
        return f"has too little entropy (about {bits:.0f} bits; {SECRET_KEY_MIN_BITS} needed)"
    return None


def instance_secret_key(instance_dir) -> str:
    """Development without SECRET_KEY: a random key made once per instance and kept in
    `instance/secret_key` (mode 0600), so tokens survive a restart and no two checkouts share a key."""
    path = Path(instance_dir) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".secret_key.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)  # fails if another process made it first: then theirs is the key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path.read_text().strip()


def origin_list(raw: str | None) -> list[str]:
    """CORS_ORIGINS: exact origins (`https://app.example.org`), comma separated; no patterns."""
    origins = [o.strip().rstrip("/") for o in (raw or "").split(",") if o.strip()]
    for origin in origins:
        scheme, sep, host = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not host or set(host) & set("*/?#\\[]()^$ "):
            raise RuntimeError(f"CORS_ORIGINS: {origin!r} is not an origin like https://app.example.org")
    return origins


# Celery task modules (tasks/), listed: the worker and the web app import exactly these.
TASK_MODULES = [
    "tasks.announcements",
    "tasks.exports",
    "tasks.imports",
    "tasks.maintenance",
    "tasks.notifications",
    "tasks.oneroster",
    "tasks.payments",
    "tasks.privacy",
    "tasks.rollover",
    "tasks.uploads",
]

# Queues, by task name. A worker consumes `default,exports,notifications,maintenance` (Procfile).
TASK_ROUTES = {
    "tasks.exports.run_export": {"queue": "exports"},
    "tasks.imports.*": {"queue": "exports"},
    "tasks.exports.requeue_stale": {"queue": "maintenance"},
    "tasks.maintenance.*": {"queue": "maintenance"},
    "tasks.notifications.*": {"queue": "notifications"},
    "tasks.announcements.*": {"queue": "notifications"},
    "tasks.oneroster.*": {"queue": "maintenance"},
    "tasks.payments.*": {"queue": "maintenance"},
    "tasks.privacy.run_subject_access": {"queue": "exports"},
    "tasks.privacy.*": {"queue": "maintenance"},
    "tasks.rollover.*": {"queue": "default"},
    "tasks.uploads.resend_pending_thumbnails": {"queue": "maintenance"},
    "tasks.uploads.*": {"queue": "default"},  # thumbnails: short, and not to wait behind an export
}

# The beat schedule. Run exactly ONE beat process per deployment (`celery -A celery_worker beat`, the
# Procfile's `beat`): beat keeps no shared state, so two beats would each send every entry. Even then
# nothing doubles up — each periodic job takes a Redis lock while it runs (app/core/locks.py), the
# outbox claims each message once, and every notification has a dedupe key — but the work would be
# done twice for nothing.
#
# Crontab times are in Celery's `timezone` (UTC unless configured). Notification jobs handle each
# school at its own local hour (ABSENCE_ALERT_HOUR, FEE_REMINDER_HOUR), so schools in different time
# zones get their mail at the right time of their day. Absence alerts run every 3 minutes: an absence
# marked after the alert hour is queued within 3 minutes and sent by the next outbox dispatch (every
# minute), so the guardian's mail leaves within 5 minutes of the roll; a run with nothing new costs one
# indexed query per school past its hour (app/notifications/services.py). `expires` drops a run that
# waited in the queue longer than its period (workers down), so a backlog of identical runs never
# piles up.
#
# Without Redis (the embedded default) no beat process runs: the same schedule runs on a thread of
# the serving process (`flask run`), see app/celery_app.py and the EMBEDDED_BEAT setting.
BEAT_SCHEDULE = {
    "jobs-requeue-stale": {
        "task": "tasks.exports.requeue_stale",
        "schedule": 60.0,
        "options": {"queue": "maintenance", "expires": 55},
    },
    "sms-outbox-dispatch": {
        "task": "tasks.notifications.dispatch_sms_outbox",
        "schedule": timedelta(minutes=1),
        "options": {"queue": "notifications", "expires": 55},
    },
    # STK pushes whose callback never came: asked about with the STK query API (MPESA_STK_SETTLE_AFTER).
    "mpesa-settle": {
        "task": "tasks.payments.settle_stk_requests",
        "schedule": timedelta(minutes=1),
        "options": {"queue": "maintenance", "expires": 55},
    },
    "outbox-dispatch": {
        "task": "tasks.notifications.dispatch_outbox",
        "schedule": timedelta(minutes=1),
        "options": {"queue": "notifications", "expires": 55},
    },
    "absence-alerts": {
        "task": "tasks.notifications.absence_alerts",
        "schedule": crontab(minute="*/3"),  # each school from ABSENCE_ALERT_HOUR local (default 16:00)
        "options": {"queue": "notifications", "expires": 170},
    },
    "fee-reminders": {
        "task": "tasks.notifications.fee_reminders",
        "schedule": crontab(minute=10),  # hourly; each school at FEE_REMINDER_HOUR local (default 09:00)
        "options": {"queue": "notifications", "expires": 3000},
    },
    "cache-warming": {
        "task": "tasks.maintenance.warm_caches",
        "schedule": crontab(minute="*/15"),
        "options": {"queue": "maintenance", "expires": 600},
    },
    "index-maintenance": {
        "task": "tasks.maintenance.index_maintenance",
        "schedule": crontab(hour=3, minute=30),  # nightly, when traffic is lowest
        "options": {"queue": "maintenance", "expires": 3 * 3600},
    },
    "uploads-thumbnails-pending": {  # app.uploads.services.resend_pending_thumbnails
        "task": "tasks.uploads.resend_pending_thumbnails",
        "schedule": timedelta(minutes=5),
        "options": {"queue": "maintenance", "expires": 290},
    },
    "exports-cleanup-expired": {  # app.jobs.services.remove_expired_exports, under a lock
        "task": "tasks.maintenance.cleanup_expired_exports",
        "schedule": crontab(minute=20),
        "options": {"queue": "maintenance", "expires": 3000},
    },
    "privacy-disclosures": {  # app.privacy.services.flush_disclosures: the read log into its table
        "task": "tasks.privacy.flush_disclosures",
        "schedule": 60.0,
        "options": {"queue": "maintenance", "expires": 50},
    },
    "privacy-retention": {  # app.privacy.services.apply_retention (RETENTION_* settings), under a lock
        "task": "tasks.privacy.apply_retention",
        "schedule": crontab(hour=2, minute=40),  # nightly, before index maintenance
        "options": {"queue": "maintenance", "expires": 3 * 3600},
    },
    # app.oneroster.tombstones.prune: deleted OneRoster records older than ONEROSTER_TOMBSTONE_DAYS
    "oneroster-tombstones-prune": {
        "task": "tasks.oneroster.prune_tombstones",
        "schedule": crontab(hour=2, minute=50),  # nightly, after the retention job
        "options": {"queue": "maintenance", "expires": 3 * 3600},
    },
}


def public_base_url(raw: str | None) -> str | None:
    """PUBLIC_BASE_URL: where people reach this deployment (`https://school.example.org`, optionally with
    a path prefix). E-mails build their links on it, since a worker sending them has no request."""
    if not raw:
        return None
    url = raw.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0]
    if scheme not in ("http", "https") or not sep or not host or set(url) & set("?#\\ \"'<>"):
        raise RuntimeError(f"PUBLIC_BASE_URL: {raw!r} is not a base URL like https://school.example.org")
    return url


def address_list(raw: str | None) -> list:
    """MPESA_CALLBACK_ALLOWED_IPS: addresses or networks (CIDR), comma separated; empty: no allow-list."""
    networks = []
    for item in (raw or "").split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise RuntimeError(
                    f"MPESA_CALLBACK_ALLOWED_IPS: {item.strip()!r} is not an address"
                ) from None
    return networks


def database_url(url):
    """SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; this project ships psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


class Config:
    ENV_NAME = "development"

    def __init__(self):
        load_dotenv(BASE_DIR / ".env")
        self.SECRET_KEY = env("SECRET_KEY")  # each mode decides what an unset key means (below)
        self.INSTANCE_DIR = env("INSTANCE_DIR", str(BASE_DIR / "instance"))
        self.SQLALCHEMY_DATABASE_URI = database_url(
            env("DATABASE_URL", f"sqlite:///{Path(self.INSTANCE_DIR) / 'schoolhouse.db'}")
        )
        self.REDIS_URL = env("REDIS_URL")
        # Optional separate servers (docs/DEPLOY.md, section 3): the response cache (default:
        # REDIS_URL db 0) and the Celery broker with the job locks (default: REDIS_URL db 2). The rate
        # limits and revocations stay on REDIS_URL db 1. A cache on another server than REDIS_URL costs
        # a cached read a second round trip (app/core/admission.py).
        self.CACHE_REDIS_URL = env("CACHE_REDIS_URL")
        self.BROKER_URL = env("BROKER_URL")
        self.REDIS_SOCKET_TIMEOUT = env("REDIS_SOCKET_TIMEOUT", 0.2, float)
        self.SQLALCHEMY_TRACK_MODIFICATIONS = False
        # Connection pool (PostgreSQL only): dead connections pinged, long waits and idle transactions cut.
        self.DB_POOL_SIZE = env("DB_POOL_SIZE", 10, int)
        self.DB_MAX_OVERFLOW = env("DB_MAX_OVERFLOW", 5, int)
        self.DB_POOL_TIMEOUT = env("DB_POOL_TIMEOUT", 5, int)
        self.DB_POOL_RECYCLE = env("DB_POOL_RECYCLE", 1800, int)
        self.DB_PING_AFTER_IDLE_S = env("DB_PING_AFTER_IDLE_S", 1.0, float)
        self.DB_CONNECT_TIMEOUT = env("DB_CONNECT_TIMEOUT", 5, int)
        self.DB_STATEMENT_TIMEOUT_MS = env("DB_STATEMENT_TIMEOUT_MS", 30000, int)
        self.DB_IDLE_IN_TX_TIMEOUT_MS = env("DB_IDLE_IN_TX_TIMEOUT_MS", 60000, int)
        self.DB_APPLICATION_NAME = env("DB_APPLICATION_NAME", "schoolhouse")
        # Auth
        self.ACCESS_TOKEN_TTL = env("ACCESS_TOKEN_TTL", 900, int)
        # days a OneRoster record deleted outright stays listed as tobedeleted (app/oneroster/tombstones.py)
        self.ONEROSTER_TOMBSTONE_DAYS = env("ONEROSTER_TOMBSTONE_DAYS", 90, int)
        # How stale a process's "no revocation is missing from Redis" may be (app/core/revocation.py).
        self.REVOCATION_RECHECK_S = env("REVOCATION_RECHECK_S", 1.0, float)
        self.REFRESH_TOKEN_TTL = env("REFRESH_TOKEN_TTL", 14 * 24 * 3600, int)
        self.DEMO_PASSWORD = env("DEMO_PASSWORD", "schoolhouse-demo")
        # Accounts (app/auth/accounts.py): how long an invitation link and a password-reset link work.
        self.INVITATION_TTL = env("INVITATION_TTL", 7 * 24 * 3600, int)
        self.PASSWORD_RESET_TTL = env("PASSWORD_RESET_TTL", 30 * 60, int)
        # The platform operator's access token (app/operator): one sitting, no refresh token.
        self.OPERATOR_TOKEN_TTL = env("OPERATOR_TOKEN_TTL", 3600, int)
        # Rate limits, Flask-Limiter notation
        self.RATELIMIT_ENABLED = env("RATELIMIT_ENABLED", True, bool)
        # Failed logins (app/core/loginlimit.py): per account from one address (the tight one), per
        # address (loose: a school behind one NAT), and per account from everywhere (a slow brake).
        self.RATELIMIT_LOGIN = env("RATELIMIT_LOGIN", "5 per 15 minutes")
        self.RATELIMIT_LOGIN_ADDRESS = env("RATELIMIT_LOGIN_ADDRESS", "200 per 15 minutes")
        self.RATELIMIT_LOGIN_ACCOUNT = env("RATELIMIT_LOGIN_ACCOUNT", "50 per hour")
        self.RATELIMIT_API = env("RATELIMIT_API", "1000 per 15 minutes")
        self.RATELIMIT_SENSITIVE = env("RATELIMIT_SENSITIVE", "10 per hour")
        # Exports of personal data, per user; token refreshes, per address (outside the API tier).
        self.RATELIMIT_EXPORTS = env("RATELIMIT_EXPORTS", "60 per hour")
        self.RATELIMIT_REFRESH = env("RATELIMIT_REFRESH", "2000 per 15 minutes")
        # X-RateLimit-* on every response costs one more Redis round trip per request; 429s always carry them.
        self.RATELIMIT_HEADERS_ENABLED = env("RATELIMIT_HEADERS_ENABLED", False, bool)
        self.PROXY_COUNT = env("PROXY_COUNT", 0, int)  # trusted X-Forwarded-For hops (ProxyFix)
        # Email: every message goes through the outbox table (app/notifications). With SMTP_HOST set,
        # mail is sent over SMTP; without it (embedded default) each message is written as an .eml file.
        self.SMTP_HOST = env("SMTP_HOST")
        self.SMTP_PORT = env("SMTP_PORT", 25, int)
        self.SMTP_USER = env("SMTP_USER")
        self.SMTP_PASSWORD = env("SMTP_PASSWORD")
        self.SMTP_STARTTLS = env("SMTP_STARTTLS", False, bool)
        self.SMTP_TIMEOUT = env("SMTP_TIMEOUT", 10, float)  # seconds per SMTP socket operation
        self.MAIL_FROM = env("MAIL_FROM", "Schoolhouse <no-reply@schoolhouse.invalid>")
        self.MAIL_BACKEND = env("MAIL_BACKEND", "smtp" if self.SMTP_HOST else "file")
        self.MAIL_DIR = env("MAIL_DIR", str(Path(self.INSTANCE_DIR) / "mail"))
        # The links in e-mails (invitations, password resets, export downloads) start with this. Unset:
        # the local server (`make run` on PORT, default 5000); production with SMTP refuses to start.
        self.PUBLIC_BASE_URL_SET = public_base_url(env("PUBLIC_BASE_URL"))
        self.PUBLIC_BASE_URL = self.PUBLIC_BASE_URL_SET or f"http://127.0.0.1:{env('PORT', '5000')}"
        self.OUTBOX_MAX_ATTEMPTS = env("OUTBOX_MAX_ATTEMPTS", 8, int)
        self.OUTBOX_RETRY_BASE_SECONDS = env("OUTBOX_RETRY_BASE_SECONDS", 60, int)  # doubles per attempt
        self.OUTBOX_RETRY_MAX_SECONDS = env("OUTBOX_RETRY_MAX_SECONDS", 6 * 3600, int)
        self.OUTBOX_LEASE_SECONDS = env("OUTBOX_LEASE_SECONDS", 600, int)  # "sending" longer = worker lost
        self.OUTBOX_BATCH_SIZE = env("OUTBOX_BATCH_SIZE", 50, int)
        # SMS (app/notifications/sms.py): an outbox like the e-mail one. `file` writes each message under
        # SMS_DIR (embedded default, tests); `africastalking` sends through Africa's Talking's HTTP API.
        self.AT_USERNAME = env("AT_USERNAME")
        self.AT_API_KEY = env("AT_API_KEY")
        self.AT_SENDER_ID = env("AT_SENDER_ID")  # registered alphanumeric sender id; unset: AT's default
        self.AT_BASE_URL = env("AT_BASE_URL", "https://api.africastalking.com").rstrip("/")
        self.SMS_BACKEND = env("SMS_BACKEND", "africastalking" if self.AT_API_KEY else "file")
        self.SMS_DIR = env("SMS_DIR", str(Path(self.INSTANCE_DIR) / "sms"))
        self.SMS_TIMEOUT = env("SMS_TIMEOUT", 10, float)
        self.SMS_DEFAULT_COUNTRY_CODE = env("SMS_DEFAULT_COUNTRY_CODE", "254")  # for numbers written 07...
        # The secret in the delivery-report URL given to Africa's Talking; unset: derived from SECRET_KEY.
        self.SMS_CALLBACK_TOKEN = env("SMS_CALLBACK_TOKEN")
        # M-Pesa (Daraja), docs/PAYMENTS.md. Each school's credentials are stored encrypted with a key
        # derived from DATA_ENCRYPTION_KEY (unset: from SECRET_KEY; app/core/crypto.py).
        self.DATA_ENCRYPTION_KEY = env("DATA_ENCRYPTION_KEY")
        # The base URL of a school whose environment is "simulator" (scripts/daraja_sim.py).
        self.MPESA_SIMULATOR_URL = env("MPESA_SIMULATOR_URL", "http://127.0.0.1:8089")
        # Callbacks accepted only from these addresses (Safaricom publishes its list); empty: any.
        self.MPESA_CALLBACK_ALLOWED_IPS = address_list(env("MPESA_CALLBACK_ALLOWED_IPS"))
        self.MPESA_HTTP_TIMEOUT = env("MPESA_HTTP_TIMEOUT", 15, float)  # seconds per Daraja call
        # A push still pending this many seconds after it was sent is asked about (STK query)...
        self.MPESA_STK_SETTLE_AFTER = env("MPESA_STK_SETTLE_AFTER", 180, int)
        # ... and one Daraja still calls "being processed" after this many is marked expired.
        self.MPESA_STK_EXPIRE_AFTER = env("MPESA_STK_EXPIRE_AFTER", 24 * 3600, int)
        # Scheduled notifications, in each school's own time zone.
        self.ABSENCE_ALERT_HOUR = env(
            "ABSENCE_ALERT_HOUR", 16, int
        )  # local hour from which today's absences go out
        self.FEE_REMINDER_HOUR = env("FEE_REMINDER_HOUR", 9, int)
        self.FEE_REMINDER_DAYS = env("FEE_REMINDER_DAYS", 7, int)  # remind this many days before the due date
        # Index maintenance (beat, PostgreSQL only)
        self.MAINTENANCE_ANALYZE_FRACTION = env("MAINTENANCE_ANALYZE_FRACTION", 0.1, float)
        self.MAINTENANCE_BLOAT_RATIO = env("MAINTENANCE_BLOAT_RATIO", 0.3, float)
        self.MAINTENANCE_BLOAT_MIN_BYTES = env("MAINTENANCE_BLOAT_MIN_BYTES", 10 * 1024 * 1024, int)
        self.MAINTENANCE_MAX_REINDEX = env("MAINTENANCE_MAX_REINDEX", 3, int)
        self.MAINTENANCE_STATEMENT_TIMEOUT_MS = env("MAINTENANCE_STATEMENT_TIMEOUT_MS", 3 * 3600 * 1000, int)
        # Background jobs: Celery on Redis db 2 (see celery_settings and app/celery_app.py).
        self.CELERY_ALWAYS_EAGER = env("CELERY_ALWAYS_EAGER", not (self.REDIS_URL or self.BROKER_URL), bool)
        self.CELERY_VISIBILITY_TIMEOUT = env("CELERY_VISIBILITY_TIMEOUT", 60, int)
        self.CELERY_RESTORE_INTERVAL = env("CELERY_RESTORE_INTERVAL", 5, int)
        self.CELERY_TASK_SOFT_TIME_LIMIT = env("CELERY_TASK_SOFT_TIME_LIMIT", 500, int)
        self.CELERY_TASK_TIME_LIMIT = env("CELERY_TASK_TIME_LIMIT", 540, int)
        # The beat schedule on a thread of this process (app/celery_app.py), only where tasks run
        # in-process. Unset: on under `flask run` (`make run`), off elsewhere (CLI commands, gunicorn,
        # scripts, tests); true/false: on/off in any process (never in a reloader's watching parent).
        self.EMBEDDED_BEAT = env("EMBEDDED_BEAT", None, bool)
        self.FLOWER_USER = env("FLOWER_USER", "admin")
        self.FLOWER_PASSWORD = env("FLOWER_PASSWORD")
        # Export and import jobs (app/jobs)
        self.EXPORT_DIR = env("EXPORT_DIR", str(Path(self.INSTANCE_DIR) / "exports"))  # also keeps uploads
        self.EXPORT_TTL = env("EXPORT_TTL", 24 * 3600, int)  # seconds a finished export can be downloaded
        self.EXPORT_LINK_TTL = env("EXPORT_LINK_TTL", 600, int)  # seconds a signed download link is valid
        self.EXPORT_MAX_ROWS = env("EXPORT_MAX_ROWS", 5_000_000, int)
        self.MAX_RUNNING_EXPORTS = env("MAX_RUNNING_EXPORTS", 2, int)  # queued + running, per institution
        self.EXPORT_PROGRESS_EVERY = env("EXPORT_PROGRESS_EVERY", 20_000, int)  # rows between progress writes
        self.EXPORT_STATEMENT_TIMEOUT_MS = env("EXPORT_STATEMENT_TIMEOUT_MS", 10 * 60 * 1000, int)
        self.IMPORT_MAX_BYTES = env("IMPORT_MAX_BYTES", 2 * 1024 * 1024, int)
        self.IMPORT_BATCH_SIZE = env("IMPORT_BATCH_SIZE", 500, int)
        self.JOB_MAX_ATTEMPTS = env(
            "JOB_MAX_ATTEMPTS", 3, int
        )  # a job that kills its worker every time stops
        self.JOB_REQUEUE_AFTER = env(
            "JOB_REQUEUE_AFTER", 120, int
        )  # seconds without progress before re-enqueue
        # Privacy (app/privacy): how long records are kept, in days (the nightly retention job deletes
        # older ones). Export files (and uploads) are also removed at their expiry (EXPORT_TTL).
        self.RETENTION_AUDIT_DAYS = env("RETENTION_AUDIT_DAYS", 730, int)
        self.RETENTION_OUTBOX_DAYS = env("RETENTION_OUTBOX_DAYS", 90, int)  # e-mail and SMS, sent or failed
        self.RETENTION_JOB_DAYS = env("RETENTION_JOB_DAYS", 90, int)  # finished export and import jobs
        self.RETENTION_IDEMPOTENCY_DAYS = env("RETENTION_IDEMPOTENCY_DAYS", 7, int)
        self.RETENTION_EXPORT_FILE_DAYS = env("RETENTION_EXPORT_FILE_DAYS", 7, int)  # any stored file
        # Photos, logos and documents (app/uploads, docs/UPLOADS.md). Web and workers share UPLOAD_DIR.
        self.UPLOAD_STORAGE = env("UPLOAD_STORAGE", "directory")  # the backend (app/uploads/storage.py)
        self.UPLOAD_DIR = env("UPLOAD_DIR", str(Path(self.INSTANCE_DIR) / "uploads"))
        self.UPLOAD_MAX_BYTES = env("UPLOAD_MAX_BYTES", 10 * 1024 * 1024, int)  # documents and logos
        self.PHOTO_MAX_BYTES = env("PHOTO_MAX_BYTES", 15 * 1024 * 1024, int)  # student and staff photos
        self.UPLOAD_IMAGE_MAX_SIDE = env("UPLOAD_IMAGE_MAX_SIDE", 2048, int)  # pixels; larger is downscaled
        self.THUMBNAIL_SIDE = env("THUMBNAIL_SIDE", 256, int)  # pixels, the WebP thumbnails
        self.UPLOAD_LINK_TTL = env("UPLOAD_LINK_TTL", 3600, int)  # seconds a signed file link is valid
        self.CELERY = self.celery_settings()
        # Requests
        self.MAX_CONTENT_LENGTH = env("MAX_CONTENT_LENGTH", 5 * 1024 * 1024, int)
        self.PAGE_SIZE_DEFAULT = 50
        self.PAGE_SIZE_MAX = 200
        self.LOG_LEVEL = env("LOG_LEVEL", "INFO")
        self.LOG_JSON = env("LOG_JSON", True, bool)
        self.SLOW_QUERY_MS = env("SLOW_QUERY_MS", 1000, int)
        self.SLOW_REQUEST_MS = env("SLOW_REQUEST_MS", 2000, int)
        self.METRICS_TOKEN = env("METRICS_TOKEN")  # production: /metrics is closed without it
        # Browsers may call the API from these origins (Flask-CORS); none by default.
        self.CORS_ORIGINS = origin_list(env("CORS_ORIGINS"))
        self.HSTS_MAX_AGE = 0  # Strict-Transport-Security: production only (ProductionConfig)
        self.RESPONSE_CACHE_ENABLED = env("RESPONSE_CACHE_ENABLED", True, bool)
        # Seconds a cache version key lives after its last write (app/core/caching.py): every cache key
        # carries a TTL, so volatile-lru evicts only cache keys.
        self.CACHE_VERSION_TTL = env("CACHE_VERSION_TTL", 7200, int)
        # Seconds over which hits and stores per endpoint halve; an endpoint whose entries are written
        # more than read stops storing (app/core/caching.py, StorePolicy). 0: always store.
        self.CACHE_SKIP_WINDOW_S = env("CACHE_SKIP_WINDOW_S", 60, int)

    def engine_options(self):
        uri = self.SQLALCHEMY_DATABASE_URI
        if not uri.startswith("postgresql"):
            return {}
        return {
            "pool_size": self.DB_POOL_SIZE,
            "max_overflow": self.DB_MAX_OVERFLOW,
            "pool_timeout": self.DB_POOL_TIMEOUT,
            "pool_recycle": self.DB_POOL_RECYCLE,
            # 0: SQLAlchemy's pre-ping on every checkout; otherwise app/core/dbpool.py pings only a
            # connection that sat idle in the pool longer than this (see there why).
            "pool_pre_ping": self.DB_PING_AFTER_IDLE_S <= 0,
            "connect_args": {
                "connect_timeout": self.DB_CONNECT_TIMEOUT,
                "application_name": self.DB_APPLICATION_NAME,
                # TimeZone=UTC: psycopg2 hands timestamptz back in the session's zone, and answers write
                # UTC with Z (app/core/schemas.py) whatever zone the server itself is set to.
                "options": f"-c statement_timeout={self.DB_STATEMENT_TIMEOUT_MS}"
                f" -c idle_in_transaction_session_timeout={self.DB_IDLE_IN_TX_TIMEOUT_MS}"
                " -c TimeZone=UTC",
            },
        }

    def binds(self):
        """A second engine on the same PostgreSQL database whose connections stay in autocommit: a read
        that is the request's only statement runs there in one round trip, without switching a pooled
        connection's isolation level on every checkout and back on return (app/core/tenancy.py
        `execute_reusable`; docs/BENCHMARKS.md). Its pool is as lazy as the main one: a sync worker opens
        one connection there as it serves its first such read."""
        if not self.SQLALCHEMY_DATABASE_URI.startswith("postgresql"):
            return {}
        return {
            "reads": {
                "url": self.SQLALCHEMY_DATABASE_URI,
                **self.engine_options(),
                "isolation_level": "AUTOCOMMIT",
            }
        }

    def celery_settings(self):
        """Celery's own (lowercase) settings, from REDIS_URL db 2; no REDIS_URL: tasks run in-process.

        Delivery. Every task of ours takes a row id and re-reads its row, so all are
        idempotent: acks_late + reject_on_worker_lost (a dead worker's task runs again, never silently
        dropped), prefetch 1. On the Redis transport an unacknowledged task comes back when its entry in
        the `unacked_index` is older than `visibility_timeout`, checked every `unacked_restore_interval`
        seconds (throttle 1: every check scans). 60 s + 5 s: a SIGKILLed worker's task runs again about
        a minute later. A task that legitimately runs longer than that is kept invisible by its own
        heartbeat (app/celery_app.py bumps its entry while it runs), and export/import jobs also hold a
        Redis lock and a job row, so a duplicate delivery never does the work twice (app/jobs/runner.py).
        Task modules, queues and the beat schedule: TASK_MODULES, TASK_ROUTES, BEAT_SCHEDULE above.
        Time limits only stop hung tasks; retries/ETAs stay far below the visibility timeout
        (celery#2599, kombu#337).
        """
        # None: no Redis, tasks run in-process
        url = self.BROKER_URL or redis_db_url(self.REDIS_URL, 2)
        visibility = self.CELERY_VISIBILITY_TIMEOUT
        transport = {
            "visibility_timeout": visibility,
            "unacked_restore_interval": self.CELERY_RESTORE_INTERVAL,
            "unacked_restore_throttle": 1,
            "socket_timeout": 10,  # above kombu's 1 s BRPOP poll
            "socket_connect_timeout": 2,
            "health_check_interval": 10,
            "retry_on_timeout": True,
        }
        return {
            "broker_url": url or "memory://",
            "result_backend": url or "cache+memory://",
            "broker_transport_options": transport,
            "result_backend_transport_options": {"visibility_timeout": visibility},
            "broker_connection_retry_on_startup": True,
            "broker_connection_max_retries": None,  # a worker outlives a Redis restart
            # Publishing while Redis is down must fail fast: the job row is already committed and the
            # stale-job sweeper re-enqueues it (app/jobs/services.requeue_stale_jobs).
            "task_publish_retry_policy": {
                "max_retries": 2,
                "interval_start": 0,
                "interval_step": 0.5,
                "interval_max": 1,
            },
            "task_serializer": "json",
            "result_serializer": "json",
            "accept_content": ["json"],
            "result_accept_content": ["json"],
            "task_ignore_result": True,  # job rows hold state and results; opt in per task if needed
            "result_expires": 3600,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "worker_cancel_long_running_tasks_on_connection_loss": False,  # job rows decide who finished
            "task_soft_time_limit": self.CELERY_TASK_SOFT_TIME_LIMIT,
            "task_time_limit": self.CELERY_TASK_TIME_LIMIT,
            "task_default_queue": "default",
            "task_create_missing_queues": True,
            "include": TASK_MODULES,
            "task_routes": TASK_ROUTES,
            "beat_schedule": BEAT_SCHEDULE,
            "task_always_eager": self.CELERY_ALWAYS_EAGER,
            "task_eager_propagates": False,  # in-process runs record failures on the job row, like a worker
            "worker_hijack_root_logger": False,
            "beat_schedule_filename": str(Path(self.INSTANCE_DIR) / "celerybeat-schedule"),
            "timezone": "UTC",
        }

    def validate(self):
        pass


class DevelopmentConfig(Config):
    ENV_NAME = "development"

    def __init__(self):
        super().__init__()
        if not self.SECRET_KEY:
            self.SECRET_KEY = instance_secret_key(self.INSTANCE_DIR)


class TestingConfig(Config):
    ENV_NAME = "testing"

    def __init__(self):
        super().__init__()
        self.TESTING = True
        self.SECRET_KEY = TESTING_SECRET_KEY  # refused in production (KNOWN_EXAMPLE_KEYS)
        self.SQLALCHEMY_DATABASE_URI = database_url(
            env("TEST_DATABASE_URL", "postgresql:///schoolhouse_test")
        )
        self.REDIS_URL = env("TEST_REDIS_URL")
        self.CACHE_REDIS_URL = self.BROKER_URL = None  # the test Redis for everything, unless a test asks
        # Always store: the tests expect a second read to hit whatever ran before (a test of the rule
        # turns it on).
        self.CACHE_SKIP_WINDOW_S = 0
        self.EMBEDDED_BEAT = env("EMBEDDED_BEAT", False, bool)  # only for a test that asks for it
        self.CELERY_ALWAYS_EAGER = env("CELERY_ALWAYS_EAGER", not self.REDIS_URL, bool)
        self.CELERY = self.celery_settings()  # again: the broker follows the test Redis


class ProductionConfig(Config):
    ENV_NAME = "production"

    def __init__(self):
        super().__init__()
        self.HSTS_MAX_AGE = env("HSTS_MAX_AGE", 365 * 24 * 3600, int)
        self.DEMO_PASSWORD = env("DEMO_PASSWORD")  # the published default never guards a production seed
        self.MPESA_SIMULATOR_URL = env("MPESA_SIMULATOR_URL")  # production: no simulator unless named
        if not self.PUBLIC_BASE_URL_SET:  # only without SMTP (validate): gunicorn's own port
            self.PUBLIC_BASE_URL = f"http://127.0.0.1:{env('PORT', '8000')}"

    def validate(self):
        problem = secret_key_problem(self.SECRET_KEY)
        if problem:
            raise RuntimeError(
                f"SECRET_KEY {problem}: production needs a random key of at least "
                f"{SECRET_KEY_MIN_LENGTH} characters. Make one with: {KEY_HINT}"
            )
        if self.MAIL_BACKEND == "smtp" and not self.PUBLIC_BASE_URL_SET:
            # Invitations and password resets would otherwise link to 127.0.0.1.
            raise RuntimeError(
                "PUBLIC_BASE_URL is not set: production sending e-mail (SMTP_HOST) needs the address "
                "people reach this deployment at, e.g. PUBLIC_BASE_URL=https://school.example.org"
            )


CONFIGS = {"development": DevelopmentConfig, "testing": TestingConfig, "production": ProductionConfig}


def get_config(name=None):
    name = name or env("APP_ENV", "development")
    if name not in CONFIGS:
        raise RuntimeError(f"APP_ENV must be one of {', '.join(CONFIGS)}, not {name!r}")
    return CONFIGS[name]()
