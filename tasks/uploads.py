"""Upload housekeeping. Thin shells: the work is in app/uploads/services.py (ids in, rows re-read)."""

from celery import shared_task

from app.uploads import services


@shared_task(name="tasks.uploads.make_thumbnail", ignore_result=True)
def make_thumbnail(upload_id):
    """The WebP thumbnail of an uploaded image; safe to run twice."""
    return services.make_thumbnail(int(upload_id))


@shared_task(name="tasks.uploads.erase_thumbnails", ignore_result=True)
def erase_thumbnails(owner_type, owner_id):
    """A deleted person's thumbnails removed (docs/UPLOADS.md); safe to run twice."""
    return services.erase_thumbnails(owner_type, int(owner_id))


@shared_task(name="tasks.uploads.resend_pending_thumbnails")
def resend_pending_thumbnails():
    """Beat: thumbnails whose message was lost are sent again."""
    return services.resend_pending_thumbnails()
