"""Photos, logos and documents: multipart uploads, their records with signed links, and the files."""

from flask import Blueprint, current_app, g, jsonify, request, send_file

from app.access.rules import DOCUMENTS, STUDENTS, TEACHERS, student_in_scope_or_404
from app.core.auth import ROLES, SCHOOL, public, roles
from app.core.openapi import doc
from app.core.pagination import Choice, ListSpec, list_response
from app.core.queryargs import TEXT, Param, QueryArgs
from app.core.tenancy import current_institution_id
from app.extensions import db
from app.uploads import services
from app.uploads.models import DOCUMENT_KINDS, LOGO, PHOTO, Upload
from app.uploads.schemas import FILE_TYPES, DocumentForm, PhotoForm, UploadOut

bp = Blueprint("uploads", __name__)

MULTIPART = "multipart/form-data"
# The form's other fields and the multipart framing, above the file's own limit.
FORM_SLACK = 64 * 1024
FILE_ARGS = QueryArgs(
    Param("token", TEXT, description="The signed token of the record's url or thumbnail_url.")
)
DOCUMENT_SPEC = ListSpec(Upload.id, filters={"kind": Choice(Upload.kind, DOCUMENT_KINDS)}, default_sort="-id")
_FILE_ERRORS = (
    "The file's type is read from its content, not its name: a file named or sent as a JPEG that is "
    "not one is refused (422, naming `file`), as is a file over the limit (413) — refused from its "
    "Content-Length before it is read."
)


def _file(limit_setting):
    """The multipart field `file`. The request's own body limit becomes the file's limit (instead of
    MAX_CONTENT_LENGTH), and a body announced larger is refused before any of it is read."""
    limit = current_app.config[limit_setting]
    if request.content_length is not None and request.content_length > limit + FORM_SLACK:
        raise services.too_large(limit)
    request.max_content_length = limit + FORM_SLACK  # a chunked body is cut off there (413) as it is read
    return request.files.get("file")


def _out(row, status=200):
    return jsonify(services.upload_out(row)), status


# --- student photos ------------------------------------------------------------------------------------


@bp.put("/students/<int:ident>/photo")
@roles("admin", reach=STUDENTS)
@doc(
    "Upload (or replace) a student's photo (multipart/form-data field `file`, at most PHOTO_MAX_BYTES)",
    body=PhotoForm,
    media=MULTIPART,
    out=UploadOut,
    tags=["uploads"],
    description="The image is kept re-encoded as JPEG, turned upright by its EXIF orientation, at most "
    "UPLOAD_IMAGE_MAX_SIDE pixels a side, with no metadata (EXIF, GPS, XMP); a WebP thumbnail is made in "
    "the background (thumbnail_status pending, then done). " + _FILE_ERRORS,
)
def put_student_photo(ident):
    student = student_in_scope_or_404(ident, g.principal)
    upload = _file("PHOTO_MAX_BYTES")
    return _out(services.save_photo("student", student, upload, g.principal))


@bp.get("/students/<int:ident>/photo")
@roles("admin", "teacher", "guardian", "student", reach=STUDENTS)
@doc(
    "A student's photo: its record, with signed links to the image and its thumbnail",
    out=UploadOut,
    tags=["uploads"],
)
def get_student_photo(ident):
    student = student_in_scope_or_404(ident, g.principal)
    return _out(services.one_of("student", student.id, PHOTO, "photo"))


@bp.delete("/students/<int:ident>/photo")
@roles("admin", reach=STUDENTS)
@doc("Erase a student's photo (the record and its files)", status=204, tags=["uploads"])
def delete_student_photo(ident):
    student = student_in_scope_or_404(ident, g.principal)
    services.delete_upload(services.one_of("student", student.id, PHOTO, "photo"))
    return "", 204


# --- student documents ---------------------------------------------------------------------------------


@bp.post("/students/<int:ident>/documents")
@roles("admin", reach=STUDENTS)
@doc(
    "Add a document to a student's file (multipart/form-data: `file`, `kind`, optional `title`; at most "
    "UPLOAD_MAX_BYTES)",
    body=DocumentForm,
    media=MULTIPART,
    out=UploadOut,
    status=201,
    tags=["uploads"],
    description="kind: birth_certificate, transfer_letter, medical_form or other. A PDF is kept as sent "
    "(its header and end-of-file marker checked); a scanned image is kept re-encoded without metadata, "
    "with a thumbnail. Other types (Word files, archives, executables) are refused. " + _FILE_ERRORS,
)
def add_student_document(ident):
    student = student_in_scope_or_404(ident, g.principal)
    upload = _file("UPLOAD_MAX_BYTES")
    row = services.add_document(
        student, upload, request.form.get("kind"), request.form.get("title"), g.principal
    )
    return _out(row, 201)


