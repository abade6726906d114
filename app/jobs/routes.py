"""Exports and imports: accept (202 + a job to poll), show progress, download by signed link."""

from flask import Blueprint, Response, g, jsonify, request, send_file, url_for

from app.access.rules import CLASSES, OWN_REQUESTS
from app.core.auth import SCHOOL, public, roles
from app.core.openapi import doc
from app.core.pagination import Choice, ListSpec, list_response
from app.core.queryargs import TEXT, Param, QueryArgs, raw_as
from app.core.ratelimit import exports
from app.core.schemas import parse_body
from app.extensions import db
from app.jobs import services
from app.jobs.exporters import KINDS
from app.jobs.models import JOB_STATUSES, Job
from app.jobs.schemas import (
    DOWNLOAD_TYPES,
    FLAG,
    START_DATE,
    START_DATE_RULE,
    ExportIn,
    ExportOut,
    ImportForm,
    ImportOut,
    OneRosterImportForm,
    StudentImportForm,
)
from app.jobs.storage import CONTENT_TYPES

bp = Blueprint("jobs", __name__)


@bp.record_once
def _mail_links(state):
    # The "export ready" mail's download link is signed when it is sent (app/notifications mail_context).
    state.app.extensions.setdefault("mail_links", {})["export_ready"] = services.mail_links


EXPORTERS = ("admin", "teacher", "accountant")
EXPORT_SPEC = ListSpec(
    Job.id,
    filters={
        "status": Choice(Job.status, JOB_STATUSES),
        "kind": Choice(Job.kind, tuple(KINDS)),
        "format": Choice(Job.format, tuple(CONTENT_TYPES)),
    },
    default_sort="-id",
)


CSV = {"text/csv": {"type": "string"}}
DOWNLOAD_ARGS = QueryArgs(Param("token", TEXT, description="The signed token of download_url."))
# dry_run and start_date come as query parameters or form fields: the service parses either
# (app/jobs/services.py).
IMPORT_ARGS = QueryArgs(Param("dry_run", raw_as(FLAG)))
STUDENT_IMPORT_ARGS = QueryArgs(
    Param("dry_run", raw_as(FLAG)),
    Param("start_date", raw_as(START_DATE), rule=START_DATE_RULE),
)


def _accepted(body, location):
    resp = jsonify(body)
    resp.status_code = 202
    resp.headers["Location"] = location
    return resp


@bp.post("/exports")
@roles(*EXPORTERS, reach=CLASSES)
@exports
@doc(
    "Request an export (runs in the background): 202 with the job to poll",
    body=ExportIn,
    out=ExportOut,
    status=202,
    tags=["exports"],
    description="kind and format: attendance_register (csv, xlsx; class_id, month YYYY-MM), "
    "attendance_summary and attendance_records (csv, xlsx; from, to, optional class_id), "
    "class_roster (csv, xlsx, pdf; class_id), gradebook (csv, xlsx; class_id, term_id), "
    "report_cards (pdf; class_id, term_id), fee_statement (pdf, csv; student_id), "
    "fee_collection (csv, xlsx; from, to), audit_log (csv, xlsx; from, to; admins), "
    "oneroster_bulk (zip; history, a boolean, default false: ended enrollments too; admins) and "
    "oneroster_delta (zip; since, a date-time; admins): "
    "the OneRoster 1.2 CSV binding (docs/ONEROSTER.md). "
    "At most MAX_RUNNING_EXPORTS queued or running per school (429); more than EXPORT_MAX_ROWS "
    "rows is refused (422). Spreadsheet cells that start with = + - @ tab or CR are prefixed "
    "with ' so they are never run as formulas.",
)
def create_export():
    job = services.create_export(parse_body(ExportIn), g.principal)
    return _accepted(services.export_out(job), url_for("jobs.get_export", ident=job.id))


