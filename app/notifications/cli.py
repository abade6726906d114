"""`flask sms report-url`: the delivery-report URL to give Africa's Talking; `flask sms dispatch`: send
the due SMS now."""

import json

import click
from flask import current_app
from flask.cli import AppGroup

from app.notifications import sms_services

sms_cli = AppGroup("sms", help="SMS: the delivery-report URL, sending the outbox by hand.")


@sms_cli.command("report-url")
def report_url_command():
    """The URL Africa's Talking should post delivery reports to (its dashboard: SMS > Callback URLs)."""
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    click.echo(f"{base}/api/v1/sms/delivery-reports/{sms_services.report_token()}")


@sms_cli.command("dispatch")
def dispatch_command():
    """Send every due SMS of the outbox now."""
    click.echo(json.dumps(sms_services.dispatch_sms_outbox()))