@bp.get("/students/<int:ident>/documents")
@roles("admin", "teacher", "guardian", reach=STUDENTS)
@doc("A student's documents, newest first", out=UploadOut, many=True, tags=["uploads"], query=DOCUMENT_SPEC)
def list_student_documents(ident):
    student = student_in_scope_or_404(ident, g.principal)
    return list_response(db.session, services.documents_of(student.id), DOCUMENT_SPEC, services.upload_out)


@bp.get("/documents/<int:ident>")
@roles("admin", "teacher", "guardian", reach=DOCUMENTS)
@doc("One document's record, with a signed link to the file", out=UploadOut, tags=["uploads"])
def get_document(ident):
    return _out(services.document_or_404(ident, g.principal))


@bp.delete("/documents/<int:ident>")
@roles("admin", reach=DOCUMENTS)
@doc("Erase a document (the record and its files)", status=204, tags=["uploads"])
def delete_document(ident):
    services.delete_upload(services.document_or_404(ident, g.principal))
    return "", 204


# --- teacher photos ------------------------------------------------------------------------------------


@bp.put("/teachers/<int:ident>/photo")
@roles("admin", reach=TEACHERS)
@doc(
    "Upload (or replace) a teacher's photo (multipart/form-data field `file`, at most PHOTO_MAX_BYTES)",
    body=PhotoForm,
    media=MULTIPART,
    out=UploadOut,
    tags=["uploads"],
    description="Kept as a student's photo is: re-encoded, upright, without metadata, with a thumbnail. "
    + _FILE_ERRORS,
)
def put_teacher_photo(ident):
    teacher = services.teacher_in_scope_or_404(ident, g.principal)
    upload = _file("PHOTO_MAX_BYTES")
    return _out(services.save_photo("teacher", teacher, upload, g.principal))


@bp.get("/teachers/<int:ident>/photo")
@roles(*ROLES, reach=TEACHERS)
@doc("A teacher's photo: its record, with signed links", out=UploadOut, tags=["uploads"])
def get_teacher_photo(ident):
    teacher = services.teacher_in_scope_or_404(ident, g.principal)
    return _out(services.one_of("teacher", teacher.id, PHOTO, "photo"))


@bp.delete("/teachers/<int:ident>/photo")
@roles("admin", reach=TEACHERS)
@doc("Erase a teacher's photo (the record and its files)", status=204, tags=["uploads"])
def delete_teacher_photo(ident):
    teacher = services.teacher_in_scope_or_404(ident, g.principal)
    services.delete_upload(services.one_of("teacher", teacher.id, PHOTO, "photo"))
    return "", 204


# --- the school's logo ---------------------------------------------------------------------------------


@bp.put("/institution/logo")
@roles("admin", reach=SCHOOL)
@doc(
    "Upload (or replace) the school's logo, printed on report cards (multipart/form-data field `file`, at "
    "most UPLOAD_MAX_BYTES)",
    body=PhotoForm,
    media=MULTIPART,
    out=UploadOut,
    tags=["uploads"],
    description="Kept re-encoded without metadata: PNG when it has transparency, else JPEG. " + _FILE_ERRORS,
)
def put_logo():
    upload = _file("UPLOAD_MAX_BYTES")
    return _out(services.save_logo(upload, g.principal))


@bp.get("/institution/logo")
@roles(*ROLES, reach=SCHOOL)
@doc(
    "The school's logo: its record, with a signed link (404 without one)",
    out=UploadOut,
    tags=["uploads"],
    errors=(404,),
)
def get_logo():
    iid = current_institution_id()
    return _out(services.one_of("institution", iid, LOGO, "logo"))


@bp.delete("/institution/logo")
@roles("admin", reach=SCHOOL)
@doc("Remove the school's logo", status=204, tags=["uploads"], errors=(404,))
def delete_logo():
    services.delete_upload(services.one_of("institution", current_institution_id(), LOGO, "logo"))
    return "", 204


# --- the files -----------------------------------------------------------------------------------------


@bp.get("/files/<int:ident>")
@public
@doc(
    "A photo, logo, thumbnail or document, by the signed link of its record. The `token` is the "
    "credential: 403 if it was tampered with or names another file, 410 once it has expired; a file "
    "of a deleted person, or one erased, is 404",
    out=FILE_TYPES,
    tags=["uploads"],
    query=FILE_ARGS,
    errors=(403, 409, 410),
)
def download_file(ident):
    # No unknown-parameter check: the signed link is opened as given (like an export's).
    fh, content_type, name, etag, inline = services.open_file(ident, request.args.get("token"))
    ttl = current_app.config["UPLOAD_LINK_TTL"]
    resp = send_file(
        fh,
        mimetype=content_type,
        as_attachment=not inline,
        download_name=name,
        etag=etag,
        conditional=True,
        max_age=ttl,
    )
    # The bytes at a file id never change (a new upload is a new id): a browser may keep them as long
    # as the link lives; shared caches never (the link is a credential).
    resp.headers["Cache-Control"] = f"private, max-age={ttl}"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
