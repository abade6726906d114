"""Cache warming (a beat job): fill an institution's hot reads through the same views and keys that
requests use, so the first user after a deploy or an invalidation gets a hit.

Core knows no URL: the domains hand over what to warm at start-up with `register_warm_paths(app, fn)`,
where fn(institution_id) lists the GET paths (e.g. app/academics/routes.py).
"""

import logging
from collections.abc import Callable

from flask import current_app

from app.core.auth import Principal
from app.extensions import db

log = logging.getLogger("schoolhouse.cache")

_KEY = "cache_warm_paths"


def register_warm_paths(app, paths: Callable[[int], list[str]]):
    app.extensions.setdefault(_KEY, []).append(paths)


def hot_paths(institution_id) -> list[str]:
    return [path for paths in current_app.extensions.get(_KEY, ()) for path in paths(institution_id)]


def warm(institution_id, paths=None):
    """Run each hot GET as the institution's admin scope; returns how many entries were filled."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    admission = app.extensions["admission"]
    admin = Principal(user_id=0, institution_id=institution_id, role="admin", session_id="cache-warming")
    adapter = app.url_map.bind("localhost")
    filled = 0
    for path in paths or hot_paths(institution_id):
        endpoint, args = adapter.match(path.split("?")[0], method="GET")
        view = app.view_functions[endpoint]
        if not getattr(view, "cache_versions", None):
            continue
        with app.test_request_context(path, method="GET"):
            try:
                filled += admission.prefill(view, args, admin)
            except Exception:  # noqa: BLE001 - one bad path must not stop the rest
                log.exception("warming %s failed", path)
            finally:
                db.session.remove()
    log.info("warmed %d cache entries for institution %s", filled, institution_id)
    return filled
