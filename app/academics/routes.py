from flask import Blueprint, g, jsonify
from sqlalchemy import Integer, bindparam, select

from app.academics import services
from app.academics.models import AcademicYear, ClassSubject, Enrolment, SchoolClass, Subject, Term
from app.academics.schemas import (
    ClassCreate,
    ClassOut,
    ClassSubjectCreate,
    ClassSubjectOut,
    ClassSubjectUpdate,
    ClassUpdate,
    EnrolmentCreate,
    EnrolmentEnd,
    EnrolmentOut,
    EnrolmentUpdate,
    RosterEntryOut,
    SubjectCreate,
    SubjectOut,
    SubjectUpdate,
    TermCreate,
    TermOut,
    TermUpdate,
    TransferIn,
    TransferOut,
    YearCreate,
    YearOut,
    YearUpdate,
)
from app.access.rules import (
    CLASSES,
    ENROLMENTS,
    class_in_scope_or_404,
    scope_classes,
    scope_enrolments,
    scope_students,
    sees_own_family_only,
    sees_whole_school,
)
from app.core.admission import cached
from app.core.auth import roles
from app.core.caching import LONG
from app.core.crud import CONFLICTS, Resource, commit_or_conflict
from app.core.openapi import doc
from app.core.pagination import Filter, ListSpec, apply_list, page_response, prepared_list
from app.core.queryargs import Kind
from app.core.schemas import parse_body
from app.core.tenancy import execute_reusable
from app.core.warming import register_warm_paths
from app.extensions import db
from app.people.models import Student, Teacher

bp = Blueprint("academics", __name__)


@bp.record_once
def _hot_reads(state):
    """What cache warming fills (app/core/warming.py): the academic lists and every class roster."""
    prefix = state.url_prefix or ""

    def paths(institution_id):
        lists = [f"{prefix}/{name}" for name in ("classes", "subjects", "terms", "academic-years")]
        rosters = [
            f"{prefix}/classes/{cid}/students{query}"
            for cid in services.active_class_ids(institution_id)
            for query in ("", "?limit=50")
        ]
        return lists + rosters

    register_warm_paths(state.app, paths)


CONFLICTS.update(
    {
        "uq_academic_years_institution_name": "An academic year with this name already exists.",
        "uq_terms_year_name": "This year already has a term with this name.",
        "uq_subjects_institution_code": "A subject with this code already exists.",
        "uq_classes_institution_year_grade_section": "This year already has a class with this grade and section.",
        "uq_class_subjects_class_subject": "This subject is already taught in this class.",
        "uq_enrolments_current_student": "The student already has a current enrolment.",
        "ex_enrolments_student_dates": "The student is already enrolled on some of these dates "
        "(a student has at most one enrolment on any date).",
    }
)

# ?current=true|1: current enrolments; any other value: ended ones (the API has always read it so).
_CURRENT = Kind(
    {"type": "string", "description": "true or 1: current enrolments; anything else: ended ones"},
    lambda raw, name: raw.lower() in ("true", "1"),
)

years = Resource(
    "academic year",
    "/academic-years",
    AcademicYear,
    YearOut,
    ListSpec(
        AcademicYear.id,
        filters={"is_current": AcademicYear.is_current},
        sorts={"start_date": AcademicYear.start_date, "name": AcademicYear.name},
    ),
    create=YearCreate,
    update=YearUpdate,
)
terms = Resource(
    "term",
    "/terms",
    Term,
    TermOut,
    ListSpec(
        Term.id,
        filters={"academic_year_id": Term.academic_year_id},
        sorts={"start_date": Term.start_date, "name": Term.name},
    ),
    create=TermCreate,
    update=TermUpdate,
    refs={"academic_year_id": AcademicYear},
)
subjects = Resource(
    "subject",
    "/subjects",
    Subject,
    SubjectOut,
    ListSpec(Subject.id, filters={"code": Subject.code}, sorts={"name": Subject.name, "code": Subject.code}),
    create=SubjectCreate,
    update=SubjectUpdate,
)
classes = Resource(
    "class",
    "/classes",
    SchoolClass,
    ClassOut,
    ListSpec(
        SchoolClass.id,
        filters={
            "academic_year_id": SchoolClass.academic_year_id,
            "grade_level": SchoolClass.grade_level,
            "section": SchoolClass.section,
            "homeroom_teacher_id": SchoolClass.homeroom_teacher_id,
        },
        sorts={"name": SchoolClass.name, "grade_level": SchoolClass.grade_level},
    ),
    create=ClassCreate,
    update=ClassUpdate,
    refs={"academic_year_id": AcademicYear, "homeroom_teacher_id": Teacher},
    scope=scope_classes,
    reach=CLASSES,
    cache_tables=("class_subjects", "enrolments", "student_guardians", "students"),
)
class_subjects = Resource(
    "class subject",
    "/class-subjects",
    ClassSubject,
    ClassSubjectOut,
    ListSpec(
        ClassSubject.id,
        filters={
            "class_id": ClassSubject.class_id,
            "subject_id": ClassSubject.subject_id,
            "teacher_id": ClassSubject.teacher_id,
        },
    ),
    create=ClassSubjectCreate,
    update=ClassSubjectUpdate,
    refs={"class_id": SchoolClass, "subject_id": Subject, "teacher_id": Teacher},
    scope=lambda stmt, p: scope_classes(stmt, p, column=ClassSubject.class_id),
    reach=CLASSES,
    cache_tables=("classes", "enrolments", "student_guardians", "students"),
)
enrolments = Resource(
    "enrolment",
    "/enrolments",
    Enrolment,
    EnrolmentOut,
    ListSpec(
        Enrolment.id,
        filters={
            "student_id": Enrolment.student_id,
            "class_id": Enrolment.class_id,
            "current": Filter(
                _CURRENT,
                lambda s, current: s.where(
                    Enrolment.end_date.is_(None) if current else Enrolment.end_date.isnot(None)
                ),
            ),
        },
        sorts={"start_date": Enrolment.start_date},
    ),
    read_roles=("admin", "teacher", "guardian", "student", "accountant"),
    deletable=False,
    scope=scope_enrolments,
    reach=ENROLMENTS,
    cache_tables=("student_guardians", "class_subjects", "classes", "students"),
)
for resource in (years, terms, subjects, classes, class_subjects, enrolments):
    resource.register(bp)


