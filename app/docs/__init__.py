"""The OpenAPI document and interactive docs (Swagger UI served from the installed package, no CDN),
and `GET /`, which points a newcomer at them."""

import base64
import hashlib

from flask import Blueprint, Response, current_app, jsonify, redirect, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

from app.core.auth import public
from app.core.openapi import build_spec
from app.core.ratelimit import exempt
from config import VERSION

bp = Blueprint("docs", __name__)  # under /api/v1
index_bp = Blueprint("index", __name__)  # at the site root

# No persistAuthorization: a token typed into the page must not be kept in localStorage. No validator
# badge: it would load an image from another site.
_INIT = 'SwaggerUIBundle({url: "openapi.json", dom_id: "#ui", validatorUrl: null});'

_PAGE = f"""<!doctype html><html><head><meta charset="utf-8"><title>Schoolhouse API</title>
<link rel="stylesheet" href="docs/assets/swagger-ui.css"></head><body><div id="ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script>{_INIT}</script>
</body></html>"""

# Only this site's scripts, styles and fetches, plus the one inline script above by its hash (no
# 'unsafe-inline'); data: images are the icons inside swagger-ui.css.
_INIT_HASH = base64.b64encode(hashlib.sha256(_INIT.encode()).digest()).decode()
PAGE_CSP = (
    f"default-src 'none'; script-src 'self' 'sha256-{_INIT_HASH}'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@bp.get("/openapi.json")
@public
@exempt
def openapi_json():
    spec = current_app.extensions.get("openapi_spec")
    if spec is None:
        spec = current_app.extensions["openapi_spec"] = build_spec()
    return jsonify(spec)


@bp.get("/docs")
@public
@exempt
def docs_page():
    return Response(_PAGE, mimetype="text/html", headers={"Content-Security-Policy": PAGE_CSP})


@bp.get("/docs/")
@public
@exempt
def docs_page_slash():
    # The page's URLs are relative to /api/v1/docs ("openapi.json", "docs/assets/..."): served here
    # they would resolve under /api/v1/docs/ and miss, so the page has one address.
    return redirect(url_for("docs.docs_page"), 308)


@bp.get("/docs/assets/<path:name>")
@public
@exempt
def docs_assets(name):
    return send_from_directory(swagger_ui_path, name)


@index_bp.get("/")
@public
@exempt
def index():
    return jsonify(
        {
            "name": "Schoolhouse",
            "version": VERSION,
            "links": {
                "docs": url_for("docs.docs_page"),
                "openapi": url_for("docs.openapi_json"),
                "health_live": url_for("health.live"),
                "health_ready": url_for("health.ready"),
            },
        }
    )
