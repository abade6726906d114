"""`flask operators create` (the platform's first operator) and `flask schools create|list|suspend|resume`.

The same services as the operator API (app/operator/services.py), the same checks (app/operator/
schemas.py): a school made here also invites its first admin by e-mail through the outbox.
"""

import json

import click
from flask.cli import AppGroup
from sqlalchemy import select

from app.core.errors import ApiError
from app.core.schemas import parse
from app.extensions import db
from app.institutions.models import Institution

operators_cli = AppGroup("operators", help="The platform's operators (they create and suspend schools).")
schools_cli = AppGroup(
    "schools", help="Schools on this deployment: create (inviting the first admin), list, suspend, resume."
)


def _fail(exc: ApiError):
    errors = "".join(f"\n  {field}: {message}" for field, message in (exc.errors or {}).items())
    raise click.ClickException(f"{exc.detail}{errors}")


@operators_cli.command("create")
@click.option("--email", required=True, help="The operator's login.")
@click.option("--name", required=True, help="Who this operator is (shown in the schools' audit trails).")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Asked for when not given (at least 10 characters, not a common password).",
)
def create_operator_command(email, name, password):
    """Create an operator, who logs in at POST /api/v1/operator/login."""
    from app.operator import services
    from app.operator.schemas import OperatorCreate

    try:
        body = parse(OperatorCreate, {"email": email, "name": name, "password": password})
        op = services.create_operator(body.email, body.name, body.password)
    except ApiError as exc:
        _fail(exc)
    click.echo(f"Operator {op.email} created (id {op.id}). Log in at POST /api/v1/operator/login.")


@schools_cli.command("create")
@click.option("--name", required=True, help="The school's name.")
@click.option("--timezone", required=True, help="IANA time zone, e.g. Africa/Nairobi.")
@click.option("--country", required=True, help="ISO 3166-1 alpha-2 country code, e.g. KE.")
@click.option("--currency", required=True, help="ISO 4217 currency code, e.g. KES.")
@click.option("--admin-email", required=True, help="The first admin, invited by e-mail to choose a password.")
@click.option("--admin-first-name", default="School", show_default=True)
@click.option("--admin-last-name", default="Administrator", show_default=True)
def create_school_command(name, timezone, country, currency, admin_email, admin_first_name, admin_last_name):
    """Create a school and e-mail its first admin an invitation."""
    from app.operator import services
    from app.operator.schemas import SchoolCreate

    values = {
        "name": name,
        "timezone": timezone,
        "country": country.upper(),
        "currency": currency.upper(),
        "admin_email": admin_email,
        "admin_first_name": admin_first_name,
        "admin_last_name": admin_last_name,
    }
    try:
        inst, admin, invitation = services.create_school(parse(SchoolCreate, values).model_dump(), "cli")
    except ApiError as exc:
        _fail(exc)
    click.echo(f"School {inst.name!r} created: id {inst.id}, slug {inst.slug}.")
    _tell(admin.email, invitation)


def _tell(email, invitation):
    from flask import current_app

    cfg = current_app.config
    until = f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC"
    if cfg["MAIL_BACKEND"] == "file":
        # The mail stays on this machine (an .eml file): the link is shown here too, for whoever
        # runs this command can read that file anyway.
        click.echo(
            f"Invitation to {email} queued; it goes to {cfg['MAIL_DIR']}/ as an .eml file (no SMTP_HOST)."
        )
        click.echo(f"Its link works once, until {until}:")
        click.echo(f"  {invitation.link}")
    else:
        click.echo(
            f"Invitation to {email} queued in the outbox (sent through {cfg['SMTP_HOST']}); its link "
            f"({cfg['PUBLIC_BASE_URL']}/account/password?token=...) works once, until {until}."
        )


@schools_cli.command("list")
def list_schools_command():
    """The schools, one per line as JSON."""
    from app.operator import services

    for inst in db.session.execute(select(Institution).order_by(Institution.id)).scalars():
        click.echo(json.dumps(services.school_out(inst), default=str))


def _school(slug):
    from app.operator import services

    try:
        return services.school_or_404(slug)
    except ApiError as exc:
        _fail(exc)


@schools_cli.command("suspend")
@click.argument("slug")
@click.option("--reason", default=None, help="Kept on the school's audit trail.")
def suspend_school_command(slug, reason):
    """Suspend a school: its people's sessions end and they cannot log in; its records stay."""
    from app.operator import services

    inst = _school(slug)
    ended = services.suspend_school(inst, "cli", reason)
    click.echo(f"{inst.slug} suspended at {inst.suspended_at:%Y-%m-%d %H:%M} UTC; {ended} session(s) ended.")


@schools_cli.command("resume")
@click.argument("slug")
def resume_school_command(slug):
    """Resume a suspended school."""
    from app.operator import services

    inst = _school(slug)
    services.resume_school(inst, "cli")
    click.echo(f"{inst.slug} is open again.")


@schools_cli.command("invite-admin")
@click.argument("slug")
@click.argument("email")
@click.option("--first-name", default="School", show_default=True)
@click.option("--last-name", default="Administrator", show_default=True)
def invite_admin_command(slug, email, first_name, last_name):
    """Invite an admin again (a new link) or a new admin: when the first admin's link expired or they left."""
    from app.operator import services
    from app.operator.schemas import AdminInvitationIn

    inst = _school(slug)
    try:
        body = parse(AdminInvitationIn, {"email": email, "first_name": first_name, "last_name": last_name})
        user, invitation = services.invite_admin(inst, body.model_dump(), "cli")
    except ApiError as exc:
        _fail(exc)
    _tell(user.email, invitation)