@bp.get("/exports")
@roles(*EXPORTERS, reach=OWN_REQUESTS)
@doc(
    "Exports: yours (admins: the whole school's), newest first",
    out=ExportOut,
    many=True,
    tags=["exports"],
    query=EXPORT_SPEC,
)
def list_exports():
    return list_response(
        db.session, services.visible_jobs("export", g.principal), EXPORT_SPEC, services.export_out
    )


@bp.get("/exports/<int:ident>")
@roles(*EXPORTERS, reach=OWN_REQUESTS)
@doc(
    "An export's status and progress; when done, a signed download link valid for EXPORT_LINK_TTL",
    out=ExportOut,
    tags=["exports"],
)
def get_export(ident):
    return jsonify(services.export_out(services.job_or_404(ident, "export", g.principal)))


@bp.get("/exports/<int:ident>/download")
@public
@doc(
    "Download a finished export. The signed `token` from download_url is the credential: 403 if it was "
    "tampered with or belongs to another export, 410 once it (or the export) has expired",
    out=DOWNLOAD_TYPES,
    tags=["exports"],
    query=DOWNLOAD_ARGS,
    errors=(403, 409, 410),
)
def download_export(ident):
    # No unknown-parameter check: the signed link is the credential and is opened as given, with
    # whatever a mail client or proxy appended to it.
    path, filename, content_type = services.open_download(ident, request.args.get("token"))
    # werkzeug adds "; charset=utf-8" to text/* types itself: pass the bare type, or it is said twice.
    mimetype = content_type.split(";", 1)[0]
    resp = send_file(path, mimetype=mimetype, as_attachment=True, download_name=filename, max_age=0)
    resp.headers["Cache-Control"] = "private, no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _import(kind):
    # dry_run (and a student import's start_date) come as query parameters or form fields.
    args = (STUDENT_IMPORT_ARGS if kind == "students" else IMPORT_ARGS).parse()
    dry_run = args["dry_run"] if args["dry_run"] is not None else request.form.get("dry_run")
    start = args.get("start_date")
    if start is None and kind == "students":
        start = request.form.get("start_date")
    job = services.create_import(kind, request.files.get("file"), dry_run, g.principal, start)
    return _accepted(services.import_out(job), url_for("jobs.get_import", ident=job.id))


