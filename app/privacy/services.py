"""Privacy: a subject-access export of everything held about a student or a guardian, erasure as
anonymisation, retention of logs and job rows, and the record of disclosures. Written for docs/PRIVACY.md.

Which rows "mention" a person is derived from the schema, not listed by hand: every table with a foreign
key to the person's own table (students or guardians) or to their login (users), the audit log's entries
about them, and any text column (JSON included) holding their e-mail address, phone number or full name
(outbox rows, M-Pesa payments, import results). A new table with such a key is covered without a change
here; the test (tests/test_privacy.py) checks the export against the same metadata.
"""

import hashlib
import json
import logging
import re
import time
import uuid
import zipfile
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal

from flask import current_app, g
from sqlalchemy import JSON, String, Text, and_, cast, delete, false, func, insert, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from app.academics.models import Enrolment, Term
from app.audit import services as audit
from app.auth.services import revoke_user_sessions
from app.core.admission import drain_read_log
from app.core.background import enqueue_after_commit
from app.core.errors import NotFound
from app.core.locks import periodic_lock
from app.core.models import utcnow
from app.core.redisconn import LIMITER_DB, make_client
from app.extensions import db
from app.grading import services as grading
from app.institutions.calendar import school_today
from app.jobs import storage
from app.jobs.models import Job, StoredFile
from app.jobs.runner import FINISHED, finish, mark_failed, running_job
from app.jobs.services import SUBJECT_ACCESS, SUBJECT_ACCESS_TASK, remove_expired_exports
from app.notifications.models import OutboxEmail, OutboxSms
from app.people.models import Guardian, Student, StudentGuardian, User
from app.privacy.models import Disclosure, Erasure

log = logging.getLogger("schoolhouse.privacy")

SUBJECTS = {"student": Student, "guardian": Guardian}
PLACEHOLDER = "[erased]"
# Never exported, whoever asks: credentials and secrets are no personal data of the subject.
SECRET = re.compile(r"(_hash|_enc)$|^(callback_token|secret|password)")
# Tables outside a school, the privacy records themselves (their own rules below), and rows the
# database derives from others (OneRoster's enrollments and classes, kept by triggers, migration 0016).
NOT_SCANNED = {"institutions", "operators", "operator_sessions", "erasures", "oneroster_enrollments",
               "oneroster_classes"}  # fmt: skip
# Columns that name a person without a foreign key (so the record outlives an erasure).
PERSON_COLUMNS = {("disclosures", "student_id"): "students", ("disclosures", "guardian_id"): "guardians"}
# Keys of a JSON object (audit changes, import results, stored answers) that hold personal data.
PERSONAL_KEYS = {
    "first_name",
    "last_name",
    "email",
    "phone",
    "date_of_birth",
    "gender",
    "admission_number",
    "name",
    "student_name",
    "guardian_name",
    "payer_name",
    "msisdn",
    "to",
}
# Keys of money records and unique keys: never rewritten (the person's own row gets its own values below).
UNTOUCHED = {
    ("invoices", "number"),
    ("payments", "reference"),
    ("mpesa_c2b_payments", "trans_id"),
    ("mpesa_stk_requests", "merchant_request_id"),
    ("mpesa_stk_requests", "checkout_request_id"),
    ("mpesa_stk_requests", "receipt_number"),
    ("students", "admission_number"),
    ("users", "email"),
    ("idempotency_keys", "key"),
}
# Free text about the person in rows about them: replaced whole, whatever it says.
NOTES = {
    ("grades", "comment"),
    ("attendance_records", "note"),
    ("report_card_remarks", "text"),
    ("payments", "note"),
    ("mpesa_c2b_payments", "payer_name"),
    ("mpesa_c2b_payments", "msisdn"),
    ("mpesa_stk_requests", "phone"),
}


# --- who a person is, and where they are mentioned ----------------------------------------------------


