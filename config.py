"""Settings, read from the environment when the app is created (a `.env` file is honoured).

Every setting is listed in README.md. Values are read in `__init__`, not at import, so a process that
changes its environment before `create_app()` (tests, CLI) gets what it asked for.
"""
import os
from pathlib import Path

from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent
INSECURE_KEYS = {"", "dev", "change-me", "dev-insecure-key-change-me"}


def env(name, default=None, cast=str):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if cast is bool:
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    return cast(raw)


def redis_db_url(base, db):
    """Same Redis server, another database number (DESIGN §1: cache 0, limiter 1, broker 2)."""
    if not base:
        return None
    head, sep, tail = base.rpartition("/")
    if "//" in head and tail.isdigit():
        return f"{head}/{db}"
    return f"{base.rstrip('/')}/{db}"


def database_url(url):
    """SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; this project ships psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


class Config:
    ENV_NAME = "development"
    SHOW_ERROR_DETAILS = False

    def __init__(self):
        load_dotenv(BASE_DIR / ".env")
        self.SECRET_KEY = env("SECRET_KEY", "dev-insecure-key-change-me")
        self.INSTANCE_DIR = env("INSTANCE_DIR", str(BASE_DIR / "instance"))
        self.SQLALCHEMY_DATABASE_URI = database_url(env(
            "DATABASE_URL", f"sqlite:///{Path(self.INSTANCE_DIR) / 'schoolhouse.db'}"))
        self.REDIS_URL = env("REDIS_URL")
        self.REDIS_SOCKET_TIMEOUT = env("REDIS_SOCKET_TIMEOUT", 0.2, float)
        self.SQLALCHEMY_TRACK_MODIFICATIONS = False
        # Connection pool (PostgreSQL only); PITFALLS §7.
        self.DB_POOL_SIZE = env("DB_POOL_SIZE", 10, int)
        self.DB_MAX_OVERFLOW = env("DB_MAX_OVERFLOW", 5, int)
        self.DB_POOL_TIMEOUT = env("DB_POOL_TIMEOUT", 5, int)
        self.DB_POOL_RECYCLE = env("DB_POOL_RECYCLE", 1800, int)
        self.DB_CONNECT_TIMEOUT = env("DB_CONNECT_TIMEOUT", 5, int)
        self.DB_STATEMENT_TIMEOUT_MS = env("DB_STATEMENT_TIMEOUT_MS", 30000, int)
        self.DB_IDLE_IN_TX_TIMEOUT_MS = env("DB_IDLE_IN_TX_TIMEOUT_MS", 60000, int)
        self.DB_APPLICATION_NAME = env("DB_APPLICATION_NAME", "schoolhouse")
        # Auth
        self.ACCESS_TOKEN_TTL = env("ACCESS_TOKEN_TTL", 900, int)
        self.REFRESH_TOKEN_TTL = env("REFRESH_TOKEN_TTL", 14 * 24 * 3600, int)
        self.DEMO_PASSWORD = env("DEMO_PASSWORD", "schoolhouse-demo")
        # Rate limits, Flask-Limiter notation
        self.RATELIMIT_ENABLED = env("RATELIMIT_ENABLED", True, bool)
        self.RATELIMIT_LOGIN = env("RATELIMIT_LOGIN", "5 per 15 minutes")
        self.RATELIMIT_LOGIN_ADDRESS = env("RATELIMIT_LOGIN_ADDRESS", "200 per 15 minutes")
        self.RATELIMIT_API = env("RATELIMIT_API", "100 per 15 minutes")
        self.RATELIMIT_SENSITIVE = env("RATELIMIT_SENSITIVE", "10 per hour")
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
        self.OUTBOX_MAX_ATTEMPTS = env("OUTBOX_MAX_ATTEMPTS", 8, int)
        self.OUTBOX_RETRY_BASE_SECONDS = env("OUTBOX_RETRY_BASE_SECONDS", 60, int)  # doubles per attempt
        self.OUTBOX_RETRY_MAX_SECONDS = env("OUTBOX_RETRY_MAX_SECONDS", 6 * 3600, int)
        self.OUTBOX_LEASE_SECONDS = env("OUTBOX_LEASE_SECONDS", 600, int)  # "sending" longer = worker lost
        self.OUTBOX_BATCH_SIZE = env("OUTBOX_BATCH_SIZE", 50, int)
        # Scheduled notifications, in each school's own time zone.
        self.ABSENCE_ALERT_HOUR = env("ABSENCE_ALERT_HOUR", 16, int)  # local hour from which today's absences go out
        self.FEE_REMINDER_HOUR = env("FEE_REMINDER_HOUR", 9, int)
        self.FEE_REMINDER_DAYS = env("FEE_REMINDER_DAYS", 7, int)  # remind this many days before the due date
        # Index maintenance (beat, PostgreSQL only)
        self.MAINTENANCE_ANALYZE_FRACTION = env("MAINTENANCE_ANALYZE_FRACTION", 0.1, float)
        self.MAINTENANCE_BLOAT_RATIO = env("MAINTENANCE_BLOAT_RATIO", 0.3, float)
        self.MAINTENANCE_BLOAT_MIN_BYTES = env("MAINTENANCE_BLOAT_MIN_BYTES", 10 * 1024 * 1024, int)
        self.MAINTENANCE_MAX_REINDEX = env("MAINTENANCE_MAX_REINDEX", 3, int)
        self.MAINTENANCE_STATEMENT_TIMEOUT_MS = env("MAINTENANCE_STATEMENT_TIMEOUT_MS", 3 * 3600 * 1000, int)
        # Requests
        self.MAX_CONTENT_LENGTH = env("MAX_CONTENT_LENGTH", 5 * 1024 * 1024, int)
        self.PAGE_SIZE_DEFAULT = 50
        self.PAGE_SIZE_MAX = 200
        self.LOG_LEVEL = env("LOG_LEVEL", "INFO")
        self.LOG_JSON = env("LOG_JSON", True, bool)
        self.SLOW_QUERY_MS = env("SLOW_QUERY_MS", 1000, int)
        self.SLOW_REQUEST_MS = env("SLOW_REQUEST_MS", 2000, int)
        self.METRICS_TOKEN = env("METRICS_TOKEN")
        self.RESPONSE_CACHE_ENABLED = env("RESPONSE_CACHE_ENABLED", True, bool)

    def engine_options(self):
        uri = self.SQLALCHEMY_DATABASE_URI
        if not uri.startswith("postgresql"):
            return {}
        return {
            "pool_size": self.DB_POOL_SIZE,
            "max_overflow": self.DB_MAX_OVERFLOW,
            "pool_timeout": self.DB_POOL_TIMEOUT,
            "pool_recycle": self.DB_POOL_RECYCLE,
            "pool_pre_ping": True,
            "connect_args": {
                "connect_timeout": self.DB_CONNECT_TIMEOUT,
                "application_name": self.DB_APPLICATION_NAME,
                "options": f"-c statement_timeout={self.DB_STATEMENT_TIMEOUT_MS}"
                           f" -c idle_in_transaction_session_timeout={self.DB_IDLE_IN_TX_TIMEOUT_MS}",
            },
        }

    def validate(self):
        pass


class DevelopmentConfig(Config):
    ENV_NAME = "development"
    SHOW_ERROR_DETAILS = True


class TestingConfig(Config):
    ENV_NAME = "testing"

    def __init__(self):
        super().__init__()
        self.TESTING = True
        self.SECRET_KEY = "testing-secret-key-not-for-production-0123456789"
        self.SQLALCHEMY_DATABASE_URI = database_url(env("TEST_DATABASE_URL", "postgresql:///schoolhouse_test"))
        self.REDIS_URL = env("TEST_REDIS_URL")


class ProductionConfig(Config):
    ENV_NAME = "production"

    def validate(self):
        if self.SECRET_KEY in INSECURE_KEYS or len(self.SECRET_KEY) < 32:
            raise RuntimeError("SECRET_KEY must be a random value of at least 32 characters in production")


CONFIGS = {"development": DevelopmentConfig, "testing": TestingConfig, "production": ProductionConfig}


def get_config(name=None):
    name = name or env("APP_ENV", "development")
    if name not in CONFIGS:
        raise RuntimeError(f"APP_ENV must be one of {', '.join(CONFIGS)}, not {name!r}")
    return CONFIGS[name]()
