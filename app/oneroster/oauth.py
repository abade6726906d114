"""POST /oauth/token and POST /oauth/revoke: OAuth 2 client credentials (RFC 6749 section 4.4) as the
OneRoster 1.2 security framework asks, and token revocation (RFC 7009).

These follow the OAuth RFCs, not this API's conventions: form bodies, HTTP Basic client authentication,
and errors as {"error", "error_description"} (RFC 6749 section 5.2). So they are outside the Schoolhouse
OpenAPI document (like the OneRoster services, whose contract is 1EdTech's), and tests/test_oneroster.py
covers them. They are public views (no bearer token yet), counted per address by the API tier, and the
secret check is argon2id (as slow for an unknown client as for a wrong secret).
"""

from flask import Blueprint, jsonify, request

from app.core.auth import public
from app.oneroster import clients

bp = Blueprint("oneroster_oauth", __name__)


def _basic():
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username:
        raise clients.OAuthError(401, "invalid_client", "Authenticate with HTTP Basic: client id and secret.")
    return auth.username, auth.password


@bp.errorhandler(clients.OAuthError)
def _oauth_error(e: clients.OAuthError):
    resp = jsonify({"error": e.code, "error_description": e.description})
    resp.status_code = e.status
    resp.headers["Cache-Control"] = "no-store"
    if e.status == 401:
        resp.headers["WWW-Authenticate"] = 'Basic realm="oneroster"'
    return resp


@bp.post("/oauth/token")
@public
def token():
    client_id, secret = _basic()
    form = request.form
    body = clients.issue_token(client_id, secret, form.get("grant_type"), form.get("scope"))
    resp = jsonify(body)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/oauth/revoke")
@public
def revoke():
    client_id, secret = _basic()
    clients.revoke_token(client_id, secret, request.form.get("token"))
    return "", 200
