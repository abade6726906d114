"""`flask uploads erase --school SLUG --student ID` (or `--teacher ID`): the explicit erase of a deleted
person's photo and documents, rows and files (docs/UPLOADS.md, "Deleting a person")."""

import json

import click
from flask.cli import AppGroup
from sqlalchemy import select

from app.core.errors import ApiError
from app.extensions import db
from app.institutions.models import Institution
from app.uploads import services

uploads_cli = AppGroup("uploads", help="Photos, logos and documents.")


@uploads_cli.command("erase")
@click.option("--school", "slug", required=True, help="The school's slug.")
@click.option("--student", "student_id", type=int, default=None, help="A deleted student's id.")
@click.option("--teacher", "teacher_id", type=int, default=None, help="A deleted teacher's id.")
def erase_command(slug, student_id, teacher_id):
    """Erase every file of a deleted student or teacher (refused for one not deleted)."""
    if (student_id is None) == (teacher_id is None):
        raise click.UsageError("name one person: --student ID or --teacher ID")
    institution_id = db.session.execute(select(Institution.id).where(Institution.slug == slug)).scalar()
    if institution_id is None:
        raise click.ClickException(f"no school with the slug {slug!r}")
    owner_type, owner_id = ("student", student_id) if student_id is not None else ("teacher", teacher_id)
    try:
        erased = services.erase_person_files(owner_type, owner_id, institution_id)
    except ApiError as exc:
        raise click.ClickException(f"{exc.detail} {exc.errors or ''}".strip()) from None
    click.echo(json.dumps({"erased": erased, owner_type: owner_id}))
