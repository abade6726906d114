"""Tombstones: OneRoster records whose rows a school deletes outright stay visible as `tobedeleted`.

People and homeroom classes are soft-deleted (their rows stay, with `deleted_at`), so the collections
show them as tobedeleted by themselves. Other rows are deleted for real: an enrolment, a subject taught
in a class, a year or term, a subject, an assessment type, an assessment and its grades (the native API,
the OneRoster gradebook's DELETE, the rollover's undo). Without a trace a delta client
(`filter=dateLastModified>'...'`) would never learn of the deletion. So, in the deleting transaction,
each OneRoster record such a row was (or made up, e.g. the scheduled enrollments of an enrolment) gets
a row in `oneroster_tombstones`: school, collection, sourcedId, deleted_at and the references of its
minimal shape. The REST collections and the delta CSV list them (`branch`, `out`), a GET by sourcedId
finds them, and the nightly job (`prune`) removes those older than ONEROSTER_TOMBSTONE_DAYS.

Found by two session events registered at start-up (`register_tombstones`, from app/__init__.py's
blueprint registration): `before_flush` for ORM deletes (`db.session.delete(obj)`), `do_orm_execute`
for DELETE statements run through the session (`delete(Model).where(...)`). Both read the rows before
they go, on the session's connection, and insert the tombstones there: they commit or roll back with
the delete. A guardian link added or removed changes the `agents` of both users: it moves their
updated_at, so a delta sends both again.
"""

from collections.abc import Iterable
from datetime import timedelta

from flask import current_app
from sqlalchemy import Integer, String, and_, cast, delete, event, literal, null, select, update
from sqlalchemy.orm import Session

from app.academics.models import AcademicYear, ClassSubject, Enrolment, SchoolClass, Subject, Term
from app.core.models import utcnow
from app.core.tenancy import current_institution_id
from app.core.upsert import insert_for
from app.extensions import db
from app.grading.models import Assessment, AssessmentType, Grade
from app.oneroster.common import base_of
from app.oneroster.models import OneRosterTombstone as T
from app.oneroster.query import TOMB
from app.people.models import Guardian, Student, StudentGuardian

# --- what a deleted row was in OneRoster ---------------------------------------------------------------
# Each handler: (connection, ids of rows about to be deleted) -> tombstones (institution, collection,
# sourcedId, data). Rows that go with them by ON DELETE CASCADE are followed (a year's terms, a class
# subject's assessments, an assessment's grades), since the database removes those unseen.


def _enrolments(conn, ids):
    out = []
    rows = conn.execute(
        select(Enrolment.id, Enrolment.institution_id, Enrolment.student_id, Enrolment.class_id).where(
            Enrolment.id.in_(ids)
        )
    ).all()
    sections = _by(
        conn, select(ClassSubject.class_id, ClassSubject.id).where(
            ClassSubject.class_id.in_({r.class_id for r in rows})
        )
    )  # fmt: skip
    for r in rows:
        student = {"role": "student", "user_sid": f"student-{r.student_id}"}
        out.append(
            (r.institution_id, "enrollments", f"enr-{r.id}", {**student, "class_sid": f"class-{r.class_id}"})
        )
        for cs in sections.get(r.class_id, ()):
            out.append((r.institution_id, "enrollments", f"enrs-{r.id}-s-{cs}",
                        {**student, "class_sid": f"section-{cs}"}))  # fmt: skip
    return out


def _class_subjects(conn, ids):
    out = []
    rows = conn.execute(
        select(ClassSubject.id, ClassSubject.institution_id, ClassSubject.class_id, ClassSubject.teacher_id)
        .where(ClassSubject.id.in_(ids))
    ).all()  # fmt: skip
    enrolled = _by(
        conn, select(Enrolment.class_id, Enrolment.id, Enrolment.student_id).where(
            Enrolment.class_id.in_({r.class_id for r in rows})
        ), pairs=True
    )  # fmt: skip
    for r in rows:
        section = f"section-{r.id}"
        out.append((r.institution_id, "classes", section, {"classType": "scheduled"}))
        if r.teacher_id is not None:
            out.append((r.institution_id, "enrollments", f"tenrs-{r.id}",
                        {"role": "teacher", "user_sid": f"teacher-{r.teacher_id}", "class_sid": section}))  # fmt: skip
        for enrolment, student in enrolled.get(r.class_id, ()):
            out.append((r.institution_id, "enrollments", f"enrs-{enrolment}-s-{r.id}",
                        {"role": "student", "user_sid": f"student-{student}", "class_sid": section}))  # fmt: skip
    assessments = conn.execute(select(Assessment.id).where(Assessment.class_subject_id.in_(ids))).scalars()
    return out + _assessments(conn, list(assessments))


