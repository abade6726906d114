"""`flask jobs list` and `flask jobs run NAME [--school ID] [--date YYYY-MM-DD]`: the scheduled jobs
(BEAT_SCHEDULE in config.py) by hand, on any configuration.

A run goes through the very task beat sends (looked up by name in the app's Celery registry, so this
module imports neither tasks/ nor the Celery wiring) and runs it in this process, under the job's own
lock (app/core/locks.py): a run that meets beat's run of the same job reports "skipped". Its report is
printed as JSON; a failed run exits non-zero with the task's traceback.
"""

import inspect
import json
from datetime import timedelta

import click
from celery.schedules import crontab
from celery.schedules import schedule as celery_schedule
from flask.cli import AppGroup

from app.core.background import celery, in_process
from app.extensions import db
from app.institutions.models import Institution

jobs_cli = AppGroup("jobs", help="The scheduled jobs (beat): list them, run one by hand.")


def _schedule():
    return celery().conf.beat_schedule or {}


def describe(schedule) -> str:
    """A beat schedule for people: "every 60 s", "cron */3 * * * * (UTC)"."""
    if isinstance(schedule, crontab):  # the fields as written: minute hour day-of-month month weekday
        fields = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
        spec = " ".join(str(getattr(schedule, f"_orig_{f}")) for f in fields)
        return f"cron {spec} ({celery().conf.timezone or 'UTC'})"
    if isinstance(schedule, celery_schedule):
        schedule = schedule.run_every
    if isinstance(schedule, timedelta):
        schedule = schedule.total_seconds()
    return f"every {schedule:g} s" if isinstance(schedule, int | float) else str(schedule)


def _parameters(task):
    return inspect.signature(task.run).parameters


@jobs_cli.command("list")
def list_command():
    """The scheduled jobs: name, schedule, task, queue, and what `run` accepts."""
    where = (
        "in-process: the embedded default runs this schedule on a thread of `flask run` (`make run`)"
        if in_process()
        else "by the one `celery beat` process (Procfile `beat`), on the workers"
    )
    click.echo(f"Scheduled jobs (BEAT_SCHEDULE in config.py), run {where}.")
    rows = []
    for name, entry in sorted(_schedule().items()):
        task = celery().tasks.get(entry["task"])
        params = _parameters(task) if task is not None else {}
        options = [flag for flag, p in (("--school", "institution_id"), ("--date", "on_date")) if p in params]
        rows.append(
            (
                name,
                describe(entry["schedule"]),
                entry["task"],
                (entry.get("options") or {}).get("queue", "default"),
                " ".join(options) or "-",
            )
        )
    header = ("NAME", "SCHEDULE", "TASK", "QUEUE", "OPTIONS")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@jobs_cli.command("run")
@click.argument("name")
@click.option(
    "--school", type=int, help="Only this school (institution id), for jobs that go school by school."
)
@click.option(
    "--date",
    "on_date",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Run for this day, whatever the school's local hour (absence alerts, fee reminders).",
)
def run_job_command(name, school, on_date):
    """Run the scheduled job NAME now, in this process, exactly as beat would have it run."""
    schedule = _schedule()
    if name not in schedule:
        raise click.BadParameter(
            f"no scheduled job {name!r}; `flask jobs list` shows them: {', '.join(sorted(schedule))}"
        )
    entry = schedule[name]
    task = celery().tasks[entry["task"]]
    params = _parameters(task)
    kwargs = dict(entry.get("kwargs") or {})
    if school is not None:
        if "institution_id" not in params:
            raise click.UsageError(f"{name} works on the whole deployment at once; it takes no --school")
        if db.session.get(Institution, school) is None:
            raise click.UsageError(f"no school (institution) with id {school}")
        kwargs["institution_id"] = school
    if on_date is not None:
        if "on_date" not in params:
            raise click.UsageError(f"{name} has no day to run for; it takes no --date")
        kwargs["on_date"] = on_date.date().isoformat()
    result = task.apply(args=list(entry.get("args") or ()), kwargs=kwargs)
    if result.failed():
        click.echo(result.traceback or "", err=True)
        raise click.ClickException(f"{name} failed: {type(result.result).__name__}: {result.result}")
    click.echo(json.dumps(result.result, indent=2, sort_keys=True, default=str))
