"""The OneRoster 1.2 rostering service, /ims/oneroster/rostering/v1p2 (read only, as the binding is).

The mapping (docs/ONEROSTER.md): the school is the org; academic years and their terms are
academicSessions (schoolYear, term); subjects are courses (plus one "Homeroom" course); a class is a
homeroom class (a Schoolhouse class: grade + section) or a scheduled class (a subject taught in a
class); students, teachers, guardians (role parent or guardian, linked through `agents`) and admins
are users; an enrolment gives a student one enrollment in the homeroom class and one in each of its
subjects, and a class's (subject) teacher has a primary teacher enrollment. Each collection is one SQL
statement (a UNION ALL of its kinds of record, always filtered to the caller's school), so filters,
sorts and paging are SQL (app/oneroster/query.py).
"""

from collections import defaultdict

from flask import Blueprint
from sqlalchemy import (
    Boolean,
    Integer,
    String,
    and_,
    case,
    cast,
    exists,
    literal,
    null,
    or_,
    select,
    union_all,
)

from app.academics.models import AcademicYear, Subject, Term
from app.extensions import db
from app.institutions.models import Institution
from app.oneroster.common import (
    BASE,
    grade_codes,
    int_of,
    oneroster_view,
    org_ref,
    org_sid,
    sid,
    stamp,
    status_of,
)
from app.oneroster.common import base_of as _base
from app.oneroster.common import rostering_ref as _r
from app.oneroster.common import school_id as _iid
from app.oneroster.models import OneRosterClass, OneRosterEnrollment
from app.oneroster.query import (
    Collection,
    Field,
    OneRosterError,
    equals,
    list_answer,
    one_answer,
    register_status_info,
)
from app.oneroster.tombstones import branch, labels, out
from app.people.models import Guardian, Student, StudentGuardian, Teacher, User

bp = Blueprint("oneroster_rostering", __name__)
register_status_info(bp)
ROSTER = ("roster-core.readonly", "roster.readonly")
DEMOGRAPHICS = ("roster-demographics.readonly", "roster.readonly")
PARENT_RELATIONSHIPS = ("mother", "father", "parent")


# --- orgs ---------------------------------------------------------------------------------------------


def _orgs_stmt():
    return select(
        literal(0).label("_t"),
        Institution.id.label("_k"),
        sid("org", Institution.id).label("sourcedId"),
        literal("active").label("status"),
        Institution.updated_at.label("dlm"),
        Institution.name.label("name"),
        Institution.slug.label("identifier"),
        literal("school").label("type"),
    ).where(Institution.id == _iid())


def _org_out(row, _):
    # No district is recorded for a school yet: the school is the top of its tree.
    return {**_base(row), "name": row["name"], "type": row["type"], "identifier": row["identifier"],
            "parent": None, "children": []}  # fmt: skip


ORGS = Collection(
    "orgs", "org", _orgs_stmt,
    {**BASE, "name": Field("name"), "type": Field("type"), "identifier": Field("identifier")},
    _org_out,
    record_fields=("sourcedId", "status", "dateLastModified", "name", "type", "identifier", "parent", "children"),
    kinds={"org": 0},
)  # fmt: skip
SCHOOLS = Collection(
    "orgs", "org", _orgs_stmt, ORGS.fields, _org_out, record_fields=ORGS.record_fields, kinds=ORGS.kinds
)


# --- academic sessions --------------------------------------------------------------------------------


