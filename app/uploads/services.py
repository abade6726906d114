"""Photos, logos and documents: accepting an upload (its type by content, its size, images re-encoded
without metadata), thumbnails (a task), signed links, and what happens to the files of a deleted person.

Who may do what: admins upload and delete; a student's photo and documents are seen by whoever reaches
the student (app/access/rules.py: the teachers of the student's classes, the student's guardians;
documents not by the student), a teacher's photo by whoever reaches the teacher, the logo by the whole
school. The files themselves are fetched by signed, expiring links, which are their own credential.
Deleting a person: docs/UPLOADS.md ("Deleting a person").
"""

import hashlib
import logging
from datetime import timedelta

from flask import current_app, url_for
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select, update

from app.access.rules import scope_teachers, student_in_scope_or_404
from app.audit import services as audit
from app.core.background import enqueue_after_commit
from app.core.crud import commit_or_conflict, flush_or_conflict
from app.core.errors import ApiError, Forbidden, NotFound, ValidationFailed
from app.core.models import utcnow
from app.core.tenancy import current_institution_id
from app.extensions import db
from app.people.models import Student, Teacher
from app.uploads import images
from app.uploads.models import DOCUMENT_KINDS, LOGO, PHOTO, Upload
from app.uploads.storage import new_key, storage

log = logging.getLogger("schoolhouse.uploads")
THUMBNAIL_TASK = "tasks.uploads.make_thumbnail"
ERASE_TASK = "tasks.uploads.erase_thumbnails"
PHOTO_TYPES = ("JPEG", "PNG", "WEBP")
DOCUMENT_TYPES = ("PDF", "JPEG", "PNG", "WEBP")
ORIGINAL, THUMBNAIL = "o", "t"
OWNERS = {"student": Student, "teacher": Teacher}


# --- serialisation and signed links --------------------------------------------------------------------


def _signer():
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="schoolhouse.upload-link")


def link(upload: Upload, variant=ORIGINAL) -> str:
    token = _signer().dumps({"f": upload.id, "ins": upload.institution_id, "v": variant})
    return url_for("uploads.download_file", ident=upload.id, token=token, _external=True)


def upload_out(upload: Upload) -> dict:
    now = utcnow()
    return {
        "id": upload.id,
        "owner_type": upload.owner_type,
        "owner_id": upload.owner_id,
        "kind": upload.kind,
        "title": upload.title,
        "filename": upload.filename,
        "content_type": upload.content_type,
        "size_bytes": upload.size_bytes,
        "sha256": upload.sha256,
        "width": upload.width,
        "height": upload.height,
        "thumbnail_status": upload.thumbnail_status,
        "url": link(upload),
        "thumbnail_url": link(upload, THUMBNAIL) if upload.thumbnail_status == "done" else None,
        "links_expire_at": now + timedelta(seconds=current_app.config["UPLOAD_LINK_TTL"]),
        "created_at": upload.created_at,
    }


# --- accepting a file ----------------------------------------------------------------------------------


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The file is larger than {limit:,} bytes.",
        errors={"file": f"must be at most {limit:,} bytes"},
    )


def _read(upload, limit: int, accepted: tuple, keep_alpha=False) -> images.Stored:
    """The upload checked (present, within `limit`, of an accepted type by its content) and made ready
    to keep: an image re-encoded without metadata, a PDF as sent."""
    if upload is None or not upload.filename:
        raise ValidationFailed({"file": "is required: send it as the multipart/form-data field 'file'"})
    stream = upload.stream
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    if size > limit:
        raise too_large(limit)
    if size == 0:
        raise ValidationFailed({"file": "is empty"})
    kind = images.identify(stream, upload.filename, upload.mimetype, accepted)
    if kind == "PDF":
        return images.check_pdf(stream, size)
    return images.clean_image(stream, kind, current_app.config["UPLOAD_IMAGE_MAX_SIDE"], keep_alpha)


def _filename(upload, stored: images.Stored) -> str:
    name = "".join(ch if ch >= " " and ch not in "/\\\x7f" else "_" for ch in upload.filename or "file")
    stem = name.rsplit(".", 1)[0][:200] or "file"
    return f"{stem}.{stored.extension}"  # the name says what the kept bytes are (a PNG sent is a JPEG kept)