def _template(kind):
    return Response(
        services.IMPORTS[kind].template(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{kind}-template.csv"'},
    )


_IMPORT_BODY = (
    "A multipart/form-data request: the CSV in the field `file` (UTF-8, at most IMPORT_MAX_BYTES, the "
    "template's header row); `dry_run` as a query parameter or form field. "
)
_IMPORT_RESULT = (
    "Rows with errors are reported in the job's result (row number, field: reason) and not written; "
    "the other rows are. The result lists the ids of the records created (`created_ids`). The whole "
    "file is one request against every rate limit, whatever its size."
)


@bp.post("/imports/students")
@roles("admin", reach=SCHOOL)
@doc(
    "Import students from a CSV file (multipart/form-data field `file`, at most IMPORT_MAX_BYTES); "
    "`dry_run=true` only reports what would happen. 202 with the job to poll",
    body=StudentImportForm,
    media="multipart/form-data",
    out=ImportOut,
    status=202,
    tags=["imports"],
    query=STUDENT_IMPORT_ARGS,
    description=_IMPORT_BODY
    + "`start_date` (YYYY-MM-DD, query parameter or form field; default the school's today, at most "
    f"{services.MAX_START_AHEAD_DAYS} days ahead): the first day of the enrolments the import makes, so "
    "rolls can be taken from then. Columns: admission_number, first_name, last_name (required), "
    "date_of_birth (YYYY-MM-DD), gender, grade_level, status, email, class_id. Students are matched on "
    "admission number: new ones are created, known ones updated (empty cells keep the stored value). "
    + _IMPORT_RESULT,
)
def import_students():
    return _import("students")


@bp.get("/imports/students/template.csv")
@roles("admin", reach=SCHOOL)
@doc(
    "An empty student import file with the columns it accepts",
    out=CSV,
    tags=["imports"],
)
def import_template():
    return _template("students")


@bp.post("/imports/teachers")
@roles("admin", reach=SCHOOL)
@doc(
    "Import teachers from a CSV file, each with a teacher login; `dry_run=true` only reports what would "
    "happen. 202 with the job to poll",
    body=ImportForm,
    media="multipart/form-data",
    out=ImportOut,
    status=202,
    tags=["imports"],
    query=IMPORT_ARGS,
    description=_IMPORT_BODY
    + "Columns: email, first_name, last_name (required), employee_number (required for a new teacher), "
    "phone, specialization, hired_on (YYYY-MM-DD). Teachers are matched on e-mail, case-insensitively: "
    "new ones are created, known ones updated (empty cells keep the stored value). A teacher without a "
    "login gets one (role teacher; the school's unlinked teacher login with that address if there is "
    "one): `created_user_ids` in the result. " + _IMPORT_RESULT,
)
def import_teachers():
    return _import("teachers")


@bp.get("/imports/teachers/template.csv")
@roles("admin", reach=SCHOOL)
@doc("An empty teacher import file with the columns it accepts", out=CSV, tags=["imports"])
def import_teachers_template():
    return _template("teachers")


@bp.post("/imports/guardians")
@roles("admin", reach=SCHOOL)
@doc(
    "Import guardians from a CSV file, each with a guardian login, linked to their children by "
    "admission number; `dry_run=true` only reports what would happen. 202 with the job to poll",
    body=ImportForm,
    media="multipart/form-data",
    out=ImportOut,
    status=202,
    tags=["imports"],
    query=IMPORT_ARGS,
    description=_IMPORT_BODY
    + "Columns: email, first_name, last_name (required), phone, admission_numbers (the guardian's "
    "children, separated by ; or ,; an unknown number refuses the row), relationship (default "
    "guardian), is_primary (true/false). Guardians are matched on e-mail, case-insensitively: new ones "
    "are created, known ones updated (empty cells keep the stored value). Links are added, or their "
    "relationship and is_primary updated when given; links the file does not name stay. A guardian "
    "without a login gets one (role guardian): `created_user_ids` in the result. " + _IMPORT_RESULT,
)
def import_guardians():
    return _import("guardians")


@bp.get("/imports/guardians/template.csv")
@roles("admin", reach=SCHOOL)
@doc("An empty guardian import file with the columns it accepts", out=CSV, tags=["imports"])
def import_guardians_template():
    return _template("guardians")


@bp.post("/imports/oneroster")
@roles("admin", reach=SCHOOL)
@doc(
    "Import a school's roster from a OneRoster 1.2 CSV zip (multipart/form-data field `file`, at most "
    "IMPORT_MAX_BYTES); `dry_run=true` only reports what would happen. 202 with the job to poll",
    body=OneRosterImportForm,
    media="multipart/form-data",
    out=ImportOut,
    status=202,
    tags=["imports"],
    query=IMPORT_ARGS,
    description="The zip of the OneRoster 1.2 CSV binding (manifest.csv, academicSessions.csv, courses.csv, "
    "classes.csv, users.csv, roles.csv, demographics.csv, enrollments.csv; other files are read for "
    "nothing), as another system or a Schoolhouse oneroster_bulk / oneroster_delta export writes it. "
    "Academic years and terms, subjects, classes and the subjects taught in them, students, teachers, "
    "guardians (linked to their children by agentSourcedIds) and enrolments are created, or updated when "
    "an earlier import made them (matched by sourcedId). All or nothing: every problem is reported in "
    "the job's result as {file, line, field, error} and then nothing is written. docs/ONEROSTER.md "
    "gives the mapping.",
)
def import_oneroster():
    return _import("oneroster")


@bp.get("/imports/<int:ident>")
@roles("admin", reach=OWN_REQUESTS)
@doc(
    "An import's status, progress and result (created, updated, unchanged, failed rows with reasons)",
    out=ImportOut,
    tags=["imports"],
)
def get_import(ident):
    return jsonify(services.import_out(services.job_or_404(ident, "import", g.principal)))
