"""Celery tasks: thin shells around service functions (the same code runs in a request, a task and a
test). Tasks take ids and re-read their rows. Tasks import services, never the other way: services
send a task by name (app/core/background.py). The modules here, the queues and the beat schedule are
listed in config's Celery settings (config.Config.celery_settings)."""
