"""Exports and imports: accept (202 + a job to poll), show progress, download by signed link."""

from flask import Blueprint, Response, g, jsonify, request, send_file, url_for

from app.core.auth import public, roles
from app.core.openapi import doc
from app.core.pagination import Choice, ListSpec, list_response
from app.core.queryargs import TEXT, Param, QueryArgs, raw_as
from app.core.ratelimit import sensitive
from app.core.schemas import parse_body
from app.extensions import db
from app.jobs import importers, services
from app.jobs.exporters import KINDS
from app.jobs.models import JOB_STATUSES, Job
from app.jobs.schemas import DOWNLOAD_TYPES, FLAG, ExportIn, ExportOut, ImportForm, ImportOut
from app.jobs.storage import CONTENT_TYPES

bp = Blueprint("jobs", __name__)

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


DOWNLOAD_ARGS = QueryArgs(Param("token", TEXT, description="The signed token of download_url."))
# dry_run comes as a query parameter or a form field: the service parses either (app/jobs/services.py).
IMPORT_ARGS = QueryArgs(Param("dry_run", raw_as(FLAG)))


def _accepted(body, location):
    resp = jsonify(body)
    resp.status_code = 202
    resp.headers["Location"] = location
    return resp


@bp.post("/exports")
@roles(*EXPORTERS)
@sensitive
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
    "fee_collection (csv, xlsx; from, to), audit_log (csv, xlsx; from, to; admins). "
    "At most MAX_RUNNING_EXPORTS queued or running per school (429); more than EXPORT_MAX_ROWS "
    "rows is refused (422). Spreadsheet cells that start with = + - @ tab or CR are prefixed "
    "with ' so they are never run as formulas.",
)
def create_export():
    job = services.create_export(parse_body(ExportIn), g.principal)
    return _accepted(services.export_out(job), url_for("jobs.get_export", ident=job.id))


@bp.get("/exports")
@roles(*EXPORTERS)
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
@roles(*EXPORTERS)
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
    resp = send_file(path, mimetype=content_type, as_attachment=True, download_name=filename, max_age=0)
    resp.headers["Cache-Control"] = "private, no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


@bp.post("/imports/students")
@roles("admin")
@sensitive
@doc(
    "Import students from a CSV file (multipart/form-data field `file`, at most IMPORT_MAX_BYTES); "
    "`dry_run=true` only reports what would happen. 202 with the job to poll",
    body=ImportForm,
    media="multipart/form-data",
    out=ImportOut,
    status=202,
    tags=["imports"],
    query=IMPORT_ARGS,
    description="Columns: admission_number, first_name, last_name (required), date_of_birth (YYYY-MM-DD), "
    "gender, grade_level, status, email, class_id. Students are matched on admission number: "
    "new ones are created, known ones updated (empty cells keep the stored value); rows with "
    "errors are reported in the job's result and not written.",
)
def import_students():
    dry_run = IMPORT_ARGS.parse()["dry_run"]
    if dry_run is None:
        dry_run = request.form.get("dry_run")
    job = services.create_import(request.files.get("file"), dry_run, g.principal)
    return _accepted(services.import_out(job), url_for("jobs.get_import", ident=job.id))


@bp.get("/imports/students/template.csv")
@roles("admin")
@doc(
    "An empty student import file with the columns it accepts",
    out={"text/csv": {"type": "string"}},
    tags=["imports"],
)
def import_template():
    return Response(
        importers.template_csv(),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="students-template.csv"'},
    )


@bp.get("/imports/<int:ident>")
@roles("admin")
@doc(
    "An import's status, progress and result (created, updated, unchanged, failed rows with reasons)",
    out=ImportOut,
    tags=["imports"],
)
def get_import(ident):
    return jsonify(services.import_out(services.job_or_404(ident, "import", g.principal)))