def _classes(conn, ids):
    out = []
    for r in conn.execute(
        select(SchoolClass.id, SchoolClass.institution_id, SchoolClass.homeroom_teacher_id).where(
            SchoolClass.id.in_(ids)
        )
    ):
        out.append((r.institution_id, "classes", f"class-{r.id}", {"classType": "homeroom"}))
        if r.homeroom_teacher_id is not None:
            out.append((r.institution_id, "enrollments", f"tenrc-{r.id}",
                        {"role": "teacher", "user_sid": f"teacher-{r.homeroom_teacher_id}",
                         "class_sid": f"class-{r.id}"}))  # fmt: skip
    subjects = list(conn.execute(select(ClassSubject.id).where(ClassSubject.class_id.in_(ids))).scalars())
    enrolments = list(conn.execute(select(Enrolment.id).where(Enrolment.class_id.in_(ids))).scalars())
    return out + _class_subjects(conn, subjects) + _enrolments(conn, enrolments)


def _terms(conn, ids):
    return [
        (r.institution_id, "academicSessions", f"term-{r.id}",
         {"type": "term", "parent_sid": f"year-{r.academic_year_id}"})
        for r in conn.execute(
            select(Term.id, Term.institution_id, Term.academic_year_id).where(Term.id.in_(ids))
        )
    ]  # fmt: skip


def _years(conn, ids):
    out = [
        (r.institution_id, "academicSessions", f"year-{r.id}", {"type": "schoolYear"})
        for r in conn.execute(select(AcademicYear.id, AcademicYear.institution_id).where(AcademicYear.id.in_(ids)))
    ]  # fmt: skip
    terms = conn.execute(select(Term.id).where(Term.academic_year_id.in_(ids))).scalars()
    return out + _terms(conn, list(terms))


def _subjects(conn, ids):
    return [
        (r.institution_id, "courses", f"course-{r.id}", {})
        for r in conn.execute(select(Subject.id, Subject.institution_id).where(Subject.id.in_(ids)))
    ]


def _assessment_types(conn, ids):
    return [
        (r.institution_id, "categories", f"cat-{r.id}", {})
        for r in conn.execute(
            select(AssessmentType.id, AssessmentType.institution_id).where(AssessmentType.id.in_(ids))
        )
    ]


def _assessments(conn, ids):
    if not ids:
        return []
    out = [
        (r.institution_id, "lineItems", f"li-{r.id}", {"class_sid": f"section-{r.class_subject_id}"})
        for r in conn.execute(
            select(Assessment.id, Assessment.institution_id, Assessment.class_subject_id).where(
                Assessment.id.in_(ids)
            )
        )
    ]
    grades = conn.execute(select(Grade.id).where(Grade.assessment_id.in_(ids))).scalars()
    return out + _grades(conn, list(grades))


def _grades(conn, ids):
    if not ids:
        return []
    return [
        (r.institution_id, "results", f"res-{r.id}",
         {"line_item_sid": f"li-{r.assessment_id}", "student_sid": f"student-{r.student_id}",
          "class_sid": f"section-{r.class_subject_id}"})
        for r in conn.execute(
            select(Grade.id, Grade.institution_id, Grade.assessment_id, Grade.student_id,
                   Assessment.class_subject_id)
            .join(Assessment, Assessment.id == Grade.assessment_id)
            .where(Grade.id.in_(ids))
        )
    ]  # fmt: skip


HANDLERS = {
    "enrolments": _enrolments,
    "class_subjects": _class_subjects,
    "classes": _classes,
    "terms": _terms,
    "academic_years": _years,
    "subjects": _subjects,
    "assessment_types": _assessment_types,
    "assessments": _assessments,
    "grades": _grades,
}


def _by(conn, stmt, pairs=False):
    out: dict = {}
    for row in conn.execute(stmt):
        out.setdefault(row[0], []).append(tuple(row[1:]) if pairs else row[1])
    return out


def _write(session, conn, tombstones: Iterable[tuple]):
    now = utcnow()
    rows = {}
    for iid, collection, sourced_id, data in tombstones:  # one per record (cascades may name it twice)
        rows[(iid, collection, sourced_id)] = {
            "institution_id": iid,
            "collection": collection,
            "sourced_id": sourced_id,
            "deleted_at": now,
            "data": data,
        }
    if not rows:
        return
    stmt = insert_for(T, session)
    stmt = stmt.on_conflict_do_update(
        index_elements=["institution_id", "collection", "sourced_id"],
        set_={"deleted_at": stmt.excluded.deleted_at, "data": stmt.excluded.data},
    )
    conn.execute(stmt, list(rows.values()))


