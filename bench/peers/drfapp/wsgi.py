"""gunicorn entry point of the DRF peer: bench.peers.drfapp.wsgi:application."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.drfapp.settings")
application = get_wsgi_application()