def _keep(owner_type, owner_id, kind, upload, stored, principal, title=None, replace=False) -> Upload:
    """Write the file, then its row (replacing the owner's earlier photo or logo), audited, committed;
    the thumbnail task is sent after the commit. Nothing half-written: a failed commit removes the file,
    a replaced file is removed only once the commit has succeeded."""
    iid = current_institution_id()
    store = storage()
    key = new_key(iid, stored.extension)
    store.write(key, stored.data)
    old_keys = []
    try:
        if replace:
            for old in db.session.execute(
                select(Upload).where(
                    Upload.owner_type == owner_type, Upload.owner_id == owner_id, Upload.kind == kind
                )
            ).scalars():
                old_keys += [k for k in (old.storage_key, old.thumbnail_key) if k]
                db.session.delete(old)
                audit.record("delete", "upload", old.id, {"replaced": [None, True]})
            db.session.flush()  # the old row goes before the new one takes its place (one per owner)
        row = Upload(
            owner_type=owner_type,
            owner_id=owner_id,
            kind=kind,
            title=title,
            filename=_filename(upload, stored),
            content_type=stored.content_type,
            size_bytes=len(stored.data),
            sha256=hashlib.sha256(stored.data).hexdigest(),
            width=stored.width,
            height=stored.height,
            storage_key=key,
            thumbnail_status="pending" if stored.is_image and kind != LOGO else "none",
            created_by_id=principal.user_id,
            created_at=utcnow(),
        )
        db.session.add(row)
        flush_or_conflict()
        audit.record(
            "create",
            "upload",
            row.id,
            {
                "owner": [None, f"{owner_type}:{owner_id}"],
                "kind": [None, kind],
                "content_type": [None, row.content_type],
                "size_bytes": [None, row.size_bytes],
            },
        )
        if row.thumbnail_status == "pending":
            enqueue_after_commit(THUMBNAIL_TASK, row.id)
        commit_or_conflict()
    except Exception:
        db.session.rollback()
        store.delete(key)
        raise
    for old_key in old_keys:
        store.delete(old_key)
    return row


def save_photo(owner_type, owner, upload, principal) -> Upload:
    stored = _read(upload, current_app.config["PHOTO_MAX_BYTES"], PHOTO_TYPES)
    return _keep(owner_type, owner.id, PHOTO, upload, stored, principal, replace=True)


def save_logo(upload, principal) -> Upload:
    stored = _read(upload, current_app.config["UPLOAD_MAX_BYTES"], PHOTO_TYPES, keep_alpha=True)
    iid = current_institution_id()
    return _keep("institution", iid, LOGO, upload, stored, principal, replace=True)


def add_document(student, upload, kind, title, principal) -> Upload:
    if kind not in DOCUMENT_KINDS:
        raise ValidationFailed({"kind": f"must be one of {', '.join(DOCUMENT_KINDS)}"})
    title = (title or "").strip() or None
    if title is not None and (len(title) > 200 or "\x00" in title):
        raise ValidationFailed({"title": "must be at most 200 characters, without NUL"})
    stored = _read(upload, current_app.config["UPLOAD_MAX_BYTES"], DOCUMENT_TYPES)
    return _keep("student", student.id, kind, upload, stored, principal, title=title)


# --- finding files within reach ------------------------------------------------------------------------


def teacher_in_scope_or_404(teacher_id, principal) -> Teacher:
    stmt = select(Teacher).where(Teacher.id == teacher_id, Teacher.deleted_at.is_(None))
    teacher = db.session.execute(scope_teachers(stmt, principal)).scalar_one_or_none()
    if teacher is None:
        raise NotFound("teacher")
    return teacher


