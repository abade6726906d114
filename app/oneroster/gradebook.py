"""The OneRoster 1.2 gradebook service, /ims/oneroster/gradebook/v1p2.

categories = assessment types; lineItems = assessments (class: the scheduled class, i.e. the class
subject; gradingPeriod: the term); results = grades; one scoreScale per school (its letter bands).
Writes call the grading services (app/grading/services.py): the same validation, audit rows and cache
invalidation as the native API. A lineItem is created by POST (the binding's sourcedIdPairs name the
sourcedId allocated here); PUT changes an existing one: Schoolhouse allocates its sourcedIds.
"""

from decimal import Decimal, InvalidOperation

from flask import Blueprint, g, request
from sqlalchemy import literal, select, union_all

from app.academics.models import ClassSubject
from app.core.crud import commit_or_conflict
from app.core.errors import ValidationFailed
from app.core.schemas import parse_date
from app.extensions import db
from app.grading import services as grading
from app.grading.models import Assessment, AssessmentType, Grade
from app.grading.schemas import GradeIn
from app.institutions.models import Institution
from app.oneroster.common import BASE, int_of, oneroster_view, org_ref, ref, sid, stamp
from app.oneroster.common import base_of as _base
from app.oneroster.common import rostering_ref as _r
from app.oneroster.common import school_id as _iid
from app.oneroster.query import (
    Collection,
    Field,
    OneRosterError,
    list_answer,
    one_answer,
    register_status_info,
)
from app.oneroster.tombstones import branch, labels, out

bp = Blueprint("oneroster_gradebook", __name__)
register_status_info(bp)
READ = ("gradebook.readonly",)
WRITE = ("gradebook.createput",)
DELETE = ("gradebook.delete",)


def _g(collection, sourced_id, kind):
    return ref("gradebook", collection, sourced_id, kind)


# --- categories ---------------------------------------------------------------------------------------


def _categories_stmt():
    live = select(
        literal(0).label("_t"),
        AssessmentType.id.label("_k"),
        sid("cat", AssessmentType.id).label("sourcedId"),
        literal("active").label("status"),
        AssessmentType.updated_at.label("dlm"),
        AssessmentType.name.label("title"),
        AssessmentType.weight.label("weight"),
    ).where(AssessmentType.institution_id == _iid())
    return union_all(live, branch("categories", _iid(), labels(live)))


CATEGORIES = Collection(
    "categories", "category", _categories_stmt, {**BASE, "title": Field("title")},
    out(lambda row, _: {**_base(row), "title": row["title"], "weight": float(row["weight"])}),
    record_fields=("sourcedId", "status", "dateLastModified", "title", "weight"),
    kinds={"cat": 0},
)  # fmt: skip


# --- score scales -------------------------------------------------------------------------------------


def _scales_stmt():
    return select(
        literal(0).label("_t"),
        Institution.id.label("_k"),
        sid("scale", Institution.id).label("sourcedId"),
        literal("active").label("status"),
        Institution.updated_at.label("dlm"),
        Institution.grading_scale.label("bands"),
    ).where(Institution.id == _iid())


def _scale_out(row, _):
    bands = grading.Scale(row["bands"]).bands
    return {
        **_base(row),
        "title": "Percentage to letter",
        "type": "percentage",
        "school": org_ref(),
        "scoreScaleValue": [{"itemValueLHS": str(low), "itemValueRHS": letter} for low, letter in bands],
    }


SCALES = Collection(
    "scoreScales", "scoreScale", _scales_stmt, BASE, _scale_out,
    record_fields=("sourcedId", "status", "dateLastModified", "title", "type", "school", "scoreScaleValue"),
    kinds={"scale": 0},
)  # fmt: skip


# --- line items ---------------------------------------------------------------------------------------


def _line_items_stmt():
    live = select(
        literal(0).label("_t"),
        Assessment.id.label("_k"),
        sid("li", Assessment.id).label("sourcedId"),
        literal("active").label("status"),
        Assessment.updated_at.label("dlm"),
        Assessment.title.label("title"),
        Assessment.date.label("dueDate"),
        Assessment.max_score.label("max_score"),
        sid("section", Assessment.class_subject_id).label("class_sid"),
        sid("cat", Assessment.assessment_type_id).label("category_sid"),
        sid("term", Assessment.term_id).label("term_sid"),
    ).where(Assessment.institution_id == _iid())
    return union_all(live, branch("lineItems", _iid(), labels(live), {"class_sid": "class_sid"}))


