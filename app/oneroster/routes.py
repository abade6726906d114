"""The school admin's view of its OneRoster clients, /api/v1/oneroster/clients: create, list, revoke,
rotate the secret. (The token endpoint is app/oneroster/oauth.py; the OneRoster services
rostering.py and gradebook.py.)"""

from flask import Blueprint, jsonify

from app.core.auth import SCHOOL, roles
from app.core.errors import NotFound
from app.core.openapi import doc
from app.core.pagination import ListSpec, list_response
from app.core.schemas import parse_body
from app.core.tenancy import current_institution_id
from app.extensions import db
from app.oneroster import clients as services
from app.oneroster.models import OneRosterClient
from app.oneroster.schemas import ClientCreate, ClientOut, ClientSecretOut
from app.oneroster.tombstones import register_tombstones

bp = Blueprint("oneroster_clients", __name__)
TAGS = ["oneroster"]


@bp.record_once
def _tombstones(state):
    # Rows deleted outright leave OneRoster tombstones in the deleting transaction (session events).
    register_tombstones(state.app)


CLIENTS = ListSpec(OneRosterClient.id, sorts={"name": OneRosterClient.name})


def _client_or_404(ident) -> OneRosterClient:
    client = db.session.get(OneRosterClient, ident)
    if client is None or client.institution_id != current_institution_id():
        raise NotFound("OneRoster client")
    return client


@bp.get("/oneroster/clients")
@roles("admin", reach=SCHOOL)
@doc("The school's OneRoster clients", out=ClientOut, many=True, query=CLIENTS, tags=TAGS)
def list_clients():
    return list_response(db.session, db.select(OneRosterClient), CLIENTS, services.client_dict)


@bp.post("/oneroster/clients")
@roles("admin", reach=SCHOOL)
@doc(
    "Create a OneRoster client: its secret is in this answer only",
    body=ClientCreate,
    out=ClientSecretOut,
    status=201,
    tags=TAGS,
)
def create_client():
    body = parse_body(ClientCreate)
    client, secret = services.create_client(current_institution_id(), body.name, list(body.scopes))
    db.session.commit()
    return jsonify({**services.client_dict(client), "client_secret": secret}), 201


@bp.get("/oneroster/clients/<int:ident>")
@roles("admin", reach=SCHOOL)
@doc("One OneRoster client", out=ClientOut, tags=TAGS)
def get_client(ident):
    return jsonify(services.client_dict(_client_or_404(ident)))


@bp.post("/oneroster/clients/<int:ident>/revoke")
@roles("admin", reach=SCHOOL)
@doc("Revoke a client: no new tokens, and its tokens stop working at once", out=ClientOut, tags=TAGS)
def revoke_client(ident):
    client = _client_or_404(ident)
    services.revoke_client(client)
    db.session.commit()
    return jsonify(services.client_dict(client))


@bp.post("/oneroster/clients/<int:ident>/rotate")
@roles("admin", reach=SCHOOL)
@doc(
    "A new secret for a client: the old one and its tokens stop working",
    out=ClientSecretOut,
    tags=TAGS,
    errors=(409,),  # a revoked client
)
def rotate_client(ident):
    client = _client_or_404(ident)
    secret = services.rotate_secret(client)
    db.session.commit()
    return jsonify({**services.client_dict(client), "client_secret": secret})
