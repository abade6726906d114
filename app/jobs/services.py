"""Export and import jobs: accepting a request (rules, limits, the job row), running it (tasks call
run_export / run_import), downloads by signed link, expiry and the stale-job sweeper.

Who may export what: admin everything; accountant the fee kinds and class rosters; teacher the
attendance, gradebook, report-card and roster exports of classes they teach or lead (another class
answers 404, like a missing one). Jobs are visible to the admins of the school and to whoever asked.
"""

import hashlib
import logging
import uuid
from contextlib import nullcontext
from datetime import date, timedelta

from flask import current_app, url_for
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer
from pydantic import ValidationError
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError

from app.academics.models import Term
from app.access.rules import class_in_scope_or_404, scope_students, teacher_class_ids
from app.audit import services as audit
from app.core.background import enqueue_after_commit
from app.core.errors import ApiError, Forbidden, NotFound, ValidationFailed
from app.core.links import public_url
from app.core.models import as_utc, utcnow
from app.core.schemas import errors_from, parse_date
from app.core.tenancy import current_institution_id
from app.extensions import db
from app.grading import services as grading
from app.institutions.calendar import school_today
from app.jobs import importers, people_import, storage
from app.jobs.exporters import KINDS, write_csv, write_xlsx
from app.jobs.models import Job, StoredFile
from app.jobs.runner import ACTIVE, LockLost, finish, job_lock, mark_failed, running_job
from app.jobs.schemas import MAX_START_AHEAD_DAYS
from app.notifications.services import notify_export_ready
from app.oneroster import csvimport
from app.people.models import Student, Teacher

log = logging.getLogger("schoolhouse.jobs")
SCOPE_KEY = "_scope_class_ids"  # stored with a teacher's params: the classes they may export
# The tasks that run a job (tasks/exports.py, tasks/imports.py), sent by name: tasks import services.
# One import task runs every kind (the job row names it); its name is older than the other kinds.
EXPORT_TASK, IMPORT_TASK = "tasks.exports.run_export", "tasks.imports.run_student_import"
# A subject-access export (app/privacy) is an export job with its own task: the sweeper sends it there.
SUBJECT_ACCESS, SUBJECT_ACCESS_TASK = "subject_access", "tasks.privacy.run_subject_access"
# Every job type's task, for the stale-job sweep (rollover jobs: app/rollover/services.py).
JOB_TASKS = {"export": EXPORT_TASK, "import": IMPORT_TASK, "rollover": "tasks.rollover.run_rollover"}
IMPORTS = {k.name: k for k in (importers.STUDENTS, people_import.TEACHERS, people_import.GUARDIANS)}
ONEROSTER_IMPORT = (
    "oneroster"  # a OneRoster CSV zip (app/oneroster/csvimport.py): its own run, all or nothing
)


# --- serialisation ---------------------------------------------------------------------------------


def _progress(job):
    return {
        "percent": 100 if job.status == "done" else job.progress_percent or 0,
        "rows_done": job.rows_done or 0,
    }


def export_out(job: Job) -> dict:
    result = job.result or {}
    return {
        "id": job.id,
        "kind": job.kind,
        "format": job.format,
        "params": {k: v for k, v in (job.params or {}).items() if k != SCOPE_KEY},
        "status": job.status,
        "progress": _progress(job),
        "row_count": job.row_count,
        "size_bytes": result.get("size_bytes"),
        "attempts": job.attempts,
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "expires_at": job.expires_at,
        "download_url": download_url(job),
    }


def import_out(job: Job) -> dict:
    return {
        "id": job.id,
        "kind": job.kind,
        "dry_run": job.dry_run,
        "status": job.status,
        "progress": _progress(job),
        "row_count": job.row_count,
        "result": job.result,
        "attempts": job.attempts,
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


# --- signed download links -------------------------------------------------------------------------


def _signer():
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="schoolhouse.export-download")