def person_or_404(subject_type, ident):
    """The student or guardian of the caller's school (deleted ones too: their data is still held)."""
    model = SUBJECTS[subject_type]
    person = db.session.execute(select(model).where(model.id == ident)).scalar_one_or_none()
    if person is None:
        raise NotFound(subject_type)
    return person


def _refs(subject_type, person) -> dict[str, set]:
    refs = {"students": set(), "guardians": set(), "users": set()}
    refs["students" if subject_type == "student" else "guardians"].add(person.id)
    if person.user_id is not None:
        refs["users"].add(person.user_id)
    return refs


def _phones(raw):
    digits = re.sub(r"\D", "", raw or "")
    if len(digits) < 7:
        return set()
    out = {raw.strip(), digits, f"+{digits}"}
    if digits.startswith("254"):  # Kenyan numbers: M-Pesa writes 2547..., people write 07...
        out.add("0" + digits[3:])
    elif digits.startswith("0"):
        out |= {"254" + digits[1:], "+254" + digits[1:]}
    return out


def identifiers(subject_type, person) -> tuple[set, set]:
    """(strong, weak): strings that identify the person anywhere (e-mail, phone, full name), and those
    that do only in a row already about them (a first name alone, an admission number)."""
    strong, weak = set(), set()
    names = [(person.first_name, person.last_name)]
    emails = [person.email]
    if subject_type == "guardian":
        strong |= _phones(person.phone)
    else:
        weak.add(person.admission_number)
    if person.user_id is not None:
        user = db.session.get(User, person.user_id)
        if user is not None:
            names.append((user.first_name, user.last_name))
            emails.append(user.email)
    history = _earlier_values(subject_type, person)
    emails += history.get("email", [])
    if subject_type == "guardian":
        for phone in history.get("phone", []):
            strong |= _phones(phone)
    names += list(zip(history.get("first_name", []), history.get("last_name", []), strict=False))
    weak |= set(history.get("first_name", [])) | set(history.get("last_name", []))
    for first, last in names:
        if first and last:
            strong |= {f"{first} {last}", f"{last} {first}", f"{last}, {first}"}
        weak |= {n for n in (first, last) if n and len(n) > 1}
    strong |= {e for e in emails if e}
    return {s for s in strong if s}, {w for w in weak if w} - strong


def _earlier_values(subject_type, person) -> dict[str, list[str]]:
    """Names, e-mails and phone numbers the person had before (the audit log's diffs about them): they
    identify the person too, in the messages and payments of that time."""
    entries = [(subject_type, person.id)]
    if person.user_id is not None:
        entries.append(("user", person.user_id))
    t = db.metadata.tables["audit_log"]
    rows = db.session.execute(
        select(t.c.changes).where(
            t.c.institution_id == person.institution_id,
            or_(*(and_(t.c.entity_type == e, t.c.entity_id == str(i)) for e, i in entries)),
        )
    ).scalars()
    out: dict[str, list[str]] = defaultdict(list)
    for changes in rows:
        for key in ("first_name", "last_name", "email", "phone"):
            for value in (changes or {}).get(key) or ():
                if isinstance(value, str) and value and value not in out[key]:
                    out[key].append(value)
    return out


def _text_columns(table):
    return [
        c
        for c in table.columns
        if isinstance(c.type, String | Text | JSON) and not c.primary_key and not SECRET.search(c.name)
    ]


def _like_forms(value):
    low = value.lower()
    escaped = json.dumps(low)[1:-1]  # how a JSON column stores it when written with ensure_ascii
    return {low, escaped}


def _contains_any(table, strong) -> list[ColumnElement]:
    conds = []
    for col in _text_columns(table):
        text = func.lower(cast(col, Text) if isinstance(col.type, JSON) else col)
        for value in strong:
            conds += [text.contains(form, autoescape=True) for form in _like_forms(value)]
    return conds


