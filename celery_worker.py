"""celery -A celery_worker worker|beat|flower: the same app factory, the same services."""

from app import create_app

celery = create_app().extensions["celery"]
