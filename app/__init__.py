"""Application factory: a few small register steps, nothing configured at import time."""

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from config import get_config


class Schoolhouse(Flask):
    """Flask, with `ensure_sync` remembered per function: Flask asks `inspect.iscoroutinefunction` of
    every hook and the view on every request (about ten times; bench/cpu.py --profile), and the answer
    never changes for a function."""

    def ensure_sync(self, func):
        known = self.__dict__.setdefault("_sync_funcs", {})
        try:
            found = known.get(func)
            if found is None:
                found = known[func] = super().ensure_sync(func)
        except TypeError:  # an unhashable callable: asked each time, as Flask does
            return super().ensure_sync(func)
        return found


def create_app(config_name=None, **overrides):

    config = get_config(config_name)
    for key, value in overrides.items():
        setattr(config, key, value)
    config.validate()
    app = Schoolhouse(__name__, instance_path=config.INSTANCE_DIR, instance_relative_config=False)
    app.config.from_object(config)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = config.engine_options()
    app.config["SQLALCHEMY_BINDS"] = config.binds()
    register_logging(app)
    register_json(app)
    register_proxy(app)
    register_request_hooks(app)  # request id and timing first, so every answer carries them
    register_security_headers(app)  # nosniff, frames, referrer, CSP, HSTS (production); CORS allow-list
    register_extensions(app)
    register_blueprints(app)  # the domains hand core their hooks here (audit, revocation, warming)
    register_admission(app)  # token, API tier, session, cache lookup: before every view
    register_rate_limits(app)  # after the blueprints: applies the limits their views are marked with
    register_errors(app)
    register_cli(app)
    register_celery(app)
    return app


def register_logging(app):
    from app.core.observability import configure_logging

    configure_logging(app)


def register_json(app):
    from app.core.jsonprovider import OrjsonProvider
    from app.core.requestctx import NoCookieSessions

    app.json = OrjsonProvider(app)
    # A token API keeps no cookie session; Flask's default would build a signer on every request.
    app.session_interface = NoCookieSessions()


