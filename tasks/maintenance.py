"""Celery tasks for maintenance: thin shells around service functions, each under its lock
(app/core/locks.py). They go to the `maintenance` queue by the `tasks.maintenance.*` route in config's
Celery settings."""

from celery import shared_task

from app.core.locks import run_locked
from app.jobs import services as job_services
from app.maintenance import services

INDEX_LOCK_SECONDS = 4 * 3600  # REINDEX CONCURRENTLY of a large index can take a while
WARM_LOCK_SECONDS = 900
CLEANUP_LOCK_SECONDS = 900


# REINDEX CONCURRENTLY of a large index outlasts the default task time limit; killing it half-way
# would leave an invalid copy behind (the next run drops such leftovers), so this task gets its own.
@shared_task(name="tasks.maintenance.index_maintenance", soft_time_limit=3 * 3600, time_limit=3 * 3600 + 600)
def index_maintenance():
    """Nightly: ANALYZE heavily changed tables, REINDEX CONCURRENTLY measured-bloated indexes."""
    return run_locked("index_maintenance", INDEX_LOCK_SECONDS, services.run_index_maintenance)


@shared_task(name="tasks.maintenance.warm_caches")
def warm_caches(institution_id=None):
    """Every 15 minutes: fill each institution's hot cached reads (`institution_id`: one school only)."""
    ids = [int(institution_id)] if institution_id is not None else None
    return run_locked("warm_caches", WARM_LOCK_SECONDS, services.warm_caches, institution_ids=ids)


@shared_task(name="tasks.maintenance.cleanup_expired_exports")
def cleanup_expired_exports():
    """Hourly: remove export files and uploads past their expiry."""
    return run_locked("cleanup_expired_exports", CLEANUP_LOCK_SECONDS, job_services.remove_expired_exports)
