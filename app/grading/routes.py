import re

from flask import Blueprint, g, jsonify
from sqlalchemy import select

from app.academics.models import ClassSubject
from app.access.rules import (
    CLASSES,
    STUDENTS,
    SUBJECTS_TAUGHT,
    class_in_scope_or_404,
    scope_students,
    sees_own_family_only,
    student_in_scope_or_404,
)
from app.core.auth import SCHOOL, roles
from app.core.crud import CONFLICTS, Resource, commit_or_conflict
from app.core.errors import ValidationFailed
from app.core.idempotency import run_idempotent
from app.core.openapi import doc
from app.core.pagination import Filter, ListSpec, apply_list, page_response
from app.core.queryargs import INTEGER, Param, QueryArgs
from app.core.schemas import parse_body
from app.extensions import db
from app.grading import services
from app.grading.models import Assessment, AssessmentType, Grade
from app.grading.schemas import (
    AssessmentCreate,
    AssessmentOut,
    AssessmentTypeCreate,
    AssessmentTypeOut,
    AssessmentTypeUpdate,
    AssessmentUpdate,
    GradeOut,
    GradesIn,
    GradesPutOut,
    RankingOut,
    RemarkIn,
    RemarksSavedOut,
    ReportCardOut,
    TermResultsOut,
)

bp = Blueprint("grading", __name__)

CONFLICTS.update(
    {
        "uq_assessment_types_institution_name": "An assessment type with this name already exists.",
    }
)

GRADE_READERS = ("admin", "teacher", "guardian", "student")  # accountants: finance, not marks
GRADE_WRITERS = ("admin", "teacher")


def _in_class(stmt, class_id):
    return stmt.where(
        Assessment.class_subject_id.in_(select(ClassSubject.id).where(ClassSubject.class_id == class_id))
    )


assessment_types = Resource(
    "assessment type",
    "/assessment-types",
    AssessmentType,
    AssessmentTypeOut,
    ListSpec(AssessmentType.id, filters={"name": AssessmentType.name}, sorts={"name": AssessmentType.name}),
    create=AssessmentTypeCreate,
    update=AssessmentTypeUpdate,
    deletable=False,
).register(bp)


@bp.delete("/assessment-types/<int:ident>")
@roles("admin", reach=SCHOOL)
@doc("Delete an assessment type no assessment uses", status=204, tags=["assessment-types"])
def delete_assessment_type(ident):
    services.delete_assessment_type(assessment_types.get_or_404(ident))
    commit_or_conflict()
    return "", 204


# List and read through the shared resource (scoped to the classes the caller may see); the writes have
# their own rules below.
assessments = Resource(
    "assessment",
    "/assessments",
    Assessment,
    AssessmentOut,
    ListSpec(
        Assessment.id,
        filters={
            "class_subject_id": Assessment.class_subject_id,
            "term_id": Assessment.term_id,
            "assessment_type_id": Assessment.assessment_type_id,
            "class_id": Filter(INTEGER, _in_class),
        },
        sorts={"date": Assessment.date, "title": Assessment.title, "created_at": Assessment.created_at},
    ),
    read_roles=GRADE_READERS,
    scope=services.scope_assessments,
    reach=CLASSES,
    # the scope reads these: a class assigned or a child moved shows at once, not after the TTL
    cache_tables=("class_subjects", "classes", "enrolments", "student_guardians", "students"),
).register(bp)


@bp.post("/assessments")
@roles(*GRADE_WRITERS, reach=SUBJECTS_TAUGHT)
@doc(
    "Create an assessment (admin, or the teacher of the class subject)",
    body=AssessmentCreate,
    out=AssessmentOut,
    status=201,
    tags=["assessments"],
)
def create_assessment():
    body = parse_body(AssessmentCreate)
    obj = services.create_assessment(body.model_dump(), g.principal)
    commit_or_conflict()
    return jsonify(assessments.serialize(obj)), 201


@bp.patch("/assessments/<int:ident>")
@roles(*GRADE_WRITERS, reach=SUBJECTS_TAUGHT)
@doc(
    "Change an assessment (max_score never below a recorded score)",
    body=AssessmentUpdate,
    out=AssessmentOut,
    tags=["assessments"],
)
def update_assessment(ident):
    obj, class_subject = services.assessment_or_404(ident, g.principal)
    body = parse_body(AssessmentUpdate)
    services.update_assessment(obj, class_subject, body.model_dump(exclude_unset=True), g.principal)
    commit_or_conflict()
    return jsonify(assessments.serialize(obj))