def _sessions_stmt():
    iid = _iid()
    years = select(
        literal(0).label("_t"),
        AcademicYear.id.label("_k"),
        sid("year", AcademicYear.id).label("sourcedId"),
        literal("active").label("status"),
        AcademicYear.updated_at.label("dlm"),
        AcademicYear.name.label("title"),
        AcademicYear.start_date.label("startDate"),
        AcademicYear.end_date.label("endDate"),
        literal("schoolYear").label("type"),
        cast(null(), String).label("parent_sid"),
        AcademicYear.id.label("year_id"),
        AcademicYear.end_date.label("year_end"),
    ).where(AcademicYear.institution_id == iid)
    terms = (
        select(
            literal(1).label("_t"),
            Term.id.label("_k"),
            sid("term", Term.id).label("sourcedId"),
            literal("active").label("status"),
            Term.updated_at.label("dlm"),
            Term.name.label("title"),
            Term.start_date.label("startDate"),
            Term.end_date.label("endDate"),
            literal("term").label("type"),
            sid("year", Term.academic_year_id).label("parent_sid"),
            Term.academic_year_id.label("year_id"),
            AcademicYear.end_date.label("year_end"),
        )
        .join(AcademicYear, AcademicYear.id == Term.academic_year_id)
        .where(Term.institution_id == iid)
    )
    gone = branch("academicSessions", iid, labels(years), {"type": "type", "parent_sid": "parent_sid"})
    return union_all(years, terms, gone)


def _sessions_enrich(rows):
    years = [r["_k"] for r in rows if r["_t"] == 0]
    children = defaultdict(list)
    if years:
        for tid, yid in db.session.execute(
            select(Term.id, Term.academic_year_id)
            .where(Term.academic_year_id.in_(years))
            .order_by(Term.start_date)
        ):
            children[yid].append(f"term-{tid}")
    return children


def _session_out(row, children):
    return {
        **_base(row),
        "title": row["title"],
        "startDate": stamp(row["startDate"]),
        "endDate": stamp(row["endDate"]),
        "type": row["type"],
        "parent": _r("academicSessions", row["parent_sid"], "academicSession"),
        "children": [_r("academicSessions", c, "academicSession") for c in children.get(row["_k"], [])]
        if row["_t"] == 0
        else [],
        "schoolYear": str(row["year_end"].year),
        "org": org_ref(),
    }


SESSION_FIELDS = {
    **BASE,
    "title": Field("title"),
    "type": Field("type"),
    "startDate": Field("startDate", "date"),
    "endDate": Field("endDate", "date"),
    "parent.sourcedId": Field("parent_sid"),
}
SESSION_RECORD = ("sourcedId", "status", "dateLastModified", "title", "startDate", "endDate", "type", "parent",
                  "children", "schoolYear", "org")  # fmt: skip
_session_record = out(_session_out, lambda row: {
    "type": row["type"], "parent": _r("academicSessions", row["parent_sid"], "academicSession")})  # fmt: skip
SESSIONS = Collection("academicSessions", "academicSession", _sessions_stmt, SESSION_FIELDS, _session_record,
                      _sessions_enrich, SESSION_RECORD, {"year": 0, "term": 1})  # fmt: skip
TERMS = Collection("academicSessions", "academicSession", _sessions_stmt, SESSION_FIELDS, _session_record,
                   _sessions_enrich, SESSION_RECORD, {"term": 1})  # fmt: skip


def _of_type(kind):  # the terms (or gradingPeriods) of the sessions, tombstones of terms included
    return [lambda sub: sub.c.type == kind]


# --- courses ------------------------------------------------------------------------------------------


def _courses_stmt():
    iid = _iid()
    subjects = select(
        literal(0).label("_t"),
        Subject.id.label("_k"),
        sid("course", Subject.id).label("sourcedId"),
        literal("active").label("status"),
        Subject.updated_at.label("dlm"),
        Subject.name.label("title"),
        Subject.code.label("courseCode"),
    ).where(Subject.institution_id == iid)
    homeroom = select(
        literal(1).label("_t"),
        literal(0).label("_k"),
        literal("course-homeroom").label("sourcedId"),
        literal("active").label("status"),
        Institution.created_at.label("dlm"),
        literal("Homeroom").label("title"),
        literal("HOMEROOM").label("courseCode"),
    ).where(Institution.id == iid)
    return union_all(subjects, homeroom, branch("courses", iid, labels(subjects)))