def _mail_signer():
    # The link in the "export ready" e-mail: read later than an API client's link, so it lives as long
    # as the export (EXPORT_TTL) instead of EXPORT_LINK_TTL; its own salt keeps the two apart.
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="schoolhouse.export-mail")


def mail_links(context: dict, institution_id) -> dict:
    """The "export ready" e-mail's download link, signed as the mail is sent (app/notifications/
    services.py mail_context), so the outbox row never holds it; on PUBLIC_BASE_URL."""
    job_id = context.get("job_id")
    if context.get("download_url") or job_id is None:  # a given link, or a context the render refuses
        return {}
    token = _mail_signer().dumps({"job": job_id, "ins": institution_id})
    return {"download_url": public_url("jobs.download_export", ident=job_id, token=token)}


def _link_claims(token):
    cfg = current_app.config
    try:
        return _signer().loads(token, max_age=cfg["EXPORT_LINK_TTL"])
    except SignatureExpired:
        raise
    except BadData:  # not an API link: perhaps the e-mail's
        return _mail_signer().loads(token, max_age=cfg["EXPORT_TTL"])


def sign(job: Job) -> str:
    return _signer().dumps({"job": job.id, "ins": job.institution_id})


def download_url(job: Job):
    if job.status != "done" or (job.expires_at is not None and as_utc(job.expires_at) <= utcnow()):
        return None
    return url_for("jobs.download_export", ident=job.id, token=sign(job), _external=True)


def open_download(ident, token):
    """The token is the credential: signed {job, institution}, valid EXPORT_LINK_TTL seconds."""
    if not token:
        raise NotFound("export")
    try:
        claims = _link_claims(token)
    except SignatureExpired:
        raise ApiError(
            410,
            "This download link has expired; fetch the export again for a fresh link.",
            title="Gone",
            type_="link-expired",
        ) from None
    except BadData:
        raise Forbidden("This download link is not valid.") from None
    if not isinstance(claims, dict) or claims.get("job") != ident or not isinstance(claims.get("ins"), int):
        raise Forbidden("This download link is not valid for this export.")
    job = db.session.execute(
        select(Job).where(Job.id == ident, Job.institution_id == claims["ins"], Job.job_type == "export"),
        execution_options={"skip_tenant": True},
    ).scalar_one_or_none()
    if job is None:
        raise NotFound("export")
    if job.status == "expired" or (job.expires_at is not None and as_utc(job.expires_at) <= utcnow()):
        raise ApiError(
            410,
            "This export has expired and its file was removed; request it again.",
            title="Gone",
            type_="export-expired",
        )
    if job.status != "done" or job.output_file_id is None:
        raise ApiError(409, f"This export is not ready (status: {job.status}).", type_="conflict")
    stored = db.session.execute(
        select(StoredFile).where(
            StoredFile.id == job.output_file_id, StoredFile.institution_id == job.institution_id
        ),
        execution_options={"skip_tenant": True},
    ).scalar_one_or_none()
    path = storage.resolve(stored.path) if stored is not None else None
    if path is None or not path.exists():
        raise ApiError(
            410,
            "This export's file is no longer available; request it again.",
            title="Gone",
            type_="export-expired",
        )
    # Exports are sensitive: who fetched which file, from where, is on the audit trail.
    audit.record("download", "export", job.id, None, institution_id=job.institution_id)
    db.session.commit()
    return path, stored.filename, stored.content_type


# --- accepting an export ---------------------------------------------------------------------------


def _parse_params(kind, raw):
    try:
        return kind.params.model_validate(raw)
    except ValidationError as exc:
        errors = errors_from(exc, kind.params)
        raise ValidationFailed(
            {
                f"params.{k}" if k != "body" else "params": v.removeprefix("Value error, ")
                for k, v in errors.items()
            }
        ) from None


