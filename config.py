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
        # Requests
        self.MAX_CONTENT_LENGTH = env("MAX_CONTENT_LENGTH", 5 * 1024 * 1024, int)
        self.PAGE_SIZE_DEFAULT = 50
        self.PAGE_SIZE_MAX = 200
        self.LOG_LEVEL = env("LOG_LEVEL", "INFO")

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