def _course_out(row, _):
    return {**_base(row), "title": row["title"], "courseCode": row["courseCode"], "schoolYear": None,
            "grades": [], "subjects": [row["title"]] if row["_t"] == 0 else [], "org": org_ref()}  # fmt: skip


COURSES = Collection(
    "courses", "course", _courses_stmt, {**BASE, "title": Field("title"), "courseCode": Field("courseCode")},
    out(_course_out, lambda row: {"org": org_ref()}),
    record_fields=("sourcedId", "status", "dateLastModified", "title", "courseCode", "schoolYear", "grades",
                   "subjects", "org"),
    kinds={"course": 0},
)  # fmt: skip


# --- classes ------------------------------------------------------------------------------------------


def _classes_stmt():
    """The school's classes, from the rows migration 0016 keeps (app/oneroster/models.py): a
    scheduled class's title, classCode, status and dateLastModified come from three tables, and each
    sort on them reads an index there."""
    c = OneRosterClass
    live = select(
        c.kind.label("_t"),
        c.k.label("_k"),
        c.sourced_id.label("sourcedId"),
        c.status.label("status"),
        c.dlm.label("dlm"),
        c.title.label("title"),
        c.class_code.label("classCode"),
        c.class_type.label("classType"),
        c.grade.label("grade"),
        c.course_sid.label("course_sid"),
        c.year_id.label("year_id"),
        c.subject.label("subject"),
        c.subject_id.label("_s"),
    ).where(c.institution_id == _iid())
    return union_all(live, branch("classes", _iid(), labels(live), {"classType": "classType"}))


def _classes_enrich(rows):
    years = {r["year_id"] for r in rows}
    terms = defaultdict(list)
    if years:
        for tid, yid in db.session.execute(
            select(Term.id, Term.academic_year_id)
            .where(Term.academic_year_id.in_(years))
            .order_by(Term.start_date)
        ):
            terms[yid].append(f"term-{tid}")
    return terms


def _class_out(row, terms):
    return {
        **_base(row),
        "title": row["title"],
        "classCode": row["classCode"],
        "classType": row["classType"],
        "location": None,
        "grades": grade_codes(row["grade"]),
        "subjects": [row["subject"]] if row["subject"] else [],
        "course": _r("courses", row["course_sid"], "course"),
        "school": org_ref(),
        "terms": [_r("academicSessions", t, "academicSession") for t in terms.get(row["year_id"], [])],
    }


CLASSES = Collection(
    "classes", "class", _classes_stmt,
    {**BASE, "title": Field("title"), "classCode": Field("classCode"), "classType": Field("classType"),
     "course.sourcedId": Field("course_sid", ids={"course": ((1,), "_s")})},
    out(_class_out, lambda row: {"classType": row["classType"], "school": org_ref()}), _classes_enrich,
    ("sourcedId", "status", "dateLastModified", "title", "classCode", "classType", "location", "grades",
     "subjects", "course", "school", "terms"),
    {"class": 0, "section": 1},
)  # fmt: skip


# --- users --------------------------------------------------------------------------------------------

USER_KINDS = {"student": 0, "teacher": 1, "guardian": 2, "admin": 3}