def _check_scope(kind, p, principal):
    """Records the request names must be the caller's to see (404 otherwise); returns a teacher's
    class scope when no class was named."""
    if getattr(p, "class_id", None) is not None:
        class_in_scope_or_404(p.class_id, principal)
    if (
        getattr(p, "term_id", None) is not None
        and db.session.execute(select(Term.id).where(Term.id == p.term_id)).scalar() is None
    ):
        raise ValidationFailed({"params.term_id": f"no such term ({p.term_id})"})
    if getattr(p, "student_id", None) is not None:
        found = db.session.execute(
            scope_students(
                select(Student.id).where(Student.id == p.student_id, Student.deleted_at.is_(None)), principal
            )
        ).scalar()
        if found is None:
            raise NotFound("student")
    teacher_id = getattr(p, "teacher_id", None)
    if teacher_id is not None and (
        (principal.role == "teacher" and teacher_id != principal.teacher_id)
        or db.session.execute(
            select(Teacher.id).where(Teacher.id == teacher_id, Teacher.deleted_at.is_(None))
        ).scalar()
        is None
    ):
        raise NotFound("teacher")  # a teacher exports their own timetable, an admin anyone's
    if kind.class_scoped and principal.role == "teacher" and getattr(p, "class_id", None) is None:
        return teacher_class_ids(principal.teacher_id or -1)
    return None


def estimate_rows(kind, p, scope):
    if kind.build is not None:
        return kind.build(p, scope).estimate()
    # report cards: one per student on the roster
    term = db.session.execute(select(Term).where(Term.id == p.term_id)).scalar_one()
    roster = grading.roster_on(p.class_id, grading.class_day(term, school_today(grading.institution())))
    return db.session.execute(select(func.count()).select_from(roster.subquery())).scalar_one()


def _lock_institution_exports():
    # Two requests at once must not both see "1 running" and both start: serialise per institution.
    if db.session.connection().dialect.name == "postgresql":
        db.session.execute(
            text("SELECT pg_advisory_xact_lock(7305, :iid)"), {"iid": current_institution_id()}
        )


def create_export(body, principal) -> Job:
    kind = KINDS.get(body.kind)
    if kind is None:
        raise ValidationFailed({"kind": f"must be one of {', '.join(KINDS)}"})
    if principal.role not in kind.roles:
        raise Forbidden(f"Your role ({principal.role}) may not export {kind.name}.")
    if body.format not in kind.formats:
        raise ValidationFailed({"format": f"must be one of {', '.join(kind.formats)} for {kind.name}"})
    p = _parse_params(kind, body.params)
    scope = _check_scope(kind, p, principal)
    cfg = current_app.config
    rows = estimate_rows(kind, p, scope)
    if rows > cfg["EXPORT_MAX_ROWS"]:
        raise ValidationFailed(
            {
                "params": f"this export would have about {rows:,} rows, more than "
                f"EXPORT_MAX_ROWS ({cfg['EXPORT_MAX_ROWS']:,}); narrow the dates or "
                f"pick a class"
            }
        )
    _lock_institution_exports()
    active = db.session.execute(
        select(func.count(Job.id)).where(Job.job_type == "export", Job.status.in_(ACTIVE))
    ).scalar_one()
    limit = cfg["MAX_RUNNING_EXPORTS"]
    if active >= limit:
        db.session.rollback()
        raise ApiError(
            429,
            f"This school already has {active} exports queued or running (at most {limit} at "
            f"a time); try again when one has finished.",
            title="Too many exports",
            type_="too-many-exports",
            headers={"Retry-After": "30"},
        )
    params = p.model_dump(mode="json", by_alias=True)
    if scope is not None:
        params[SCOPE_KEY] = scope
    now = utcnow()
    job = Job(
        job_type="export",
        kind=kind.name,
        format=body.format,
        params=params,
        status="queued",
        row_count=rows,
        requested_by_id=principal.user_id,
        attempts=0,
        progress_percent=0,
        rows_done=0,
        created_at=now,
        updated_at=now,
    )
    db.session.add(job)
    db.session.flush()
    audit.record(
        "create",
        "export",
        job.id,
        {"kind": [None, kind.name], "format": [None, body.format], "params": [None, params]},
    )
    enqueue_after_commit(EXPORT_TASK, job.id)
    db.session.commit()
    return job


