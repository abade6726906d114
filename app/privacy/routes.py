"""Privacy (admins only): subject-access exports, erasure, and the record of disclosures."""

from flask import Blueprint, g, jsonify, url_for

from app.access.rules import GUARDIANS, STUDENTS
from app.core.admission import register_read_log
from app.core.auth import roles
from app.core.openapi import doc
from app.core.pagination import ListSpec, list_response
from app.core.schemas import parse_body
from app.extensions import db
from app.jobs.schemas import ExportOut
from app.jobs.services import export_out
from app.privacy import services
from app.privacy.models import Disclosure
from app.privacy.schemas import DisclosureOut, ErasureIn, ErasureOut

bp = Blueprint("privacy", __name__)


@bp.record_once
def _disclosures(state):
    # Staff reads of sensitive records go to the read log in admission's one round trip, for an answer
    # from the cache too (app/core/admission.py); the beat job and the list move them into the table.
    register_read_log(state.app, services.READ_ENTRIES, services.store_read_entries)


DISCLOSURES = ListSpec(Disclosure.id, default_sort="-id")
SAR = (
    "Every row of the school's records that mentions the person (one JSON file per table) and, for a "
    "student, their report cards and fee statement as PDFs; poll the job at Location "
    "(GET /exports/{id}), download by its signed link. docs/PRIVACY.md."
)
ERASE = (
    "Anonymises the person everywhere (names, e-mail, phone, date of birth, notes; outbox messages; "
    "M-Pesa phone numbers; personal data inside the audit log and job results), ends their login and "
    "sessions, keeps money records and counts. Answers what was changed and what was kept and why. "
    "A second call changes nothing. docs/PRIVACY.md."
)


def _accepted(job):
    resp = jsonify(export_out(job))
    resp.status_code = 202
    resp.headers["Location"] = url_for("jobs.get_export", ident=job.id)
    return resp


@bp.post("/students/<int:ident>/subject-access")
@roles("admin", reach=STUDENTS)
@doc(
    "Export everything held about a student (a job)",
    out=ExportOut,
    status=202,
    tags=["privacy"],
    description=SAR,
    body_required=False,
)
def student_subject_access(ident):
    return _accepted(services.request_subject_access("student", ident, g.principal))


@bp.post("/guardians/<int:ident>/subject-access")
@roles("admin", reach=GUARDIANS)
@doc(
    "Export everything held about a guardian (a job)",
    out=ExportOut,
    status=202,
    tags=["privacy"],
    description=SAR,
    body_required=False,
)
def guardian_subject_access(ident):
    return _accepted(services.request_subject_access("guardian", ident, g.principal))


@bp.post("/students/<int:ident>/erasure")
@roles("admin", reach=STUDENTS)
@doc(
    "Erase a student (anonymise; money records and counts kept)",
    body=ErasureIn,
    out=ErasureOut,
    tags=["privacy"],
    description=ERASE,
)
def erase_student(ident):
    services.person_or_404("student", ident)  # another school's person: 404 before the body is read
    parse_body(ErasureIn)
    return jsonify(services.erase("student", ident, g.principal))


@bp.post("/guardians/<int:ident>/erasure")
@roles("admin", reach=GUARDIANS)
@doc(
    "Erase a guardian (anonymise; money records and counts kept)",
    body=ErasureIn,
    out=ErasureOut,
    tags=["privacy"],
    description=ERASE,
)
def erase_guardian(ident):
    services.person_or_404("guardian", ident)  # another school's person: 404 before the body is read
    parse_body(ErasureIn)
    return jsonify(services.erase("guardian", ident, g.principal))


@bp.get("/students/<int:ident>/disclosures")
@roles("admin", reach=STUDENTS)
@doc(
    "Staff reads of a student's sensitive records (their record with guardians' contacts, a guardian's "
    "contacts), newest first",
    out=DisclosureOut,
    many=True,
    tags=["privacy"],
    query=DISCLOSURES,
)
def list_disclosures(ident):
    return list_response(db.session, services.disclosures_of(ident), DISCLOSURES, services.disclosure_out)