def _line_item_out(row, _):
    return {
        **_base(row),
        "title": row["title"],
        "description": None,
        "assignDate": stamp(row["dueDate"]),
        "dueDate": stamp(row["dueDate"]),
        "class": _r("classes", row["class_sid"], "class"),
        "school": org_ref(),
        "category": _g("categories", row["category_sid"], "category"),
        "gradingPeriod": _r("academicSessions", row["term_sid"], "academicSession"),
        "scoreScale": _g("scoreScales", f"scale-{_iid()}", "scoreScale"),
        "resultValueMin": 0.0,
        "resultValueMax": float(row["max_score"]),
    }


LINE_ITEMS = Collection(
    "lineItems", "lineItem", _line_items_stmt,
    {**BASE, "title": Field("title"), "dueDate": Field("dueDate", "date"), "class.sourcedId": Field("class_sid"),
     "category.sourcedId": Field("category_sid"), "gradingPeriod.sourcedId": Field("term_sid")},
    out(_line_item_out, lambda row: {"class": _r("classes", row["class_sid"], "class"), "school": org_ref()}),
    record_fields=("sourcedId", "status", "dateLastModified", "title", "description", "assignDate", "dueDate",
                   "class", "school", "category", "gradingPeriod", "scoreScale", "resultValueMin",
                   "resultValueMax"),
    kinds={"li": 0},
)  # fmt: skip


# --- results ------------------------------------------------------------------------------------------


def _results_stmt():
    live = (
        select(
            literal(0).label("_t"),
            Grade.id.label("_k"),
            sid("res", Grade.id).label("sourcedId"),
            literal("active").label("status"),
            Grade.updated_at.label("dlm"),
            Grade.score.label("score"),
            Grade.comment.label("comment"),
            sid("li", Grade.assessment_id).label("line_item_sid"),
            sid("student", Grade.student_id).label("student_sid"),
            sid("section", Assessment.class_subject_id).label("class_sid"),
        )
        .join(Assessment, Assessment.id == Grade.assessment_id)
        .where(Grade.institution_id == _iid())
    )
    refs = {"line_item_sid": "line_item_sid", "student_sid": "student_sid", "class_sid": "class_sid"}
    return union_all(live, branch("results", _iid(), labels(live), refs))


def _result_out(row, _):
    return {
        **_base(row),
        "lineItem": _g("lineItems", row["line_item_sid"], "lineItem"),
        "student": _r("users", row["student_sid"], "user"),
        "class": _r("classes", row["class_sid"], "class"),
        "scoreStatus": "fully graded",
        "score": float(row["score"]),
        "scoreDate": stamp(row["dlm"].date()),
        "comment": row["comment"],
    }


RESULTS = Collection(
    "results", "result", _results_stmt,
    {**BASE, "score": Field("score", "number"), "lineItem.sourcedId": Field("line_item_sid"),
     "student.sourcedId": Field("student_sid"), "class.sourcedId": Field("class_sid")},
    out(_result_out, lambda row: {"lineItem": _g("lineItems", row["line_item_sid"], "lineItem"),
                                  "student": _r("users", row["student_sid"], "user"),
                                  "class": _r("classes", row["class_sid"], "class")}),
    record_fields=("sourcedId", "status", "dateLastModified", "lineItem", "student", "class", "scoreStatus",
                   "score", "scoreDate", "comment"),
    kinds={"res": 0},
)  # fmt: skip


# --- reads --------------------------------------------------------------------------------------------


def _route(path, endpoint, scopes, handler, methods=("GET",)):
    bp.add_url_rule(path, endpoint, oneroster_view(*scopes)(handler), methods=list(methods))


for _name, _coll in (("categories", CATEGORIES), ("scoreScales", SCALES), ("lineItems", LINE_ITEMS),
                     ("results", RESULTS)):  # fmt: skip
    _route(f"/{_name}", f"list_{_name}", READ, (lambda c: lambda: list_answer(c))(_coll))
    _route(
        f"/{_name}/<sourced_id>",
        f"get_{_name}",
        READ,
        (lambda c: lambda sourced_id: one_answer(c, sourced_id))(_coll),
    )


def _class_subject_or_404(class_sid) -> ClassSubject:
    ident = int_of(class_sid, "section")
    cs = db.session.get(ClassSubject, ident) if ident is not None else None
    if cs is None:
        # A homeroom class ("class-N") carries no gradebook: its subjects' classes do.
        raise OneRosterError(404, f"No scheduled class with sourcedId {class_sid!r}.", "unknownobject")
    return cs