def visible_jobs(job_type, principal):
    stmt = select(Job).where(Job.job_type == job_type)
    if principal.role != "admin":
        stmt = stmt.where(Job.requested_by_id == principal.user_id)
    return stmt


def job_or_404(ident, job_type, principal) -> Job:
    job = db.session.execute(visible_jobs(job_type, principal).where(Job.id == ident)).scalar_one_or_none()
    if job is None:
        raise NotFound("export" if job_type == "export" else "import")
    return job


# --- running an export (tasks.exports.run_export) ------------------------------------------------------


def _download_name(job):
    return f"{job.kind.replace('_', '-')}-{job.created_at:%Y-%m-%d}-{job.id}.{job.format}"


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_transaction():
    # Exports are background reads: the request-sized statement timeout does not fit them.
    if db.session.connection().dialect.name == "postgresql":
        ms = int(current_app.config["EXPORT_STATEMENT_TIMEOUT_MS"])
        db.session.execute(text(f"SET LOCAL statement_timeout = {ms}"))
        db.session.execute(text(f"SET LOCAL idle_in_transaction_session_timeout = {ms}"))


def write_export(kind, p, scope, fmt, path, progress=None):
    """Write one export to `path`; returns the number of rows (students for report cards)."""
    if fmt == "pdf":
        from app.jobs import pdf  # noqa: PLC0415 - reportlab is heavy: loaded only when a PDF is written

        return getattr(pdf, kind.pdf)(p, path, progress)
    source = kind.build(p, scope)
    if fmt == "zip":  # a package of files (the OneRoster CSV binding) writes itself
        return source.write(path, progress)
    return (write_csv if fmt == "csv" else write_xlsx)(source, path, progress)


