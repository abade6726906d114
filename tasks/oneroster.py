"""OneRoster tasks: the nightly prune of tombstones. A thin shell: the work is in
app/oneroster/tombstones.py."""

from celery import shared_task

from app.core.locks import run_locked
from app.oneroster import tombstones

PRUNE_LOCK_SECONDS = 3600


@shared_task(name="tasks.oneroster.prune_tombstones")
def prune_tombstones():
    """Nightly: delete OneRoster tombstones older than ONEROSTER_TOMBSTONE_DAYS."""
    return run_locked("oneroster_prune_tombstones", PRUNE_LOCK_SECONDS, tombstones.prune)