def _class_line_items(class_id):
    _class_subject_or_404(class_id)
    return list_answer(LINE_ITEMS, [lambda sub: sub.c.class_sid == class_id])


def _class_results(class_id):
    _class_subject_or_404(class_id)
    return list_answer(RESULTS, [lambda sub: sub.c.class_sid == class_id])


def _line_item_results(line_item_id):
    _assessment_or_404(line_item_id)
    return list_answer(RESULTS, [lambda sub: sub.c.line_item_sid == line_item_id])


def _student_results(class_id, student_id):
    _class_subject_or_404(class_id)
    return list_answer(
        RESULTS, [lambda sub: sub.c.class_sid == class_id, lambda sub: sub.c.student_sid == student_id]
    )


_route("/classes/<class_id>/lineItems", "class_line_items", READ, _class_line_items)
_route("/classes/<class_id>/results", "class_results", READ, _class_results)
_route("/lineItems/<line_item_id>/results", "line_item_results", READ, _line_item_results)
_route("/classes/<class_id>/students/<student_id>/results", "class_student_results", READ, _student_results)


# --- writes -------------------------------------------------------------------------------------------


def _payload(key):
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or key not in data:
        raise OneRosterError(400, f'Send a JSON body {{"{key}": ...}}.', "invalid_data")
    return data[key]


def _ref_id(obj, name, prefix, required=True):
    value = obj.get(name)
    sourced = value.get("sourcedId") if isinstance(value, dict) else None
    if sourced is None:
        if required:
            raise OneRosterError(400, f"{name}.sourcedId is required.", "invalid_data")
        return None
    ident = int_of(str(sourced), prefix)
    if ident is None:
        raise OneRosterError(400, f"{name}.sourcedId {sourced!r} is not a {prefix}-… sourcedId of this school.",
                             "invalid_data")  # fmt: skip
    return ident


def _number(obj, name):
    try:
        return Decimal(str(obj[name]))
    except (KeyError, InvalidOperation, ValueError):
        raise OneRosterError(400, f"{name} must be a number.", "invalid_data") from None


def _due(obj):
    raw = obj.get("dueDate") or obj.get("assignDate")
    if not isinstance(raw, str):
        raise OneRosterError(400, "dueDate is required.", "invalid_data")
    return parse_date(raw[:10], "dueDate")


def _line_item_values(item, *, partial=False) -> dict:
    if not isinstance(item, dict):
        raise OneRosterError(400, "A lineItem is an object.", "invalid_data")
    values = {}
    if not partial or "title" in item:
        title = item.get("title")
        if not isinstance(title, str) or not 1 <= len(title) <= 200:
            raise OneRosterError(400, "title: 1 to 200 characters.", "invalid_data")
        values["title"] = title
    if not partial or "category" in item:
        values["assessment_type_id"] = _ref_id(item, "category", "cat")
    if not partial or "gradingPeriod" in item:
        values["term_id"] = _ref_id(item, "gradingPeriod", "term")
    if not partial or "dueDate" in item or "assignDate" in item:
        values["date"] = _due(item)
    if not partial or "resultValueMax" in item:
        top = _number(item, "resultValueMax")
        if not Decimal(0) < top <= Decimal("99999.99"):
            raise OneRosterError(400, "resultValueMax must be above 0.", "invalid_data")
        values["max_score"] = top.quantize(Decimal("0.01"))
    return values


def _assessment_or_404(line_item_sid) -> Assessment:
    ident = int_of(line_item_sid, "li")
    obj = db.session.get(Assessment, ident) if ident is not None else None
    if obj is None:
        raise OneRosterError(404, f"No lineItem with sourcedId {line_item_sid!r}.", "unknownobject")
    return obj


def _class_line_items_post(class_id):
    cs = _class_subject_or_404(class_id)
    items = _payload("lineItems")
    if not isinstance(items, list) or not 1 <= len(items) <= 100:
        raise OneRosterError(400, "lineItems: a list of 1 to 100.", "invalid_data")
    pairs = []
    for item in items:
        values = _line_item_values(item)
        obj = grading.create_assessment({**values, "class_subject_id": cs.id}, g.principal)
        pairs.append({"suppliedSourcedId": item.get("sourcedId"), "allocatedSourcedId": f"li-{obj.id}"})
    commit_or_conflict()
    return {"sourcedIdPairs": pairs}, 201


