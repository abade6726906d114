"""`flask mpesa ...`: a school's M-Pesa (Daraja) set-up from the command line (docs/PAYMENTS.md).

flask mpesa register-urls --school ID|SLUG   register the paybill validation/confirmation URLs
flask mpesa use-simulator --school ID|SLUG   point the school at the local simulator (make daraja-sim)
flask mpesa settle                           ask Daraja about pushes still pending (the beat job)
"""

import json

import click
from flask.cli import AppGroup
from sqlalchemy import or_, select

from app.core.errors import ApiError
from app.core.tenancy import set_current_institution
from app.extensions import db
from app.finance import mpesa
from app.institutions.models import Institution

mpesa_cli = AppGroup("mpesa", help="M-Pesa (Daraja): register callback URLs, use the simulator, settle.")


def _school(ident: str) -> Institution:
    clause = Institution.slug == ident
    if ident.isdigit():
        clause = or_(clause, Institution.id == int(ident))
    inst = db.session.execute(select(Institution).where(clause)).scalar_one_or_none()
    if inst is None:
        raise click.ClickException(f"no school {ident!r} (give its id or slug)")
    set_current_institution(inst.id)
    return inst


@mpesa_cli.command("register-urls")
@click.option("--school", required=True, help="The school's id or slug.")
def register_urls_command(school):
    """Register the school's paybill validation and confirmation URLs with Daraja (C2B register URL)."""
    _school(school)
    row = mpesa.account()
    if row is None:
        raise click.ClickException("this school has no M-Pesa account (PUT /api/v1/mpesa-account)")
    try:
        answer = mpesa.register_urls(row)
    except ApiError as exc:
        raise click.ClickException(exc.detail) from None
    db.session.commit()
    click.echo(
        json.dumps(
            {
                "validation_url": mpesa.hook_url(row, "validation"),
                "confirmation_url": mpesa.hook_url(row, "confirmation"),
                "daraja": answer,
            },
            indent=2,
        )
    )


@mpesa_cli.command("use-simulator")
@click.option("--school", required=True, help="The school's id or slug.")
@click.option("--shortcode", default="174379", show_default=True)
@click.option("--consumer-key", default="sim-consumer-key", show_default=True)
@click.option("--consumer-secret", default="sim-consumer-secret", show_default=True)
@click.option("--passkey", default="sim-passkey", show_default=True)
def use_simulator_command(school, shortcode, consumer_key, consumer_secret, passkey):
    """Set the school's M-Pesa account to the simulator's defaults (scripts/daraja_sim.py)."""
    _school(school)
    row = mpesa.save_account(
        {
            "environment": "simulator",
            "shortcode": shortcode,
            "transaction_type": "CustomerPayBillOnline",
            "consumer_key": consumer_key,
            "consumer_secret": consumer_secret,
            "passkey": passkey,
        }
    )
    db.session.commit()
    click.echo(json.dumps(mpesa.account_out(row), default=str, indent=2))


@mpesa_cli.command("settle")
def settle_command():
    """Settle pushes pending longer than MPESA_STK_SETTLE_AFTER with the STK query API, now."""
    click.echo(json.dumps(mpesa.settle_pending()))
