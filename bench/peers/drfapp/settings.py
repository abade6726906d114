"""Django settings of the DRF peer: production-like (DEBUG off), no middleware, no authentication,
JSON renderer only, persistent database connections (CONN_MAX_AGE=None) — Django's best case."""

import os
from urllib.parse import unquote, urlsplit

_db = urlsplit(os.environ["DATABASE_URL"].replace("postgresql+psycopg2://", "postgresql://"))

DEBUG = False
SECRET_KEY = os.environ.get("SECRET_KEY", "bench-peer-not-secret")
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "bench.peers.drfapp.urls"
INSTALLED_APPS = ["rest_framework", "bench.peers.drfapp"]
MIDDLEWARE: list[str] = []
USE_TZ = True
TIME_ZONE = "UTC"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.path.lstrip("/"),
        "USER": unquote(_db.username or ""),
        "PASSWORD": unquote(_db.password or ""),
        "HOST": _db.hostname or "",
        "PORT": str(_db.port or ""),
        "CONN_MAX_AGE": None,  # one connection per worker, kept for its life
    }
}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}
