"""Celery tasks: thin shells around service functions (the same code runs in a request, a task and a
test). Tasks take ids and re-read their rows. Every module here is imported by the worker
(app/celery_app.py); `tasks/schedule.py` holds the beat schedule."""