def one_of(owner_type, owner_id, kind, what) -> Upload:
    found = db.session.execute(
        select(Upload).where(
            Upload.owner_type == owner_type, Upload.owner_id == owner_id, Upload.kind == kind
        )
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(what)
    return found


def documents_of(student_id):
    """The statement of a student's documents (the list view pages it, newest first)."""
    return select(Upload).where(
        Upload.owner_type == "student", Upload.owner_id == student_id, Upload.kind.in_(DOCUMENT_KINDS)
    )


def document_or_404(ident, principal) -> Upload:
    """A document of a student the caller reaches; any other (or none) answers 404 alike."""
    doc = db.session.execute(
        select(Upload).where(
            Upload.id == ident, Upload.owner_type == "student", Upload.kind.in_(DOCUMENT_KINDS)
        )
    ).scalar_one_or_none()
    if doc is None:
        raise NotFound("document")
    try:
        student_in_scope_or_404(doc.owner_id, principal)
    except NotFound:
        raise NotFound("document") from None
    return doc


def delete_upload(row: Upload):
    """An explicit erase: the row and its files go (the files once the commit has succeeded)."""
    keys = [k for k in (row.storage_key, row.thumbnail_key) if k]
    db.session.delete(row)
    audit.record("delete", "upload", row.id, {"kind": [row.kind, None]})
    commit_or_conflict()
    store = storage()
    for key in keys:
        store.delete(key)


# --- serving a file by its signed link -----------------------------------------------------------------


def open_file(ident, token):
    """The token is the credential: signed {file, institution, variant}, valid UPLOAD_LINK_TTL seconds.
    Returns (file object, content type, download name, ETag, inline?)."""
    if not token:
        raise NotFound("file")
    try:
        claims = _signer().loads(token, max_age=current_app.config["UPLOAD_LINK_TTL"])
    except SignatureExpired:
        raise ApiError(
            410,
            "This link has expired; fetch the record again for a fresh link.",
            title="Gone",
            type_="link-expired",
        ) from None
    except BadData:
        raise Forbidden("This link is not valid.") from None
    if (
        not isinstance(claims, dict)
        or claims.get("f") != ident
        or not isinstance(claims.get("ins"), int)
        or claims.get("v") not in (ORIGINAL, THUMBNAIL)
    ):
        raise Forbidden("This link is not valid for this file.")
    unscoped = {"skip_tenant": True}  # no caller: the signed institution scopes the lookup
    row = db.session.execute(
        select(Upload).where(Upload.id == ident, Upload.institution_id == claims["ins"]),
        execution_options=unscoped,
    ).scalar_one_or_none()
    owner = OWNERS.get(row.owner_type) if row is not None else None
    if owner is not None:  # a deleted person's files are kept, not served (docs/UPLOADS.md)
        live = db.session.execute(
            select(owner.id).where(owner.id == row.owner_id, owner.deleted_at.is_(None)),
            execution_options=unscoped,
        ).scalar_one_or_none()
        if live is None:
            row = None
    if row is None:
        raise NotFound("file")
    if claims["v"] == THUMBNAIL:
        if row.thumbnail_key is None:
            raise ApiError(
                409, f"This file has no thumbnail (status: {row.thumbnail_status}).", type_="conflict"
            )
        key, content_type, name = row.thumbnail_key, "image/webp", row.filename.rsplit(".", 1)[0] + ".webp"
        etag = f"{row.sha256[:32]}-t"
    else:
        key, content_type, name, etag = row.storage_key, row.content_type, row.filename, row.sha256[:32]
    try:
        fh = storage().open(key)
    except FileNotFoundError:
        raise ApiError(410, "This file is no longer available.", title="Gone", type_="file-gone") from None
    if row.kind in DOCUMENT_KINDS and claims["v"] == ORIGINAL:
        # Documents (birth certificates, medical forms) are sensitive: who fetched which is on the trail.
        audit.record("download", "upload", row.id, None, institution_id=row.institution_id)
        db.session.commit()
    return fh, content_type, name, etag, row.kind not in DOCUMENT_KINDS


# --- thumbnails (the task) -----------------------------------------------------------------------------


def make_thumbnail(upload_id) -> str | None:
    """Make an image's WebP thumbnail (tasks/uploads.py). Safe to run twice: a done thumbnail is kept."""
    row = db.session.execute(
        select(Upload).where(Upload.id == upload_id), execution_options={"skip_tenant": True}
    ).scalar_one_or_none()
    if row is None or row.thumbnail_status != "pending":
        return None if row is None else row.thumbnail_status
    store = storage()
    try:
        with store.open(row.storage_key) as fh:
            data = images.thumbnail(fh.read(), current_app.config["THUMBNAIL_SIDE"])
    except FileNotFoundError:
        log.warning("upload %s: its file is missing; no thumbnail", upload_id)
        data = None
    except OSError:
        log.exception("upload %s: the thumbnail could not be made", upload_id)
        data = None
    if data is None:
        row.thumbnail_status = "failed"
        db.session.commit()
        return "failed"
    key = new_key(row.institution_id, "webp")
    store.write(key, data)
    # Only a row still pending takes it: a photo replaced or erased meanwhile leaves it unused.
    done = db.session.execute(
        update(Upload)
        .where(Upload.id == upload_id, Upload.thumbnail_status == "pending")
        .values(thumbnail_key=key, thumbnail_status="done"),
        execution_options={"skip_tenant": True},
    ).rowcount
    db.session.commit()
    if not done:
        store.delete(key)
        return None
    return "done"


def resend_pending_thumbnails(older_than_s=120) -> int:
    """Beat: send the thumbnail task again for images still pending a while after their upload (the
    message was lost: a Redis restart, a publish while it was down). The task is safe to run twice."""
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    ids = list(
        db.session.execute(
            select(Upload.id)
            .where(Upload.thumbnail_status == "pending", Upload.created_at < cutoff)
            .order_by(Upload.created_at)
            .limit(1000),
            execution_options={"skip_tenant": True},
        ).scalars()
    )
    db.session.commit()  # nothing written: ends the read, so each task is sent now
    for upload_id in ids:
        enqueue_after_commit(THUMBNAIL_TASK, upload_id)
    return len(ids)


# --- a person deleted ----------------------------------------------------------------------------------


def on_person_deleted(owner_type, person):
    """In the deleting transaction (app/people/routes.py): the person's thumbnails are erased after the
    commit; the originals are kept, unserved, until erased (docs/UPLOADS.md)."""
    enqueue_after_commit(ERASE_TASK, owner_type, person.id)


def erase_thumbnails(owner_type, owner_id) -> int:
    """Remove the thumbnails of a deleted person's files (tasks/uploads.py); idempotent."""
    model = OWNERS[owner_type]
    unscoped = {"skip_tenant": True}
    deleted = db.session.execute(
        select(model.id).where(model.id == owner_id, model.deleted_at.is_not(None)),
        execution_options=unscoped,
    ).scalar_one_or_none()
    if deleted is None:  # not deleted (or restored): nothing to erase
        return 0
    rows = (
        db.session.execute(
            select(Upload).where(Upload.owner_type == owner_type, Upload.owner_id == owner_id),
            execution_options=unscoped,
        )
        .scalars()
        .all()
    )
    keys = []
    for row in rows:
        if row.thumbnail_key or row.thumbnail_status == "pending":
            keys += [row.thumbnail_key] if row.thumbnail_key else []
            row.thumbnail_key, row.thumbnail_status = None, "erased"
    db.session.commit()
    store = storage()
    for key in keys:
        store.delete(key)
    return len(keys)


def erase_person_files(owner_type, owner_id, institution_id) -> int:
    """Every file of a deleted person, rows and bytes (`flask uploads erase`): the explicit erase."""
    model = OWNERS[owner_type]
    unscoped = {"skip_tenant": True}
    person = db.session.execute(
        select(model).where(model.id == owner_id, model.institution_id == institution_id),
        execution_options=unscoped,
    ).scalar_one_or_none()
    if person is None:
        raise NotFound(owner_type)
    if person.deleted_at is None:
        raise ValidationFailed({owner_type: "is not deleted: delete them first, then erase their files"})
    rows = (
        db.session.execute(
            select(Upload).where(
                Upload.institution_id == institution_id,
                Upload.owner_type == owner_type,
                Upload.owner_id == owner_id,
            ),
            execution_options=unscoped,
        )
        .scalars()
        .all()
    )
    keys = [k for row in rows for k in (row.storage_key, row.thumbnail_key) if k]
    for row in rows:
        db.session.delete(row)
        audit.record("erase", "upload", row.id, {"kind": [row.kind, None]}, institution_id=institution_id)
    db.session.commit()
    store = storage()
    for key in keys:
        store.delete(key)
    return len(rows)


# --- the logo on PDFs ----------------------------------------------------------------------------------


def logo_bytes(institution_id) -> bytes | None:
    """The school's logo (re-encoded PNG or JPEG), for PDF headers (app/jobs/pdf.py); None without one."""
    key = db.session.execute(
        select(Upload.storage_key).where(
            Upload.institution_id == institution_id,
            Upload.owner_type == "institution",
            Upload.owner_id == institution_id,
            Upload.kind == LOGO,
        ),
        execution_options={"skip_tenant": True},
    ).scalar_one_or_none()
    if key is None:
        return None
    try:
        with storage().open(key) as fh:
            return fh.read()
    except FileNotFoundError:
        log.warning("institution %s: its logo's file is missing", institution_id)
        return None
