"""`flask oneroster create-client|list-clients|revoke-client`: a school's OneRoster clients from the
command line (the same services as the admin API, app/oneroster/routes.py)."""

import click
from flask.cli import AppGroup

from app.core.errors import ApiError
from app.extensions import db

oneroster_cli = AppGroup("oneroster", help="OneRoster 1.2 clients of a school (client credentials).")


@oneroster_cli.command("create-client")
@click.option("--school", "school_id", required=True, type=int, help="The school's id.")
@click.option("--name", required=True, help="Who the client is (e.g. the learning platform).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="A OneRoster scope (repeat it); default: roster-core.readonly roster.readonly gradebook.readonly.",
)
def create_client_command(school_id, name, scopes):
    """Print a new client's id and secret (the secret is stored hashed and shown only now)."""
    from app.oneroster import clients

    try:
        wanted = clients.normalise_scopes(
            " ".join(scopes) or "roster-core.readonly roster.readonly gradebook.readonly"
        )
        client, secret = clients.create_client(school_id, name, wanted)
    except ApiError as exc:
        errors = "".join(f"\n  {f}: {m}" for f, m in (exc.errors or {}).items())
        raise click.ClickException(f"{exc.detail}{errors}") from None
    db.session.commit()
    click.echo(f"client_id: {client.client_id}")
    click.echo(f"client_secret: {secret}")
    click.echo(f"scope: {client.scopes}")


@oneroster_cli.command("list-clients")
@click.option("--school", "school_id", required=True, type=int)
def list_clients_command(school_id):
    from app.oneroster.models import OneRosterClient

    rows = db.session.execute(
        db.select(OneRosterClient)
        .where(OneRosterClient.institution_id == school_id)
        .order_by(OneRosterClient.id)
    ).scalars()
    for c in rows:
        state = "revoked" if c.revoked_at else "active"
        click.echo(f"{c.id}\t{c.client_id}\t{state}\t{c.name}\t{c.scopes}")


@oneroster_cli.command("revoke-client")
@click.argument("client_id")
def revoke_client_command(client_id):
    """Revoke a client by its client id: its tokens stop working at once."""
    from app.oneroster import clients
    from app.oneroster.models import OneRosterClient

    client = db.session.execute(
        db.select(OneRosterClient).where(OneRosterClient.client_id == client_id)
    ).scalar_one_or_none()
    if client is None:
        raise click.ClickException("No such client.")
    clients.revoke_client(client)
    db.session.commit()
    click.echo(f"Revoked {client.client_id}.")