def _users_stmt(kinds=("student", "teacher", "guardian", "admin")):
    iid = _iid()
    branches = []
    if "student" in kinds:
        branches.append(
            select(
                literal(0).label("_t"),
                Student.id.label("_k"),
                sid("student", Student.id).label("sourcedId"),
                status_of(Student.deleted_at.is_not(None)).label("status"),
                Student.updated_at.label("dlm"),
                Student.first_name.label("givenName"),
                Student.last_name.label("familyName"),
                Student.email.label("email"),
                Student.admission_number.label("identifier"),
                literal("student").label("role"),
                Student.grade_level.label("grade"),
                (Student.status == "active").label("enabled"),
            ).where(Student.institution_id == iid)
        )
    if "teacher" in kinds:
        branches.append(
            select(
                literal(1).label("_t"),
                Teacher.id.label("_k"),
                sid("teacher", Teacher.id).label("sourcedId"),
                status_of(Teacher.deleted_at.is_not(None)).label("status"),
                Teacher.updated_at.label("dlm"),
                Teacher.first_name.label("givenName"),
                Teacher.last_name.label("familyName"),
                Teacher.email.label("email"),
                Teacher.employee_number.label("identifier"),
                literal("teacher").label("role"),
                cast(null(), Integer).label("grade"),
                literal(True, Boolean).label("enabled"),
            ).where(Teacher.institution_id == iid)
        )
    if "guardian" in kinds:
        parent = exists().where(
            StudentGuardian.guardian_id == Guardian.id,
            StudentGuardian.relationship_type.in_(PARENT_RELATIONSHIPS),
        )
        branches.append(
            select(
                literal(2).label("_t"),
                Guardian.id.label("_k"),
                sid("guardian", Guardian.id).label("sourcedId"),
                status_of(Guardian.deleted_at.is_not(None)).label("status"),
                Guardian.updated_at.label("dlm"),
                Guardian.first_name.label("givenName"),
                Guardian.last_name.label("familyName"),
                Guardian.email.label("email"),
                cast(null(), String).label("identifier"),
                case((parent, "parent"), else_="guardian").label("role"),
                cast(null(), Integer).label("grade"),
                literal(True, Boolean).label("enabled"),
            ).where(Guardian.institution_id == iid)
        )
    if "admin" in kinds:
        branches.append(
            select(
                literal(3).label("_t"),
                User.id.label("_k"),
                sid("admin", User.id).label("sourcedId"),
                status_of(User.deleted_at.is_not(None)).label("status"),
                User.updated_at.label("dlm"),
                User.first_name.label("givenName"),
                User.last_name.label("familyName"),
                User.email.label("email"),
                cast(null(), String).label("identifier"),
                literal("administrator").label("role"),
                cast(null(), Integer).label("grade"),
                User.is_active.label("enabled"),
            ).where(User.institution_id == iid, User.role == "admin")
        )
    return union_all(*branches) if len(branches) > 1 else branches[0]


def _users_enrich(rows):
    """agents: a student's guardians, a guardian's children (one query each)."""
    students = [r["_k"] for r in rows if r["_t"] == 0]
    guardians = [r["_k"] for r in rows if r["_t"] == 2]
    agents = defaultdict(list)
    if students:
        for s, gid in db.session.execute(
            select(StudentGuardian.student_id, StudentGuardian.guardian_id)
            .where(StudentGuardian.student_id.in_(students))
            .order_by(StudentGuardian.is_primary.desc(), StudentGuardian.guardian_id)
        ):
            agents[(0, s)].append(f"guardian-{gid}")
    if guardians:
        for s, gid in db.session.execute(
            select(StudentGuardian.student_id, StudentGuardian.guardian_id)
            .where(StudentGuardian.guardian_id.in_(guardians))
            .order_by(StudentGuardian.student_id)
        ):
            agents[(2, gid)].append(f"student-{s}")
    return agents


def _user_out(row, agents):
    role = {
        "roleType": "primary",
        "role": row["role"],
        "org": org_ref(),
    }
    ids = [
        {"type": "admission_number" if row["_t"] == 0 else "employee_number", "identifier": row["identifier"]}
    ]
    return {
        **_base(row),
        "userMasterIdentifier": row["sourcedId"],
        "username": row["email"] or row["identifier"] or row["sourcedId"],
        "userIds": ids if row["identifier"] else [],
        "enabledUser": "true" if row["enabled"] else "false",
        "givenName": row["givenName"],
        "familyName": row["familyName"],
        "roles": [role],
        "primaryOrg": org_ref(),
        "identifier": row["identifier"],
        "email": row["email"],
        "agents": [_r("users", a, "user") for a in agents.get((row["_t"], row["_k"]), [])],
        "grades": grade_codes(row["grade"]),
    }