@bp.post("/enrolments")
@roles("admin", reach=ENROLMENTS)
@doc(
    "Enrol a student in a class (a current enrolment elsewhere is closed: history is kept)",
    body=EnrolmentCreate,
    out=EnrolmentOut,
    status=201,
    tags=["enrolments"],
    description="Open-ended (no end_date): a current enrolment that began earlier is closed the day "
    "before start_date. A student has at most one enrolment on any date: dates shared with another "
    "enrolment are a 409 whose `clashing_enrolment` names it. Backdating is allowed where it overlaps "
    "nothing (give end_date to fill a gap in the history).",
)
def create_enrolment():
    body = parse_body(EnrolmentCreate)
    new = services.enrol(body.student_id, body.class_id, body.start_date, body.reason, body.end_date)
    commit_or_conflict()
    return jsonify(enrolments.serialize(new)), 201


@bp.patch("/enrolments/<int:ident>")
@roles("admin", reach=ENROLMENTS)
@doc(
    "Change an enrolment's dates or reason (e.g. backdate its start)",
    body=EnrolmentUpdate,
    out=EnrolmentOut,
    tags=["enrolments"],
    description="The new dates must overlap no other enrolment of the student (409 naming it).",
)
def update_enrolment(ident):
    enrolment = enrolments.get_or_404(ident)
    values = parse_body(EnrolmentUpdate).model_dump(exclude_unset=True)
    services.change_enrolment(enrolment, values)
    commit_or_conflict()
    return jsonify(enrolments.serialize(enrolment))


@bp.post("/enrolments/<int:ident>/transfer")
@roles("admin", reach=ENROLMENTS)
@doc(
    "Transfer a student to another class on a date: this enrolment ends the day before, a new one starts",
    body=TransferIn,
    out=TransferOut,
    status=201,
    tags=["enrolments"],
    description="One operation, one transaction. A second transfer on the same date (the enrolment "
    "starts that day) or from an enrolment that has already ended is a 409 naming it.",
)
def transfer_enrolment(ident):
    enrolment = enrolments.get_or_404(ident)
    body = parse_body(TransferIn)
    ended, started = services.transfer(enrolment, body.class_id, body.date, body.reason)
    commit_or_conflict()
    return jsonify({"ended": enrolments.serialize(ended), "started": enrolments.serialize(started)}), 201


@bp.post("/enrolments/<int:ident>/end")
@roles("admin", reach=ENROLMENTS)
@doc(
    "End an enrolment (the student leaves the class)",
    body=EnrolmentEnd,
    out=EnrolmentOut,
    tags=["enrolments"],
)
def end_enrolment(ident):
    enrolment = enrolments.get_or_404(ident)
    body = parse_body(EnrolmentEnd)
    services.end_enrolment(enrolment, body.end_date)
    commit_or_conflict()
    return jsonify(enrolments.serialize(enrolment))


ROSTER_SPEC = ListSpec(
    Student.id,
    sorts={"last_name": Student.last_name, "admission_number": Student.admission_number},
    search=(Student.first_name, Student.last_name),
    default_sort="last_name",
)


ROSTER_COLUMNS = (
    Student.id,
    Student.admission_number,
    Student.first_name,
    Student.last_name,
    Student.status,
    Enrolment.id.label("enrolment_id"),
    Enrolment.start_date.label("enrolled_since"),
)


def _roster_base():
    return (
        select(*ROSTER_COLUMNS)
        .join(Enrolment, Enrolment.student_id == Student.id)
        .where(
            Enrolment.class_id == bindparam("class_id", type_=Integer),
            Enrolment.end_date.is_(None),
            Student.deleted_at.is_(None),
        )
    )


@bp.get("/classes/<int:ident>/students")
@roles("admin", "teacher", "accountant", "guardian", "student", reach=CLASSES)
# Every table the roster reads is versioned and it depends on no date, so the TTL bounds memory, not
# staleness: a shorter one only re-reads unchanged rosters (app/core/caching.py).
@cached("students", "enrolments", "classes", "class_subjects", "student_guardians", ttl=LONG)
@doc(
    "The current roster of a class",
    out=RosterEntryOut,
    many=True,
    tags=["classes"],
    query=ROSTER_SPEC,
)
def class_roster(ident):
    p = g.principal
    sees_all = sees_whole_school(p)
    if not sees_all:
        class_in_scope_or_404(ident, p)
    # Plain rows, not ORM objects: the roster is the hottest list and needs no identity map.
    if sees_own_family_only(p):
        # Their own children / themself only: the scope carries per-user values, so built per request.
        stmt, limit, sort, col = apply_list(scope_students(_roster_base(), p), ROSTER_SPEC)
        rows = db.session.execute(stmt, {"class_id": ident}).all()
    else:
        stmt, params, limit, sort, col = prepared_list("roster", _roster_base, ROSTER_SPEC)
        rows = execute_reusable(db.session, stmt, {**params, "class_id": ident})
    if not rows and sees_all:
        class_in_scope_or_404(ident, p)  # an empty page of a class that does not exist is a 404
    return page_response(rows, limit, sort, col, None)
