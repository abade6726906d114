"""The OpenAPI document and interactive docs (Swagger UI served from the installed package, no CDN)."""

from flask import Blueprint, Response, current_app, jsonify, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from app.core.auth import public
from app.core.openapi import build_spec
from app.core.ratelimit import exempt

bp = Blueprint("docs", __name__)

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Schoolhouse API</title>
<link rel="stylesheet" href="docs/assets/swagger-ui.css"></head><body><div id="ui"></div>
<script src="docs/assets/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#ui", persistAuthorization: true});</script>
</body></html>"""


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
    return Response(_PAGE, mimetype="text/html")


@bp.get("/docs/assets/<path:name>")
@public
@exempt
def docs_assets(name):
    return send_from_directory(swagger_ui_path, name)