def _linked(table, refs, subject_type, person) -> list[ColumnElement]:
    """Conditions for rows about the person: foreign keys to them or their login, their own row, the
    audit log's entries about them."""
    conds = []
    for col in table.columns:
        target = PERSON_COLUMNS.get((table.name, col.name))
        targets = [target] if target else [fk.column.table.name for fk in col.foreign_keys]
        for name in targets:
            if refs.get(name):
                conds.append(col.in_(sorted(refs[name])))
    own = SUBJECTS[subject_type].__table__
    if table.name == own.name:
        conds.append(table.c.id == person.id)
    if table.name == "users" and refs["users"]:
        conds.append(table.c.id.in_(sorted(refs["users"])))
    if table.name == "audit_log":
        entities = [(subject_type, person.id), *(("user", u) for u in refs["users"])]
        for entity_type, ident in entities:
            conds.append(and_(table.c.entity_type == entity_type, table.c.entity_id == str(ident)))
    return conds


def school_tables():
    """Every table of a school's data (an institution_id), in dependency order."""
    return [
        t for t in db.metadata.sorted_tables if "institution_id" in t.columns and t.name not in NOT_SCANNED
    ]


def _plain(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def mentions(subject_type, person) -> dict[str, list[dict]]:
    """{table: [row, ...]} of every row of the school that mentions the person (secrets left out)."""
    iid = person.institution_id
    refs = _refs(subject_type, person)
    strong, _ = identifiers(subject_type, person)
    out = {}
    for table in school_tables():
        conds = _linked(table, refs, subject_type, person) + _contains_any(table, strong)
        if not conds:
            continue
        cols = [c for c in table.columns if not SECRET.search(c.name)]
        rows = db.session.execute(
            select(*cols)
            .where(table.c.institution_id == iid, or_(*conds))
            .order_by(*table.primary_key.columns)
        ).all()
        if rows:
            out[table.name] = [{c.name: _plain(v) for c, v in zip(cols, row, strict=True)} for row in rows]
    return out


# --- subject access: the export job -------------------------------------------------------------------


def request_subject_access(subject_type, ident, principal) -> Job:
    person_or_404(subject_type, ident)
    now = utcnow()
    job = Job(
        job_type="export",
        kind=SUBJECT_ACCESS,
        format="zip",
        params={"subject": subject_type, "id": ident},
        status="queued",
        requested_by_id=principal.user_id,
        attempts=0,
        progress_percent=0,
        rows_done=0,
        created_at=now,
        updated_at=now,
    )
    db.session.add(job)
    db.session.flush()
    # ids only: the audit trail of a subject-access request holds no personal data
    audit.record("create", "subject_access", job.id, {"subject": [None, subject_type], "id": [None, ident]})
    enqueue_after_commit(SUBJECT_ACCESS_TASK, job.id)
    db.session.commit()
    return job


def _report_card_terms(student_id):
    """The terms, begun by today, that overlap one of the student's enrolments."""
    today = school_today()
    return (
        db.session.execute(
            select(Term)
            .join(
                Enrolment,
                and_(
                    Enrolment.student_id == student_id,
                    Enrolment.start_date <= Term.end_date,
                    or_(Enrolment.end_date.is_(None), Enrolment.end_date >= Term.start_date),
                ),
            )
            .where(Term.start_date <= today)
            .distinct()
            .order_by(Term.start_date)
        )
        .scalars()
        .all()
    )


def _write_documents(zf, directory, student_id) -> list[str]:
    """The student's report cards (one PDF per term) and fee statement, into the zip."""
    from app.jobs import pdf  # noqa: PLC0415 - reportlab is heavy: loaded only when a PDF is written
    from app.jobs.schemas import StudentParams  # noqa: PLC0415 - only with the PDFs

    names = []
    for term in _report_card_terms(student_id):
        card = grading.report_card(student_id, term.id)
        path = directory / f"card-{uuid.uuid4().hex[:8]}.pdf.tmp"
        try:
            pdf.report_card_document([card], path)
            name = f"documents/report-card-term-{term.id}.pdf"
            zf.write(path, name)
            names.append(name)
        finally:
            path.unlink(missing_ok=True)
    path = directory / f"fees-{uuid.uuid4().hex[:8]}.pdf.tmp"
    try:
        pdf.fee_statement(StudentParams(student_id=student_id), path)
        zf.write(path, "documents/fee-statement.pdf")
        names.append("documents/fee-statement.pdf")
    finally:
        path.unlink(missing_ok=True)
    return names


def write_subject_access(subject_type, person, path, directory) -> int:
    data = mentions(subject_type, person)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for table, rows in data.items():
            zf.writestr(f"{table}.json", json.dumps(rows, ensure_ascii=False, indent=1, default=str))
        documents = _write_documents(zf, directory, person.id) if subject_type == "student" else []
        manifest = {
            "subject": subject_type,
            "id": person.id,
            "generated_at": utcnow().isoformat(),
            "tables": {t: len(rows) for t, rows in data.items()},
            "documents": documents,
            "about": "Every row of the school's records that mentions this person, one JSON file per "
            "table; credentials (password and token hashes) are never exported. docs/PRIVACY.md.",
        }
        zf.writestr("manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1))
    return sum(len(rows) for rows in data.values())


def run_subject_access(job_id):
    """tasks.privacy.run_subject_access: write the zip, publish it, mark the job done (safe to rerun:
    the job runner lets one attempt finish)."""
    with running_job(job_id, "export") as run:
        if run is None:
            return None
        job = run.job
        params = job.params or {}
        model = SUBJECTS.get(params.get("subject"))
        person = (
            db.session.execute(select(model).where(model.id == params.get("id"))).scalar_one_or_none()
            if model
            else None
        )
        if person is None:
            mark_failed(job.id, "The person of this request no longer exists.")
            return None
        directory = storage.job_dir(job.institution_id, job.id)
        storage.remove_partials(directory)
        tmp = directory / f"attempt{run.attempt}-{uuid.uuid4().hex[:8]}.zip.tmp"
        name = f"subject-access-{params['subject']}-{person.id}-{job.created_at:%Y-%m-%d}.zip"
        final = directory / f"attempt{run.attempt}-{name}"
        try:
            rows = write_subject_access(params["subject"], person, tmp, directory)
            db.session.commit()
            size, sha = tmp.stat().st_size, hashlib.sha256(tmp.read_bytes()).hexdigest()
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
            content_type=storage.CONTENT_TYPES["zip"],
            size_bytes=size,
            sha256=sha,
            created_by_id=job.requested_by_id,
            created_at=now,
            expires_at=expires,
        )
        db.session.add(stored)
        db.session.flush()
        done = finish(
            run,
            output_file_id=stored.id,
            row_count=rows,
            rows_done=rows,
            expires_at=expires,
            result={"filename": name, "size_bytes": size, "sha256": sha},
        )
        if not done:
            db.session.rollback()
            final.unlink(missing_ok=True)
            return None
        db.session.commit()
        return {"rows": rows, "size_bytes": size}


# --- erasure ------------------------------------------------------------------------------------------


def _allow_audit_changes():
    """The audit log's trigger lets this transaction change or delete rows (migration 0008_privacy)."""
    if db.session.connection().dialect.name == "postgresql":
        db.session.execute(select(func.set_config("schoolhouse.audit_maintenance", "on", True)))


def _pattern(values):
    ordered = sorted(values, key=len, reverse=True)
    return re.compile("|".join(rf"(?<!\w){re.escape(v)}(?!\w)" for v in ordered), re.IGNORECASE)


class _Scrubber:
    def __init__(self, strong, weak):
        self.strong = _pattern(strong) if strong else None
        self.all = _pattern(strong | weak) if strong | weak else None

    def mentions(self, value) -> bool:
        return bool(self.strong and isinstance(value, str) and self.strong.search(value))

    def text(self, value, linked):
        pattern = self.all if linked else self.strong
        if not isinstance(value, str) or pattern is None:
            return value
        return pattern.sub(PLACEHOLDER, value)

    def json(self, value, linked):
        """Strings scrubbed; in an object about the person (a row about them, or one naming them) the
        personal keys are replaced whole, so an earlier name in an audit diff goes too."""
        if isinstance(value, dict):
            about = linked or any(self.mentions(v) for v in value.values() if isinstance(v, str))
            return {
                k: (_erase_value(v) if about and k in PERSONAL_KEYS else self.json(v, about))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.json(v, linked) for v in value]
        return self.text(value, linked)


def _erase_value(value):
    if value is None:
        return None
    if isinstance(value, list):
        return [_erase_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _erase_value(v) for k, v in value.items()}
    return PLACEHOLDER


def _anonymise_person(subject_type, person):
    """The person's own row and login: placeholders, and the login can never be used again."""
    label = "Student" if subject_type == "student" else "Guardian"
    person.first_name, person.last_name, person.email = "Erased", f"{label} {person.id}", None
    if subject_type == "student":
        person.date_of_birth = person.gender = None
        person.admission_number = f"ERASED-{person.id}"
    else:
        person.phone, person.notify_by = None, "email"
    sessions = 0
    if person.user_id is not None:
        user = db.session.get(User, person.user_id)
        if user is not None:
            user.email = f"erased-{user.id}@erased.invalid"
            user.first_name, user.last_name = person.first_name, person.last_name
            user.password_hash = "!erased"  # no password hashes to this
            user.is_active = False
            user.deleted_at = user.deleted_at or utcnow()
            auth_sessions = db.metadata.tables["auth_sessions"]
            sessions = db.session.execute(
                select(func.count())
                .select_from(auth_sessions)
                .where(auth_sessions.c.user_id == user.id, auth_sessions.c.revoked_at.is_(None))
            ).scalar_one()
            revoke_user_sessions(user.id, "erased")
    db.session.flush()
    return sessions


def _scrub_tables(subject_type, person, refs, scrub, strong) -> dict[str, int]:
    iid = person.institution_id
    changed: dict[str, int] = defaultdict(int)
    for table in school_tables():
        linked = _linked(table, refs, subject_type, person)
        matched = _contains_any(table, strong)
        if not linked and not matched:
            continue
        cols = _text_columns(table)
        if not cols:
            continue
        pk = list(table.primary_key.columns)
        about = or_(*linked) if linked else false()
        rows = db.session.execute(
            select(*pk, *cols, about.label("about_person")).where(
                table.c.institution_id == iid, or_(*linked, *matched)
            )
        ).all()
        for row in rows:
            is_about = bool(row[-1])
            values = {}
            for i, col in enumerate(cols):
                old = row[len(pk) + i]
                if (table.name, col.name) in UNTOUCHED:
                    continue
                if (table.name, col.name) in NOTES and is_about and old is not None:
                    new = PLACEHOLDER
                elif isinstance(col.type, JSON):
                    new = scrub.json(old, is_about)
                else:
                    new = scrub.text(old, is_about)
                if new != old:
                    if isinstance(new, str) and getattr(col.type, "length", None):
                        new = new[: col.type.length]
                    values[col.name] = new
            if values:
                db.session.execute(
                    update(table).where(*(c == row[i] for i, c in enumerate(pk))).values(**values)
                )
                changed[table.name] += 1
    return changed


def _close_outbox(strong, iid):
    """Messages to the person's address or number: nothing of them is kept, none is sent any more."""
    emails = {s.lower() for s in strong if "@" in s}
    phones = {s for s in strong if re.fullmatch(r"\+?\d{7,}", s)}
    counts = {}
    if emails:
        counts["email_outbox"] = db.session.execute(
            update(OutboxEmail)
            .where(OutboxEmail.institution_id == iid, func.lower(OutboxEmail.to_address).in_(emails))
            .values(to_address="erased@erased.invalid", subject=PLACEHOLDER, context={})
            .execution_options(synchronize_session=False)
        ).rowcount
        db.session.execute(
            update(OutboxEmail)
            .where(
                OutboxEmail.institution_id == iid,
                OutboxEmail.to_address == "erased@erased.invalid",
                OutboxEmail.status == "pending",
            )
            .values(status="failed", last_error="recipient erased")
            .execution_options(synchronize_session=False)
        )
    if phones:
        counts["sms_outbox"] = db.session.execute(
            update(OutboxSms)
            .where(OutboxSms.institution_id == iid, OutboxSms.to_number.in_(phones))
            .values(to_number="erased", body=PLACEHOLDER)
            .execution_options(synchronize_session=False)
        ).rowcount
        db.session.execute(
            update(OutboxSms)
            .where(
                OutboxSms.institution_id == iid,
                OutboxSms.to_number == "erased",
                OutboxSms.status == "pending",
            )
            .values(status="failed", last_error="recipient erased")
            .execution_options(synchronize_session=False)
        )
    return counts


def _count(model, *where):
    return db.session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def _kept(subject_type, person) -> list[dict]:
    """What stays, and why (in the statement). Counts only: no personal data."""
    # Local names: finance imports people, so this module reads the models through the metadata.
    t = db.metadata.tables
    if subject_type == "student":
        sid = person.id
        rows = [
            ("invoices", t["invoices"].c.student_id == sid),
            ("payments", t["payments"].c.student_id == sid),
            ("mpesa_c2b_payments", t["mpesa_c2b_payments"].c.student_id == sid),
            ("mpesa_stk_requests", t["mpesa_stk_requests"].c.student_id == sid),
            ("enrolments", t["enrolments"].c.student_id == sid),
            ("attendance_records", t["attendance_records"].c.student_id == sid),
            ("grades", t["grades"].c.student_id == sid),
        ]
    else:
        rows = [("student_guardians", t["student_guardians"].c.guardian_id == person.id)]
    counts = {
        name: db.session.execute(select(func.count()).select_from(t[name]).where(cond)).scalar_one()
        for name, cond in rows
    }
    why = {
        "invoices": "legal obligation: the school's accounts; amounts unchanged, so fee totals stay",
        "payments": "legal obligation: money received is kept with its amount and date; notes anonymised",
        "mpesa_c2b_payments": "legal obligation: money received; payer name and phone number anonymised",
        "mpesa_stk_requests": "legal obligation: payment requests; phone number anonymised",
        "enrolments": "the school's counts (class sizes, rolls): linked to the anonymised record only",
        "attendance_records": "the school's statistics: marks kept, notes anonymised",
        "grades": "the school's statistics (class averages, positions): scores kept, comments anonymised",
        "student_guardians": "the child's record keeps that it had a guardian; the guardian is anonymised",
    }
    kept = [{"what": name, "rows": n, "why": why[name]} for name, n in counts.items()]
    kept.append(
        {
            "what": "audit_log",
            "rows": None,
            "why": "the trail of who did what is kept; personal data inside its entries is anonymised",
        }
    )
    kept.append(
        {
            "what": "disclosures",
            "rows": None,
            "why": "the record of who read the person's records is kept (ids only, no personal data)",
        }
    )
    return kept


def erase(subject_type, ident, principal) -> dict:
    """Anonymise a student or guardian everywhere; keep money records and counts; end their access.
    A second call changes nothing and answers the first statement."""
    person = person_or_404(subject_type, ident)
    done = db.session.execute(
        select(Erasure).where(Erasure.subject_type == subject_type, Erasure.subject_id == ident)
    ).scalar_one_or_none()
    if done is not None:
        db.session.rollback()
        return {**done.statement, "already_erased": True}
    refs = _refs(subject_type, person)
    strong, weak = identifiers(subject_type, person)
    _allow_audit_changes()
    outbox = _close_outbox(strong, person.institution_id)
    changed = _scrub_tables(subject_type, person, refs, _Scrubber(strong, weak), strong)
    for name, n in outbox.items():
        changed[name] = max(changed.get(name, 0), n)
    # the person's own rows last: their old values were the identifiers looked for above
    sessions = _anonymise_person(subject_type, person)
    t = db.metadata.tables
    if refs["users"]:
        users = sorted(refs["users"])
        db.session.execute(
            update(t["auth_sessions"]).where(t["auth_sessions"].c.user_id.in_(users)).values(ip=None)
        )
        db.session.execute(update(t["audit_log"]).where(t["audit_log"].c.actor_id.in_(users)).values(ip=None))
    now = utcnow()
    statement = {
        "subject": subject_type,
        "id": person.id,
        "erased_at": now.isoformat(),
        "anonymised": dict(sorted(changed.items())),
        "access_ended": {"login": person.user_id is not None, "sessions_ended": sessions},
        "kept": _kept(subject_type, person),
        "already_erased": False,
    }
    db.session.add(
        Erasure(
            subject_type=subject_type,
            subject_id=person.id,
            performed_by_id=principal.user_id,
            statement=statement,
            created_at=now,
        )
    )
    # the erasure's own audit entry: what and who, never the erased values
    audit.record("erase", subject_type, person.id, None)
    db.session.commit()
    log.info("erased %s %s: %s", subject_type, person.id, statement["anonymised"])
    return statement


# --- retention (beat: tasks.privacy.apply_retention) --------------------------------------------------


def _delete_batches(table, where, batch=5000) -> int:
    total = 0
    pk = table.c.id
    while True:
        ids = list(db.session.execute(select(pk).where(where).limit(batch)).scalars())
        if not ids:
            return total
        if table.name == "audit_log":
            _allow_audit_changes()
        db.session.execute(delete(table).where(pk.in_(ids)))
        db.session.commit()
        total += len(ids)


def _remove_files(file_ids) -> int:
    if not file_ids:
        return 0
    files = db.metadata.tables["files"]
    jobs = db.metadata.tables["jobs"]
    paths = list(db.session.execute(select(files.c.path).where(files.c.id.in_(file_ids))).scalars())
    db.session.execute(
        update(jobs)
        .where(jobs.c.output_file_id.in_(file_ids), jobs.c.status == "done")
        .values(status="expired", updated_at=utcnow())
    )
    db.session.execute(update(jobs).where(jobs.c.output_file_id.in_(file_ids)).values(output_file_id=None))
    db.session.execute(update(jobs).where(jobs.c.input_file_id.in_(file_ids)).values(input_file_id=None))
    db.session.execute(delete(files).where(files.c.id.in_(file_ids)))
    db.session.commit()
    for path in paths:
        storage.remove(path)
    return len(paths)


def apply_retention(now=None) -> dict:
    """Delete what is older than its RETENTION_* setting, every school at once, in batches."""
    cfg = current_app.config
    now = now or utcnow()

    def cutoff(name):
        return now - timedelta(days=cfg[name])

    t = db.metadata.tables
    counts = {}
    audit_log = t["audit_log"]
    counts["audit_log"] = _delete_batches(audit_log, audit_log.c.created_at < cutoff("RETENTION_AUDIT_DAYS"))
    for name in ("email_outbox", "sms_outbox"):
        table = t[name]
        counts[name] = _delete_batches(
            table,
            and_(
                table.c.status.in_(("sent", "failed")), table.c.created_at < cutoff("RETENTION_OUTBOX_DAYS")
            ),
        )
    keys = t["idempotency_keys"]
    counts["idempotency_keys"] = _delete_batches(
        keys, keys.c.created_at < cutoff("RETENTION_IDEMPOTENCY_DAYS")
    )
    jobs = t["jobs"]
    old_jobs = and_(
        jobs.c.status.in_(FINISHED),
        func.coalesce(jobs.c.finished_at, jobs.c.updated_at) < cutoff("RETENTION_JOB_DAYS"),
    )
    counts["jobs"] = 0
    while True:
        rows = db.session.execute(
            select(jobs.c.id, jobs.c.input_file_id, jobs.c.output_file_id).where(old_jobs).limit(1000)
        ).all()
        if not rows:
            break
        db.session.execute(delete(jobs).where(jobs.c.id.in_([r.id for r in rows])))
        db.session.commit()
        _remove_files([f for r in rows for f in (r.input_file_id, r.output_file_id) if f is not None])
        counts["jobs"] += len(rows)
    expired = remove_expired_exports(now)
    files = t["files"]
    old_files = 0
    while True:
        ids = list(
            db.session.execute(
                select(files.c.id).where(files.c.created_at < cutoff("RETENTION_EXPORT_FILE_DAYS")).limit(500)
            ).scalars()
        )
        if not ids:
            break
        old_files += _remove_files(ids)
    counts["files"] = old_files + expired.get("files", 0) + expired.get("exports", 0)
    log.info("retention: %s", counts)
    return counts


# --- the record of disclosures ------------------------------------------------------------------------

STAFF = ("admin", "teacher", "accountant")
# The reads that disclose a student's sensitive records: the student's record with their guardians'
# contacts, and a guardian's contacts (app/people/routes.py). Endpoint -> (id argument's kind, record).
SENSITIVE_READS = {
    "people.get_students": ("student", "student_guardians"),
    "people.get_guardians": ("guardian", "guardian_contacts"),
}


def read_entry(kind, record):
    """The read log's entry for a staff read of a sensitive record (app/core/admission.py appends it in
    the request's one Redis round trip, for an answer from the cache too): a compact JSON line."""

    def entry(principal, view_args):
        if principal.role not in STAFF or principal.institution_id is None:
            return None
        ident = view_args.get("ident")
        return json.dumps(
            [principal.institution_id, principal.user_id, principal.role, kind, ident, record,
             g.get("request_id"), utcnow().isoformat()],
            separators=(",", ":"),
        )  # fmt: skip

    return entry


READ_ENTRIES = {endpoint: read_entry(kind, record) for endpoint, (kind, record) in SENSITIVE_READS.items()}


def store_read_entries(entries):
    """Read-log entries into the disclosures table, in one statement and one commit."""
    rows = []
    for raw in entries:
        iid, actor, role, kind, ident, record, request_id, at = json.loads(raw)
        rows.append(
            {
                "institution_id": iid,
                "actor_id": actor,
                "actor_role": role,
                "student_id": ident if kind == "student" else None,
                "guardian_id": ident if kind == "guardian" else None,
                "record": record,
                "request_id": request_id,
                "created_at": datetime.fromisoformat(at),
            }
        )
    if rows:
        db.session.execute(insert(Disclosure), rows)
        db.session.commit()


def flush_disclosures(wait_s=0.0) -> int:
    """Move the reads Redis holds into the disclosures table, under a lock (one mover at a time); with
    wait_s, wait that long for a mover already at work (the list endpoint: its answer is then complete)."""
    client = make_client(current_app, LIMITER_DB)
    if client is None:
        return 0  # no Redis: every read was stored as it happened
    deadline = time.monotonic() + wait_s
    while True:
        with periodic_lock("privacy_disclosures", 120) as acquired:
            if acquired:
                return drain_read_log(client, store_read_entries)
        if time.monotonic() >= deadline:
            return 0
        time.sleep(0.05)


def disclosures_of(student_id):
    """GET /students/{id}/disclosures: reads of the student's record and of their guardians' contacts."""
    person_or_404("student", student_id)
    flush_disclosures(wait_s=2.0)
    guardians = select(StudentGuardian.guardian_id).where(StudentGuardian.student_id == student_id)
    return select(Disclosure).where(
        or_(Disclosure.student_id == student_id, Disclosure.guardian_id.in_(guardians.scalar_subquery()))
    )


def disclosure_out(row: Disclosure) -> dict:
    return {
        "id": row.id,
        "actor_id": row.actor_id,
        "actor_role": row.actor_role,
        "student_id": row.student_id,
        "guardian_id": row.guardian_id,
        "record": row.record,
        "request_id": row.request_id,
        "created_at": row.created_at,
    }