USER_FIELDS = {
    **BASE,
    "givenName": Field("givenName"),
    "familyName": Field("familyName"),
    "email": Field("email"),
    "identifier": Field("identifier"),
    "role": Field("role"),
    "roles.role": Field("role"),
    "enabledUser": Field("enabled", "bool"),
}
USER_RECORD = ("sourcedId", "status", "dateLastModified", "userMasterIdentifier", "username", "userIds",
               "enabledUser", "givenName", "familyName", "roles", "primaryOrg", "identifier", "email",
               "agents", "grades")  # fmt: skip
USERS = Collection(
    "users", "user", _users_stmt, USER_FIELDS, _user_out, _users_enrich, USER_RECORD, USER_KINDS
)
STUDENTS = Collection("users", "user", lambda: _users_stmt(("student",)), USER_FIELDS, _user_out,
                      _users_enrich, USER_RECORD, {"student": 0})  # fmt: skip
TEACHERS = Collection("users", "user", lambda: _users_stmt(("teacher",)), USER_FIELDS, _user_out,
                      _users_enrich, USER_RECORD, {"teacher": 1})  # fmt: skip


# --- enrollments --------------------------------------------------------------------------------------


def _enrollments_stmt():
    """The school's enrollments, from the rows migration 0016 keeps (app/oneroster/models.py): each
    filter and sort reads an index there, where computing them from enrolments x class subjects read
    every row of the school."""
    e = OneRosterEnrollment
    live = select(
        e.kind.label("_t"),
        e.k.label("_k"),
        e.k2.label("_k2"),
        e.sourced_id.label("sourcedId"),
        e.status.label("status"),
        e.dlm.label("dlm"),
        e.role.label("role"),
        e.is_primary.label("primary"),
        e.begin_date.label("beginDate"),
        e.end_date.label("endDate"),
        e.user_sid.label("user_sid"),
        e.class_sid.label("class_sid"),
        e.user_id.label("_u"),
        e.class_ref.label("_c"),
    ).where(e.institution_id == _iid())
    gone = branch("enrollments", _iid(), labels(live),
                  {"role": "role", "user_sid": "user_sid", "class_sid": "class_sid"})  # fmt: skip
    return union_all(live, gone)


def _enrollment_out(row, _):
    return {
        **_base(row),
        "user": _r("users", row["user_sid"], "user"),
        "class": _r("classes", row["class_sid"], "class"),
        "school": org_ref(),
        "role": row["role"],
        "primary": "true" if row["primary"] else "false",
        "beginDate": stamp(row["beginDate"]),
        "endDate": stamp(row["endDate"]),
    }


ENROLLMENTS = Collection(
    "enrollments", "enrollment", _enrollments_stmt,
    {**BASE, "role": Field("role"), "primary": Field("primary", "bool"), "beginDate": Field("beginDate", "date"),
     "endDate": Field("endDate", "date"),
     "user.sourcedId": Field("user_sid", ids={"student": ((0, 1), "_u"), "teacher": ((2, 3), "_u")}),
     "class.sourcedId": Field("class_sid", ids={"class": ((0, 2), "_c"), "section": ((1, 3), "_c")})},
    out(_enrollment_out, lambda row: {"user": _r("users", row["user_sid"], "user"),
                                      "class": _r("classes", row["class_sid"], "class"), "school": org_ref(),
                                      "role": row["role"]}),
    record_fields=("sourcedId", "status", "dateLastModified", "user", "class", "school", "role", "primary",
                   "beginDate", "endDate"),
    kinds={"enr": 0, "tenrc": 2, "tenrs": 3},
    order=("_t", "_k", "_k2"),
)  # fmt: skip