def _touch_links(conn, links):
    """A guardian link added or removed: both users' `agents` changed (and a guardian's role may)."""
    if not links:
        return
    now = utcnow()
    conn.execute(update(Student).where(Student.id.in_({s for s, _ in links})).values(updated_at=now))
    conn.execute(update(Guardian).where(Guardian.id.in_({g for _, g in links})).values(updated_at=now))


def _before_flush(session, flush_context, instances):
    deleted: dict[str, list[int]] = {}
    links = set()
    for obj in session.deleted:
        table = getattr(obj, "__tablename__", None)
        if table in HANDLERS:
            deleted.setdefault(table, []).append(obj.id)
        elif isinstance(obj, StudentGuardian):
            links.add((obj.student_id, obj.guardian_id))
    for obj in session.new:
        if isinstance(obj, StudentGuardian):
            links.add((obj.student_id, obj.guardian_id))
    if not deleted and not links:
        return
    conn = session.connection()
    _write(session, conn, [t for table, ids in deleted.items() for t in HANDLERS[table](conn, ids)])
    _touch_links(conn, links)


def _delete_statement(state):
    """`session.execute(delete(Model).where(...))`: the rows it will remove, read first (with the
    school scope app/core/tenancy.py gives the statement)."""
    if not state.is_delete:
        return
    table = getattr(state.statement, "table", None)
    name = getattr(table, "name", None)
    if name not in HANDLERS and name != StudentGuardian.__tablename__:
        return
    conds = [] if state.statement.whereclause is None else [state.statement.whereclause]
    iid = current_institution_id()
    if iid is not None and not state.execution_options.get("skip_tenant"):
        conds.append(table.c.institution_id == iid)
    conn = state.session.connection()
    if name in HANDLERS:
        ids = list(conn.execute(select(table.c.id).where(*conds)).scalars())
        if ids:
            _write(state.session, conn, HANDLERS[name](conn, ids))
    else:
        links = conn.execute(select(table.c.student_id, table.c.guardian_id).where(*conds))
        _touch_links(conn, {tuple(r) for r in links})


def register_tombstones(app):
    if not event.contains(Session, "before_flush", _before_flush):
        event.listen(Session, "before_flush", _before_flush)
        event.listen(Session, "do_orm_execute", _delete_statement)


# --- reading them: a branch of each collection's statement ---------------------------------------------


def branch(collection: str, iid, columns, refs=None):
    """The tombstones of `collection` in the school, as a SELECT with the live branches' `columns`
    (their selected columns, in order): `_t` TOMB, `_k` the tombstone's id, `_k2` 0, status tobedeleted,
    dateLastModified its deleted_at, the labels named in `refs` from its data, the rest NULL of the live
    column's type (a branch wrapped in a SELECT of its own, app/oneroster/query.py, must type its NULLs)."""
    refs = refs or {}
    cols = []
    for column in columns:
        name = column.name
        if name == "_t":
            cols.append(literal(TOMB).label(name))
        elif name == "_k":
            cols.append(T.id.label(name))
        elif name == "_k2":
            cols.append(cast(literal(0), Integer).label(name))
        elif name == "sourcedId":
            cols.append(T.sourced_id.label(name))
        elif name == "status":
            cols.append(literal("tobedeleted").label(name))
        elif name == "dlm":
            cols.append(T.deleted_at.label(name))
        elif name in refs:
            cols.append(cast(T.data[refs[name]].as_string(), String).label(name))
        else:
            cols.append(cast(null(), column.type).label(name))
    return select(*cols).where(and_(T.institution_id == iid, T.collection == collection))


def labels(stmt) -> list:
    """The columns a tombstone branch must match: the live branch's, with their names and types."""
    return list(stmt.selected_columns)


def out(live, shape=None):
    """A collection's record function that answers a tombstone row with the minimal shape: the common
    fields and the references the record is known by (`shape(row)`)."""

    def record(row, extra):
        if row["_t"] != TOMB:
            return live(row, extra)
        return {**base_of(row), **(shape(row) if shape else {})}

    return record


# --- retention ----------------------------------------------------------------------------------------


def prune(now=None) -> int:
    """Delete the tombstones older than ONEROSTER_TOMBSTONE_DAYS, every school at once; their count."""
    cutoff = (now or utcnow()) - timedelta(days=current_app.config["ONEROSTER_TOMBSTONE_DAYS"])
    removed = db.session.execute(delete(T).where(T.deleted_at < cutoff)).rowcount
    db.session.commit()
    return removed or 0