def _line_item_put(sourced_id):
    obj = _assessment_or_404(sourced_id)
    item = _payload("lineItem")
    values = _line_item_values(item, partial=True)
    if "class" in item and _ref_id(item, "class", "section") != obj.class_subject_id:
        raise OneRosterError(400, "class: a lineItem stays in its class.", "invalid_data")
    grading.update_assessment(obj, db.session.get(ClassSubject, obj.class_subject_id), values, g.principal)
    commit_or_conflict()
    return one_answer(LINE_ITEMS, sourced_id)


def _line_item_delete(sourced_id):
    obj = _assessment_or_404(sourced_id)
    grading.delete_assessment(obj, db.session.get(ClassSubject, obj.class_subject_id), g.principal)
    commit_or_conflict()
    return "", 204


def _grade_rows(assessment, results):
    rows = []
    for r in results:
        if not isinstance(r, dict):
            raise OneRosterError(400, "A result is an object.", "invalid_data")
        line_item = _ref_id(r, "lineItem", "li", required=False)
        if line_item is not None and line_item != assessment.id:
            raise OneRosterError(
                400, "lineItem: a result belongs to the lineItem it is sent to.", "invalid_data"
            )
        fields = {"student_id": _ref_id(r, "student", "student"), "score": _number(r, "score")}
        if "comment" in r:
            fields["comment"] = r["comment"]
        try:
            rows.append(GradeIn.model_validate(fields))
        except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError, answered as invalid_data
            raise OneRosterError(400, f"result: {exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}",
                                 "invalid_data") from None  # fmt: skip
    return rows


def _write_results(assessment, rows, supplied):
    cs = db.session.get(ClassSubject, assessment.class_subject_id)
    try:
        grading.put_grades(assessment, cs, rows, g.principal, answer=False)
    except ValidationFailed as exc:
        raise OneRosterError(
            400, "; ".join(f"{k}: {v}" for k, v in sorted(exc.errors.items())), "invalid_data"
        ) from None
    commit_or_conflict()
    ids = dict(
        db.session.execute(
            select(Grade.student_id, Grade.id).where(
                Grade.assessment_id == assessment.id, Grade.student_id.in_([r.student_id for r in rows])
            )
        ).all()
    )
    return [
        {"suppliedSourcedId": s, "allocatedSourcedId": f"res-{ids[r.student_id]}"}
        for r, s in zip(rows, supplied, strict=True)
    ]


def _line_item_results_post(line_item_id):
    assessment = _assessment_or_404(line_item_id)
    results = _payload("results")
    if not isinstance(results, list) or not 1 <= len(results) <= 1000:
        raise OneRosterError(400, "results: a list of 1 to 1000.", "invalid_data")
    rows = _grade_rows(assessment, results)
    return {"sourcedIdPairs": _write_results(assessment, rows, [r.get("sourcedId") for r in results])}, 201


def _result_put(sourced_id):
    ident = int_of(sourced_id, "res")
    grade = db.session.get(Grade, ident) if ident is not None else None
    if grade is None:
        raise OneRosterError(
            404, f"No result with sourcedId {sourced_id!r}; create results with POST /lineItems/{{id}}/results.",
            "unknownobject",
        )  # fmt: skip
    result = _payload("result")
    if not isinstance(result, dict):
        raise OneRosterError(400, "A result is an object.", "invalid_data")
    result = {"student": {"sourcedId": f"student-{grade.student_id}"}, **result}
    if _ref_id(result, "student", "student") != grade.student_id:
        raise OneRosterError(400, "student: a result stays with its student.", "invalid_data")
    assessment = db.session.get(Assessment, grade.assessment_id)
    _write_results(assessment, _grade_rows(assessment, [result]), [sourced_id])
    return one_answer(RESULTS, sourced_id)


_route("/classes/<class_id>/lineItems", "class_line_items_post", WRITE, _class_line_items_post, ("POST",))
_route("/lineItems/<sourced_id>", "put_lineItems", WRITE, _line_item_put, ("PUT",))
_route("/lineItems/<sourced_id>", "delete_lineItems", DELETE, _line_item_delete, ("DELETE",))
_route(
    "/lineItems/<line_item_id>/results", "line_item_results_post", WRITE, _line_item_results_post, ("POST",)
)
_route("/results/<sourced_id>", "put_results", WRITE, _result_put, ("PUT",))