def run_export(job_id):
    with running_job(job_id, "export") as run:
        if run is None:
            return None
        job = run.job
        kind = KINDS[job.kind]
        params = dict(job.params or {})
        scope = params.pop(SCOPE_KEY, None)
        p = kind.params.model_validate(params)
        directory = storage.job_dir(job.institution_id, job.id)
        storage.remove_partials(directory)  # we hold the job's lock: any .tmp here is a dead attempt's
        tmp = directory / f"attempt{run.attempt}-{uuid.uuid4().hex[:8]}.{job.format}.tmp"
        try:
            _read_transaction()
            rows = write_export(kind, p, scope, job.format, tmp, run.progress)
            db.session.commit()  # ends the read transaction (and its server-side cursors)
            if run.lock.lost:
                raise LockLost(f"job {job.id}: lock taken over")
            name = _download_name(job)
            final = directory / f"attempt{run.attempt}-{name}"
            size, sha = tmp.stat().st_size, _sha256(tmp)
            storage.publish(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        now = utcnow()
        expires = now + timedelta(seconds=current_app.config["EXPORT_TTL"])
        stored = StoredFile(
            institution_id=job.institution_id,
            path=storage.relative(final),
            filename=name,
            content_type=storage.CONTENT_TYPES[job.format],
            size_bytes=size,
            sha256=sha,
            created_by_id=job.requested_by_id,
            created_at=now,
            expires_at=expires,
        )
        db.session.add(stored)
        db.session.flush()
        if not finish(
            run,
            output_file_id=stored.id,
            row_count=rows,
            rows_done=rows,
            expires_at=expires,
            result={"filename": name, "size_bytes": size, "sha256": sha},
        ):
            db.session.rollback()
            final.unlink(missing_ok=True)
            log.warning(
                "job %s: attempt %s finished after another attempt took over; result discarded",
                job_id,
                run.attempt,
            )
            return None
        _notify_ready(job.id)
        db.session.commit()
        log.info("job %s: export done, %s rows, %s bytes", job_id, rows, size)
        return {"rows": rows, "size_bytes": size}


def _notify_ready(job_id):
    """ "Your export is ready" e-mail, queued in the transaction that marks the job done (the outbox
    dedupes it per job). A problem there must not lose the export: it runs in a savepoint."""
    # pysqlite's savepoints leave the file locked after commit; SQLite is the single-user embedded default
    sqlite = db.session.connection().dialect.name == "sqlite"
    try:
        with nullcontext() if sqlite else db.session.begin_nested():
            notify_export_ready(job_id)
    except Exception:  # noqa: BLE001
        log.exception("job %s: could not queue the export-ready e-mail", job_id)


# --- imports (students, teachers, guardians) ----------------------------------------------------------


def _flag(raw, name):
    if raw is None or raw == "":
        return False
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValidationFailed({name: "must be true or false"})


def _start_date(raw):
    """The first day of the enrolments an import makes: the school's today unless given."""
    today = school_today()
    if raw is None or not raw.strip():
        return today
    day = parse_date(raw.strip(), "start_date")
    if day > today + timedelta(days=MAX_START_AHEAD_DAYS):
        raise ValidationFailed(
            {"start_date": f"must be at most {MAX_START_AHEAD_DAYS} days after today ({today.isoformat()})"}
        )
    return day


def create_import(kind_name, upload, dry_run_raw, principal, start_date_raw=None) -> Job:
    oneroster = kind_name == ONEROSTER_IMPORT
    kind = None if oneroster else IMPORTS[kind_name]
    dry_run = _flag(dry_run_raw, "dry_run")
    params = {}
    if kind is not None and kind.enrols:
        params["start_date"] = _start_date(start_date_raw).isoformat()
    if upload is None or not upload.filename:
        what = "zip" if oneroster else "CSV"
        raise ValidationFailed(
            {"file": f"is required: send the {what} as the multipart/form-data field 'file'"}
        )
    limit = current_app.config["IMPORT_MAX_BYTES"]
    data = upload.stream.read(limit + 1)
    if len(data) > limit:
        raise ApiError(
            413,
            f"The file is larger than {limit:,} bytes; split it into smaller files.",
            errors={"file": f"must be at most {limit:,} bytes"},
        )
    if oneroster:
        count = csvimport.count_rows(data, limit)
        if not count:
            raise ValidationFailed({"file": "has no rows in the files Schoolhouse imports (users.csv, ...)"})
    else:
        importers.check_header(data, kind.columns, kind.required)
        _, rows = importers.read_rows(data)
        if not rows:
            raise ValidationFailed({"file": "has no data rows below the header"})
        count = len(rows)
    iid = current_institution_id()
    now = utcnow()
    ext = "zip" if oneroster else "csv"
    path = storage.job_dir(iid, "uploads") / f"{uuid.uuid4().hex}.{ext}"
    path.write_bytes(data)
    name = (
        (upload.filename or f"{kind_name}.{ext}")
        .replace("/", "_")
        .replace("\\", "_")
        .replace("\x00", "")[-200:]
    )
    stored = StoredFile(
        path=storage.relative(path),
        filename=name,
        content_type="application/zip" if oneroster else "text/csv",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        created_by_id=principal.user_id,
        created_at=now,
        expires_at=now + timedelta(seconds=current_app.config["EXPORT_TTL"]),
    )
    db.session.add(stored)
    db.session.flush()
    job = Job(
        job_type="import",
        kind=kind_name,
        format=ext,
        params={"filename": name, **params},
        dry_run=dry_run,
        status="queued",
        row_count=count,
        input_file_id=stored.id,
        requested_by_id=principal.user_id,
        attempts=0,
        progress_percent=0,
        rows_done=0,
        created_at=now,
        updated_at=now,
    )
    db.session.add(job)
    db.session.flush()
    audit.record(
        "create",
        "import",
        job.id,
        {
            "kind": [None, kind_name],
            "dry_run": [None, dry_run],
            "filename": [None, name],
            "rows": [None, count],
            **{k: [None, v] for k, v in params.items()},
        },
    )
    enqueue_after_commit(IMPORT_TASK, job.id)
    try:
        db.session.commit()
    except Exception:
        path.unlink(missing_ok=True)
        raise
    return job


def _summary(result):
    """The result without its lists (row errors, ids): for the log and the task's return value."""
    return {k: v for k, v in result.items() if not isinstance(v, list)}


def run_import(job_id):
    with running_job(job_id, "import") as run:
        if run is None:
            return None
        job = run.job
        stored = db.session.execute(
            select(StoredFile).where(StoredFile.id == job.input_file_id)
        ).scalar_one_or_none()
        path = storage.resolve(stored.path) if stored is not None else None
        if path is None or not path.exists():
            mark_failed(job.id, "The uploaded file is no longer available; upload it again.")
            return None
        if job.kind == ONEROSTER_IMPORT:
            return _run_oneroster_import(run, path)
        kind = IMPORTS[job.kind]
        today = school_today()  # the school's own "today"
        start = (job.params or {}).get("start_date")
        ctx = importers.Context(
            institution_id=job.institution_id,
            actor_id=job.requested_by_id,
            today=today,
            start_date=date.fromisoformat(start) if start else today,
            dry_run=job.dry_run,
        )
        _, rows = importers.read_rows(path.read_bytes())
        checked = kind.plan(rows, ctx)
        total = len(checked)
        start_row = 0 if job.dry_run else min(job.rows_done or 0, total)
        result = dict(job.result) if (start_row and job.result) else kind.new_result(total)
        size = current_app.config["IMPORT_BATCH_SIZE"]
        for i in range(start_row, total, size):
            batch = checked[i : i + size]
            done = i + len(batch)
            before = {k: (list(v) if isinstance(v, list) else v) for k, v in result.items()}
            try:
                kind.run_batch(batch, ctx, result)
                if job.dry_run:
                    # Nothing a dry run did is kept (the people imports write, to report what only
                    # the database can tell, and are undone here).
                    db.session.rollback()
                    run.progress(done, total)
                    continue
                _save_batch(run, done, total, result)
                db.session.commit()
            except IntegrityError:
                db.session.rollback()  # a concurrent change: this batch is reported, the rest goes on
                result = before
                for line, clean, _ in batch:
                    importers.fail(
                        result,
                        line,
                        {"row": "could not be saved because of a concurrent change; import it again"},
                        **{kind.key: clean.get(kind.key)},
                    )
                if job.dry_run:
                    continue
                _save_batch(run, done, total, result)
                db.session.commit()
        if not finish(run, result=result, rows_done=total, row_count=total):
            db.session.rollback()
            return None
        db.session.commit()
        log.info("job %s: %s import done: %s", job_id, kind.name, _summary(result))
        return _summary(result)


def _run_oneroster_import(run, path):
    """All or nothing (app/oneroster/csvimport.py): any row error, or a dry run, writes nothing."""
    job = run.job
    result = csvimport.run(
        path.read_bytes(),
        current_app.config["IMPORT_MAX_BYTES"],
        job.institution_id,
        job.requested_by_id,
        school_today(),
        job.dry_run,
    )
    if not result["written"]:
        db.session.rollback()
    total = result["rows"]
    if not finish(run, result=result, rows_done=total, row_count=total):
        db.session.rollback()
        return None
    db.session.commit()
    if result["written"] and result["updated"].get("scoreScale"):
        # the letter bands are the institution's settings: not a tenant table, so bumped by name
        current_app.extensions["response_cache"].bump(job.institution_id, {"institutions"})
    log.info("job %s: oneroster import done: %s", job.id, _summary(result))
    return _summary(result)


def _save_batch(run, done, total, result):
    """The batch's rows and the job's running totals commit together: a killed run resumes exactly here."""
    saved = db.session.execute(
        update(Job)
        .where(Job.id == run.job.id, Job.status == "running", Job.attempts == run.attempt)
        .values(
            rows_done=done,
            progress_percent=min(99, int(100 * done / max(total, 1))),
            result=result,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if saved != 1:
        db.session.rollback()
        raise LockLost(f"job {run.job.id}: taken over by another attempt")


# --- housekeeping (beat) -----------------------------------------------------------------------------


def remove_expired_exports(now=None, batch=500) -> dict:
    """Finished exports past EXPORT_TTL: file deleted, job marked expired; uploads past their expiry too.
    Rows first (committed), then the disk: a crash in between leaves a file nobody links to, never a
    link to a missing file."""
    now = now or utcnow()
    unscoped = {"skip_tenant": True}
    counts = {"exports": 0, "files": 0}
    while True:
        jobs = db.session.execute(
            select(Job.id, Job.output_file_id)
            .where(Job.job_type == "export", Job.status == "done", Job.expires_at <= now)
            .limit(batch),
            execution_options=unscoped,
        ).all()
        if not jobs:
            break
        file_ids = [j.output_file_id for j in jobs if j.output_file_id is not None]
        paths = (
            db.session.execute(
                select(StoredFile.path).where(StoredFile.id.in_(file_ids or [-1])), execution_options=unscoped
            )
            .scalars()
            .all()
        )
        db.session.execute(
            update(Job)
            .where(Job.id.in_([j.id for j in jobs]))
            .values(status="expired", output_file_id=None, updated_at=now)
            .execution_options(synchronize_session=False, **unscoped)
        )
        db.session.execute(
            delete(StoredFile)
            .where(StoredFile.id.in_(file_ids or [-1]))
            .execution_options(synchronize_session=False, **unscoped)
        )
        db.session.commit()
        for path in paths:
            storage.remove(path)
        counts["exports"] += len(jobs)
    while True:
        files = db.session.execute(
            select(StoredFile.id, StoredFile.path).where(StoredFile.expires_at <= now).limit(batch),
            execution_options=unscoped,
        ).all()
        if not files:
            break
        db.session.execute(
            delete(StoredFile)
            .where(StoredFile.id.in_([f.id for f in files]))
            .execution_options(synchronize_session=False, **unscoped)
        )
        db.session.commit()
        for f in files:
            storage.remove(f.path)
        counts["files"] += len(files)
    log.info("expired exports removed: %s", counts)
    return counts


def _task_of(job):
    if job.job_type == "export" and job.kind == SUBJECT_ACCESS:
        return SUBJECT_ACCESS_TASK
    return JOB_TASKS[job.job_type]


def requeue_stale_jobs(older_than=None) -> list:
    """Queued or running jobs with no progress for JOB_REQUEUE_AFTER seconds and nobody holding their
    lock are sent again: a message lost with a Redis restart, or a publish that failed while Redis was
    down, or a worker that died with its delivery already gone. The task is idempotent, so sending a job
    that was merely slow costs one lock check."""
    seconds = current_app.config["JOB_REQUEUE_AFTER"] if older_than is None else older_than
    now = utcnow()
    stale = db.session.execute(
        select(Job.id, Job.job_type, Job.kind)
        .where(Job.status.in_(ACTIVE), Job.updated_at <= now - timedelta(seconds=seconds))
        .order_by(Job.id)
        .limit(500),
        execution_options={"skip_tenant": True},
    ).all()
    sent = [(j.id, _task_of(j)) for j in stale if not job_lock(j.id).held_by_anyone()]
    if not sent:
        db.session.rollback()
        return []
    # The clock restarts: the next sweep waits a full period before sending the same job again.
    db.session.execute(
        update(Job)
        .where(Job.id.in_([i for i, _ in sent]))
        .values(updated_at=now)
        .execution_options(synchronize_session=False, skip_tenant=True)
    )
    for ident, task in sent:
        enqueue_after_commit(task, ident)
    db.session.commit()
    log.warning("re-enqueued stale jobs: %s", [i for i, _ in sent])
    return [i for i, _ in sent]