def register_proxy(app):
    if app.config["PROXY_COUNT"]:
        n = app.config["PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)


def register_request_hooks(app):
    from app.core.observability import observe_request
    from app.core.requestctx import register_request_context

    register_request_context(app)
    app.after_request(observe_request)


def register_security_headers(app):
    from app.core.headers import register_security_headers as register

    register(app)


def register_admission(app):
    from app.core.admission import register_admission as register

    register(app)


def register_extensions(app):
    from pathlib import Path

    from app import models  # noqa: F401  (the whole schema on the metadata, for Alembic and create_all)
    from app.core.redisconn import CACHE_DB, redis_options
    from app.core.tenancy import register_tenancy, time_lone_reads
    from app.extensions import cache, compress, db, migrate
    from config import redis_db_url

    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    db.init_app(app)
    from app.core.observability import instrument_engine, observe_lone_read

    with app.app_context():
        from app.core.dbpool import ping_after_idle, register_connection_loss

        register_connection_loss(app)
        for engine in db.engines.values():  # the main engine and, on PostgreSQL, the reads engine
            if engine.dialect.name == "postgresql":
                ping_after_idle(engine, app.config["DB_PING_AFTER_IDLE_S"])
            instrument_engine(
                engine,
                app.config["SLOW_QUERY_MS"],
                app.config.get("DB_POOL_SIZE", 0) + app.config.get("DB_MAX_OVERFLOW", 0),
                statements=engine is db.engine,  # the reads engine's are timed by tenancy itself
            )
        time_lone_reads(observe_lone_read)
    migrate.init_app(app, db, directory=str(Path(app.root_path).parent / "migrations"))
    register_tenancy(app)
    cache_url = app.config.get("CACHE_REDIS_URL") or redis_db_url(app.config.get("REDIS_URL"), CACHE_DB)
    if cache_url:
        app.config.setdefault("CACHE_TYPE", "RedisCache")
        app.config["CACHE_REDIS_URL"] = cache_url
        app.config.setdefault("CACHE_OPTIONS", redis_options(app))
    else:
        app.config.setdefault("CACHE_TYPE", "SimpleCache")
    app.config.setdefault("CACHE_KEY_PREFIX", "sh:")
    app.config.setdefault("CACHE_DEFAULT_TIMEOUT", 300)
    cache.init_app(app)
    from app.core.caching import register_caching

    register_caching(app)
    # brotli, then gzip, for JSON and CSV above 1 KiB; files that are already compressed (xlsx, pdf,
    # images) are not in the list, and streamed files (direct passthrough) are left alone.
    app.config.setdefault("COMPRESS_ALGORITHM", ["br", "gzip"])
    app.config.setdefault("COMPRESS_MIN_SIZE", 1024)
    app.config.setdefault(
        "COMPRESS_MIMETYPES",
        [
            "application/json",
            "application/problem+json",
            "text/csv",
            "text/html",
            "text/plain",
            "application/javascript",
            "text/css",
        ],
    )
    app.config.setdefault("COMPRESS_BR_LEVEL", 4)  # fast levels: the CPU is the scarce resource here
    app.config.setdefault("COMPRESS_LEVEL", 5)
    compress.init_app(app)


def register_blueprints(app):
    from app.academics.routes import bp as academics_bp
    from app.announcements.routes import bp as announcements_bp
    from app.attendance.routes import bp as attendance_bp
    from app.audit.routes import bp as audit_bp
    from app.auth.account_routes import bp as accounts_bp
    from app.auth.pages import bp as account_pages_bp
    from app.auth.routes import bp as auth_bp
    from app.docs import bp as docs_bp
    from app.docs import index_bp
    from app.finance.mpesa_routes import bp as mpesa_bp
    from app.finance.routes import bp as finance_bp
    from app.grading.routes import bp as grading_bp
    from app.health.routes import bp as health_bp
    from app.institutions.routes import bp as institutions_bp
    from app.jobs.routes import bp as jobs_bp
    from app.notifications.routes import bp as notifications_bp
    from app.oneroster.gradebook import bp as oneroster_gradebook_bp
    from app.oneroster.oauth import bp as oneroster_oauth_bp
    from app.oneroster.rostering import bp as oneroster_rostering_bp
    from app.oneroster.routes import bp as oneroster_bp
    from app.operator.routes import bp as operator_bp
    from app.people.routes import bp as people_bp
    from app.privacy.routes import bp as privacy_bp
    from app.rollover.routes import bp as rollover_bp
    from app.timetable.routes import bp as timetable_bp
    from app.uploads.routes import bp as uploads_bp

    for bp in (
        auth_bp,
        institutions_bp,
        people_bp,
        academics_bp,
        attendance_bp,
        grading_bp,
        finance_bp,
        mpesa_bp,
        notifications_bp,
        announcements_bp,
        audit_bp,
        jobs_bp,
        docs_bp,
        accounts_bp,
        operator_bp,
        oneroster_bp,
        privacy_bp,
        rollover_bp,
        uploads_bp,
        timetable_bp,
    ):
        app.register_blueprint(bp, url_prefix="/api/v1")
    # OneRoster 1.2 (app/oneroster): the paths its binding fixes, and the OAuth token endpoint
    app.register_blueprint(oneroster_oauth_bp)
    app.register_blueprint(oneroster_rostering_bp, url_prefix="/ims/oneroster/rostering/v1p2")
    app.register_blueprint(oneroster_gradebook_bp, url_prefix="/ims/oneroster/gradebook/v1p2")
    app.register_blueprint(health_bp)
    app.register_blueprint(index_bp)  # GET /: where the docs, health and version are
    app.register_blueprint(account_pages_bp)  # /account/password: the page e-mailed links open


def register_rate_limits(app):
    from app.core.loginlimit import register_login_limits
    from app.core.ratelimit import configure_limiter

    configure_limiter(app)
    register_login_limits(app)


def register_errors(app):
    from app.core.errors import register_errors as register

    register(app)


def register_cli(app):
    from app.finance.cli import mpesa_cli
    from app.jobs.cli import jobs_cli
    from app.notifications.cli import sms_cli
    from app.oneroster.cli import oneroster_cli
    from app.operator.cli import operators_cli, schools_cli
    from app.seed import seed_cli
    from app.uploads.cli import uploads_cli

    app.cli.add_command(seed_cli)
    app.cli.add_command(jobs_cli)
    app.cli.add_command(mpesa_cli)
    app.cli.add_command(sms_cli)
    app.cli.add_command(operators_cli)
    app.cli.add_command(schools_cli)
    app.cli.add_command(oneroster_cli)
    app.cli.add_command(uploads_cli)


def register_celery(app):
    from app.celery_app import celery_init_app, embedded_beat_wanted, start_embedded_beat

    celery_init_app(app)
    if embedded_beat_wanted(app):  # no broker, so no `celery beat`: the schedule runs in this process
        start_embedded_beat(app)
