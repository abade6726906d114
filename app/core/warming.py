"""Cache warming (beat): fill an institution's hot reads through the same views and keys that
requests use, so the first user after a deploy or an invalidation gets a hit."""

import logging

from flask import current_app, g
from sqlalchemy import select

from app.core.auth import Principal
from app.core.tenancy import set_current_institution
from app.extensions import db

log = logging.getLogger("schoolhouse.cache")

LISTS = (
    "/api/v1/classes",
    "/api/v1/subjects",
    "/api/v1/terms",
    "/api/v1/academic-years",
    "/api/v1/students",
    "/api/v1/teachers",
)


def hot_paths(institution_id):
    from app.academics.models import SchoolClass

    class_ids = (
        db.session.execute(
            select(SchoolClass.id).where(
                SchoolClass.institution_id == institution_id, SchoolClass.deleted_at.is_(None)
            ),
            execution_options={"skip_tenant": True},
        )
        .scalars()
        .all()
    )
    paths = list(LISTS)
    for cid in class_ids:
        paths += [f"/api/v1/classes/{cid}/students", f"/api/v1/classes/{cid}/students?limit=50"]
    return paths


def warm(institution_id, paths=None):
    """Run each hot GET as the institution's admin scope; returns how many entries were filled."""
    app = current_app._get_current_object()
    admin = Principal(user_id=0, institution_id=institution_id, role="admin", session_id="cache-warming")
    filled = 0
    for path in paths or hot_paths(institution_id):
        with app.test_request_context(path, method="GET"):
            g.principal, g.revocation_pending = admin, False
            set_current_institution(institution_id)
            adapter = app.url_map.bind("localhost")
            endpoint, args = adapter.match(path.split("?")[0], method="GET")
            view = app.view_functions[endpoint]
            if not getattr(view, "cache_tables", None):
                continue
            try:
                view(**args)
                filled += g.get("cache_status") == "miss"
            except Exception:  # noqa: BLE001 - one bad path must not stop the rest
                log.exception("warming %s failed", path)
            finally:
                db.session.remove()
    log.info("warmed %d cache entries for institution %s", filled, institution_id)
    return filled