@bp.delete("/assessments/<int:ident>")
@roles(*GRADE_WRITERS, reach=SUBJECTS_TAUGHT)
@doc("Delete an assessment and its grades", status=204, tags=["assessments"])
def delete_assessment(ident):
    obj, class_subject = services.assessment_or_404(ident, g.principal)
    services.delete_assessment(obj, class_subject, g.principal)
    commit_or_conflict()
    return "", 204


GRADES_SPEC = ListSpec(Grade.id, filters={"student_id": Grade.student_id})


@bp.get("/assessments/<int:ident>/grades")
@roles(*GRADE_READERS, reach=CLASSES)
@doc(
    "The grades of an assessment (guardians and students: their own children's only)",
    out=GradeOut,
    many=True,
    tags=["assessments"],
    query=GRADES_SPEC,
)
def list_grades(ident):
    obj, _ = services.assessment_or_404(ident, g.principal)
    stmt = services.grades_stmt(obj)
    if sees_own_family_only(g.principal):
        stmt = scope_students(stmt, g.principal, column=Grade.student_id)
    stmt, limit, sort, col = apply_list(stmt, GRADES_SPEC)
    rows = db.session.execute(stmt).all()
    return page_response(rows, limit, sort, col, services.grade_serializer(obj), keyed=lambda row: row[0])


def _bracketed(errors: dict) -> dict:
    # "grades.2.score" -> "grades[2].score": the row as a client indexes it
    return {re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", k): v for k, v in errors.items()}


@bp.put("/assessments/<int:ident>/grades")
@roles(*GRADE_WRITERS, reach=SUBJECTS_TAUGHT)
@doc(
    "Enter or correct scores in bulk: every row valid or nothing written; honours Idempotency-Key",
    body=GradesIn,
    out=GradesPutOut,
    tags=["assessments"],
    idempotent=True,
)
def put_grades(ident):
    obj, class_subject = services.assessment_or_404(ident, g.principal)
    services.require_write(class_subject, g.principal)
    try:
        body = parse_body(GradesIn)
    except ValidationFailed as exc:
        raise ValidationFailed(_bracketed(exc.errors)) from None
    payload = body.model_dump(exclude_unset=True)
    return run_idempotent(
        f"PUT /assessments/{ident}/grades",
        payload,
        lambda: (services.put_grades(obj, class_subject, body.grades, g.principal), 200),
    )


TERM_ARGS = QueryArgs(Param("term_id", INTEGER, required=True, rule="a term of the school"))


def _term_id() -> int:
    return TERM_ARGS.parse()["term_id"]


@bp.get("/students/<int:ident>/results")
@roles(*GRADE_READERS, reach=STUDENTS)
@doc(
    "A student's term results: weighted average per subject, overall average, letters",
    out=TermResultsOut,
    tags=["students"],
    query=TERM_ARGS,
)
def student_results(ident):
    student_in_scope_or_404(ident, g.principal)
    return jsonify(services.student_results(ident, _term_id()))


@bp.get("/students/<int:ident>/report-card")
@roles(*GRADE_READERS, reach=STUDENTS)
@doc(
    "Report-card data for a term: results with teachers, class position, attendance totals",
    out=ReportCardOut,
    tags=["students"],
    query=TERM_ARGS,
)
def student_report_card(ident):
    student_in_scope_or_404(ident, g.principal)
    return jsonify(services.report_card(ident, _term_id()))


@bp.put("/students/<int:ident>/report-card/remarks")
@roles("admin", "teacher", reach=STUDENTS)
@doc(
    "Write a report-card remark for a term: a subject comment, the class teacher's or the head's remarks",
    body=RemarkIn,
    out=RemarksSavedOut,
    tags=["students"],
    description="kind subject: the subject's teacher in the student's class (or an admin); "
    "class_teacher: the class's homeroom teacher (or an admin); head: an admin. text null removes it.",
)
def put_report_remark(ident):
    student_in_scope_or_404(ident, g.principal)
    body = parse_body(RemarkIn)
    out = services.set_remark(ident, body, g.principal)
    commit_or_conflict()
    return jsonify(out)


@bp.get("/classes/<int:ident>/ranking")
@roles("admin", "teacher", reach=CLASSES)
@doc(
    "A class's students ranked by their term average (ties share a position)",
    out=RankingOut,
    tags=["classes"],
    query=TERM_ARGS,
)
def class_ranking(ident):
    class_in_scope_or_404(ident, g.principal)
    return jsonify(services.class_ranking(ident, _term_id()))