# --- demographics -------------------------------------------------------------------------------------


def _demographics_stmt():
    return select(
        literal(0).label("_t"),
        Student.id.label("_k"),
        sid("student", Student.id).label("sourcedId"),
        status_of(Student.deleted_at.is_not(None)).label("status"),
        Student.updated_at.label("dlm"),
        Student.date_of_birth.label("birthDate"),
        case((Student.gender.in_(("male", "female")), Student.gender), else_="unspecified").label("sex"),
    ).where(Student.institution_id == _iid())


DEMOGRAPHICS_COLL = Collection(
    "demographics", "demographics", _demographics_stmt,
    {**BASE, "birthDate": Field("birthDate", "date"), "sex": Field("sex")},
    lambda row, _: {**_base(row), "birthDate": stamp(row["birthDate"]), "sex": row["sex"]},
    record_fields=("sourcedId", "status", "dateLastModified", "birthDate", "sex"),
    kinds={"student": 0},
)  # fmt: skip


# --- the operations -----------------------------------------------------------------------------------


def _school_or_404(school_id):
    if school_id != org_sid():
        raise OneRosterError(404, f"No school with sourcedId {school_id!r}.", "unknownobject")


def _exists_or_404(coll: Collection, sourced_id):
    one_answer(coll, sourced_id)  # raises the 404


def _enrolled(class_sid=None, user_sid=None, role=None):
    """A condition on a collection's subquery (or one branch): its record among the active enrollments'
    users (or classes) of a class (or user), matched by kind and id (`_t`, `_k`), which the users'
    and classes' primary keys answer, not by their computed sourcedIds."""

    def where(sub):
        enr = ENROLLMENTS.stmt().subquery()
        conds = [enr.c.status == "active"]
        if class_sid is not None:
            conds.append(equals(ENROLLMENTS, enr, "class.sourcedId", class_sid))
        if user_sid is not None:
            conds.append(equals(ENROLLMENTS, enr, "user.sourcedId", user_sid))
        if role is not None:
            conds.append(enr.c.role == role)
        if class_sid is not None:  # users: students of enrollment branches 0-1, teachers of 2-3
            target, pairs = enr.c._u, ((USER_KINDS["student"], (0, 1)), (USER_KINDS["teacher"], (2, 3)))
        else:  # classes: homerooms (class-N) of branches 0 and 2, sections of 1 and 3
            target, pairs = enr.c._c, ((0, (0, 2)), (1, (1, 3)))
        return or_(
            *[
                and_(sub.c._t == t, sub.c._k.in_(select(target).where(*conds, enr.c._t.in_(ts))))
                for t, ts in pairs
            ]
        )

    return where


def _route(path, endpoint, scopes, handler):
    bp.add_url_rule(path, endpoint, oneroster_view(*scopes)(handler), methods=["GET"])


def _list(coll, where=()):
    return lambda: list_answer(coll, where)


def _one(coll, where=()):
    return lambda sourced_id: one_answer(coll, sourced_id, where)


for _name, _coll in (
    ("orgs", ORGS),
    ("schools", SCHOOLS),
    ("academicSessions", SESSIONS),
    ("terms", TERMS),
    ("courses", COURSES),
    ("classes", CLASSES),
    ("users", USERS),
    ("students", STUDENTS),
    ("teachers", TEACHERS),
    ("enrollments", ENROLLMENTS),
):
    _where = _of_type("term") if _name == "terms" else ()
    _route(f"/{_name}", f"list_{_name}", ROSTER, _list(_coll, _where))
    _route(f"/{_name}/<sourced_id>", f"get_{_name}", ROSTER, _one(_coll, _where))
_route("/demographics", "list_demographics", DEMOGRAPHICS, _list(DEMOGRAPHICS_COLL))
_route("/demographics/<sourced_id>", "get_demographics", DEMOGRAPHICS, _one(DEMOGRAPHICS_COLL))


