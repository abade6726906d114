"""Absolute links for e-mails: PUBLIC_BASE_URL (config.py) and the route's path.

A mail is often built where there is no request (a worker, the CLI), so the host cannot come from one;
and behind a proxy the request's own host may not be the one people use.
"""

from flask import current_app


def public_url(endpoint: str, **values: object) -> str:
    """PUBLIC_BASE_URL + the path of `endpoint` with `values` (extra values become the query string)."""
    # Any server name will do: only the path is built, the deployment's address comes from the setting.
    path = current_app.url_map.bind("localhost").build(endpoint, values)
    return current_app.config["PUBLIC_BASE_URL"].rstrip("/") + path