def _no_grading_periods():
    # Schoolhouse has no grading periods below its terms: the collection is empty.
    return list_answer(SESSIONS, _of_type("gradingPeriod"))


def _no_grading_period(sourced_id):
    raise OneRosterError(404, f"No gradingPeriod with sourcedId {sourced_id!r}.", "unknownobject")


_route("/gradingPeriods", "list_gradingPeriods", ROSTER, _no_grading_periods)
_route("/gradingPeriods/<sourced_id>", "get_gradingPeriods", ROSTER, _no_grading_period)


def _school_list(coll, extra=()):
    def view(school_id):
        _school_or_404(school_id)
        return list_answer(coll, extra)

    return view


_route("/schools/<school_id>/classes", "school_classes", ROSTER, _school_list(CLASSES))
_route("/schools/<school_id>/students", "school_students", ROSTER, _school_list(STUDENTS))
_route("/schools/<school_id>/teachers", "school_teachers", ROSTER, _school_list(TEACHERS))
_route("/schools/<school_id>/courses", "school_courses", ROSTER, _school_list(COURSES))
_route("/schools/<school_id>/enrollments", "school_enrollments", ROSTER, _school_list(ENROLLMENTS))
_route("/schools/<school_id>/terms", "school_terms", ROSTER, _school_list(TERMS, _of_type("term")))


def _class_members(coll, role):
    def view(class_id, school_id=None):
        if school_id is not None:
            _school_or_404(school_id)
        _exists_or_404(CLASSES, class_id)
        return list_answer(coll, [_enrolled(class_sid=class_id, role=role)])

    return view


def _class_enrollments(school_id, class_id):
    _school_or_404(school_id)
    _exists_or_404(CLASSES, class_id)
    return list_answer(ENROLLMENTS, [lambda sub: equals(ENROLLMENTS, sub, "class.sourcedId", class_id)])


_route("/classes/<class_id>/students", "class_students", ROSTER, _class_members(STUDENTS, "student"))
_route("/classes/<class_id>/teachers", "class_teachers", ROSTER, _class_members(TEACHERS, "teacher"))
_route("/schools/<school_id>/classes/<class_id>/students", "school_class_students", ROSTER,
       _class_members(STUDENTS, "student"))  # fmt: skip
_route("/schools/<school_id>/classes/<class_id>/teachers", "school_class_teachers", ROSTER,
       _class_members(TEACHERS, "teacher"))  # fmt: skip
_route(
    "/schools/<school_id>/classes/<class_id>/enrollments",
    "school_class_enrollments",
    ROSTER,
    _class_enrollments,
)


def _classes_of(user_coll):
    def view(user_id):
        _exists_or_404(user_coll, user_id)
        return list_answer(CLASSES, [_enrolled(user_sid=user_id)])

    return view


_route("/users/<user_id>/classes", "user_classes", ROSTER, _classes_of(USERS))
_route("/students/<user_id>/classes", "student_classes", ROSTER, _classes_of(STUDENTS))
_route("/teachers/<user_id>/classes", "teacher_classes", ROSTER, _classes_of(TEACHERS))


def _term_classes(term_id):
    year = db.session.execute(
        select(Term.academic_year_id).where(Term.id == (int_of(term_id, "term") or -1))
    ).scalar_one_or_none()
    if year is None:
        raise OneRosterError(404, f"No term with sourcedId {term_id!r}.", "unknownobject")
    return list_answer(CLASSES, [lambda sub: sub.c.year_id == year])


def _course_classes(course_id):
    _exists_or_404(COURSES, course_id)
    return list_answer(CLASSES, [lambda sub: equals(CLASSES, sub, "course.sourcedId", course_id)])


_route("/terms/<term_id>/classes", "term_classes", ROSTER, _term_classes)
_route("/courses/<course_id>/classes", "course_classes", ROSTER, _course_classes)
