"""The OneRoster 1.2 CSV binding, export side: the `oneroster_bulk` and `oneroster_delta` export kinds
(app/jobs/exporters.py) write the binding's zip from the same collection statements the REST service
pages (app/oneroster/rostering.py, gradebook.py), so a record has the same sourcedId, status and
dateLastModified in both.

- bulk: the school as it is now: active records only, `status` and `dateLastModified` left blank (the
  binding's rule for bulk files); manifest `file.<name>` = bulk. With `history` (params.history, for
  moving a school), enrollments.csv also lists the ended homeroom enrollments of live students in live
  classes, with their endDate: the grades of a student who has since left a class need the enrollment
  that covered them to import (app/oneroster/csvimport.py). Not the default: a learning platform that
  ignores endDate would put the student back into a class they left.
- delta: every record whose dateLastModified is after `since`, tobedeleted ones included, with status
  and dateLastModified filled in; manifest `file.<name>` = delta.
Each file is written in the column order of the binding's tables; every data file is present (header
only when it has no rows), the binding's files Schoolhouse has no data for are `absent`. Rows stream
from the database in chunks (memory stays flat); a chunk's references (class terms, user agents) are
fetched with one query each, as the REST pages do. Classes carry one extension column,
`metadata.schoolhouse.homeroomSourcedId`: the homeroom class a scheduled class (a subject taught in a
class) belongs to, so an import here rebuilds the same classes. Text cells that a spreadsheet would run
as a formula get a leading ' (app/jobs/exporters.py csv_text); app/oneroster/csvimport.py removes it.
"""

import csv
import io
import zipfile
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import and_, func, or_, select

from app.academics.models import ClassSubject, SchoolClass
from app.core.csvtext import csv_text
from app.core.tenancy import current_institution_id
from app.extensions import db
from app.grading import services as grading
from app.oneroster import gradebook, rostering
from app.oneroster.common import grade_codes, stamp
from app.people.models import Guardian, Student, Teacher

FETCH = 5000
MANIFEST_VERSION = "1.0"
ONEROSTER_VERSION = "1.2"
SYSTEM_NAME, SYSTEM_CODE = "Schoolhouse", "schoolhouse"
HOMEROOM_COLUMN = "metadata.schoolhouse.homeroomSourcedId"

BASE = ("sourcedId", "status", "dateLastModified")
HEADERS = {
    "orgs": (*BASE, "name", "type", "identifier", "parentSourcedId"),
    "academicSessions": (*BASE, "title", "type", "startDate", "endDate", "parentSourcedId", "schoolYear"),
    "courses": (*BASE, "schoolYearSourcedId", "title", "courseCode", "grades", "orgSourcedId", "subjects",
                "subjectCodes"),
    "classes": (*BASE, "title", "grades", "courseSourcedId", "classCode", "classType", "location",
                "schoolSourcedId", "termSourcedIds", "subjects", "subjectCodes", "periods", HOMEROOM_COLUMN),
    "users": (*BASE, "enabledUser", "username", "userIds", "givenName", "familyName", "middleName",
              "identifier", "email", "sms", "phone", "agentSourcedIds", "grades", "password",
              "userMasterIdentifier", "resourceSourcedIds", "preferredGivenName", "preferredMiddleName",
              "preferredFamilyName", "primaryOrgSourcedId", "pronouns"),
    "roles": (*BASE, "userSourcedId", "roleType", "role", "beginDate", "endDate", "orgSourcedId",
              "userProfileSourcedId"),
    "enrollments": (*BASE, "classSourcedId", "schoolSourcedId", "userSourcedId", "role", "primary",
                    "beginDate", "endDate"),
    "demographics": (*BASE, "birthDate", "sex", "americanIndianOrAlaskaNative", "asian",
                     "blackOrAfricanAmerican", "nativeHawaiianOrOtherPacificIslander", "white",
                     "demographicRaceTwoOrMoreRaces", "hispanicOrLatinoEthnicity", "countryOfBirthCode",
                     "stateOfBirthAbbreviation", "cityOfBirth", "publicSchoolResidenceStatus"),
    "categories": (*BASE, "title", "weight"),
    "lineItems": (*BASE, "title", "description", "assignDate", "dueDate", "classSourcedId",
                  "categorySourcedId", "gradingPeriodSourcedId", "academicSessionSourcedId",
                  "scoreScaleSourcedId", "resultValueMin", "resultValueMax"),
    "results": (*BASE, "lineItemSourcedId", "studentSourcedId", "scoreStatus", "score", "textScore",
                "scoreDate", "comment", "scoreScaleSourcedId", "inProgress", "incomplete", "late", "missing"),
    "scoreScales": (*BASE, "title", "type", "orgSourcedId", "courseSourcedId", "classSourcedId",
                    "scoreScaleValue"),
}  # fmt: skip
# The binding's files Schoolhouse writes none of (manifest: absent).
ABSENT = (
    "classResources",
    "courseResources",
    "lineItemLearningObjectiveIds",
    "lineItemScoreScales",
    "resources",
    "resultLearningObjectiveIds",
    "resultScoreScales",
    "userProfiles",
    "userResources",
)


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return stamp(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, str):
        return csv_text(v)  # formula-looking text gets a leading ' (app/core/csvtext.py)
    return str(v)


def _join(values) -> str:
    # A list cell: comma-separated, no spaces (the binding's list type); the writer quotes the cell.
    return ",".join(v for v in values if v)


def _number(v):
    if v is None:
        return None
    text = format(v, "f") if not isinstance(v, float) else repr(v)
    return text.rstrip("0").rstrip(".") if "." in text else text


@dataclass
class Mode:
    delta: bool
    since: datetime | None = None
    history: bool = False  # bulk only: ended homeroom enrollments too (the module's docstring)

    @property
    def label(self):
        return "delta" if self.delta else "bulk"


def _pages(coll, mode: Mode, where=(), also=None):
    """The collection's rows in its stable order, a chunk at a time (bulk: active ones, and those
    `also(sub)` names; delta: changed after `since`)."""
    sub = coll.stmt().subquery()
    conds = [w(sub) for w in where]
    if mode.delta:
        conds.append(sub.c.dlm > mode.since)
    else:
        conds.append(sub.c.status == "active" if also is None else or_(sub.c.status == "active", also(sub)))
    stmt = select(sub).where(*conds).order_by(*[sub.c[c] for c in coll.order])
    result = db.session.execute(stmt, execution_options={"yield_per": FETCH}).mappings()
    yield from result.partitions(FETCH)


def _base(row, mode: Mode):
    if mode.delta:
        return [row["sourcedId"], row["status"], stamp(row["dlm"])]
    return [row["sourcedId"], "", ""]


def _gone(mode: Mode) -> set:
    """Bulk: the sourcedIds of deleted people, which a live record may still name (a guardian of a
    student, the teacher of a class): a bulk file lists live records only, so its references must too."""
    if mode.delta:
        return set()
    iid = current_institution_id()
    out = set()
    for prefix, model in (("student", Student), ("teacher", Teacher), ("guardian", Guardian)):
        out |= {
            f"{prefix}-{i}"
            for i in db.session.execute(
                select(model.id).where(model.institution_id == iid, model.deleted_at.is_not(None))
            ).scalars()
        }
    return out


def _org_sid():
    return f"org-{current_institution_id()}"


# --- one generator per file: lists of cells -----------------------------------------------------------


def _orgs(mode):
    for page in _pages(rostering.ORGS, mode):
        for r in page:
            yield [*_base(r, mode), r["name"], r["type"], r["identifier"], None]


def _sessions(mode):
    for page in _pages(rostering.SESSIONS, mode):
        for r in page:
            yield [*_base(r, mode), r["title"], r["type"], r["startDate"], r["endDate"], r["parent_sid"],
                   str(r["year_end"].year) if r["year_end"] else None]  # fmt: skip


def _courses(mode):
    org = _org_sid()
    for page in _pages(rostering.COURSES, mode):
        for r in page:
            yield [*_base(r, mode), None, r["title"], r["courseCode"], None, org,
                   r["title"] if r["_t"] == 0 else None, None]  # fmt: skip


def _classes(mode):
    org = _org_sid()
    for page in _pages(rostering.CLASSES, mode):
        terms = rostering.CLASSES.enrich(page)
        sections = [r["_k"] for r in page if r["_t"] == 1]
        homeroom = {}
        if sections:
            homeroom = dict(
                db.session.execute(
                    select(ClassSubject.id, ClassSubject.class_id).where(ClassSubject.id.in_(sections))
                ).all()
            )
        for r in page:
            parent = f"class-{homeroom[r['_k']]}" if r["_t"] == 1 else None
            yield [*_base(r, mode), r["title"], _join(grade_codes(r["grade"])), r["course_sid"], r["classCode"],
                   r["classType"], None, org, _join(terms.get(r["year_id"], [])), r["subject"], None, None,
                   parent]  # fmt: skip


def _users(mode):
    org, gone = _org_sid(), _gone(mode)
    for page in _pages(rostering.USERS, mode):
        agents = rostering.USERS.enrich(page)
        for r in page:
            ident = r["identifier"]
            id_type = "admission_number" if r["_t"] == 0 else "employee_number"
            yield [
                *_base(r, mode),
                "true" if r["enabled"] else "false",
                r["email"] or ident or r["sourcedId"],
                f"{{{id_type}:{ident}}}" if ident else None,
                r["givenName"],
                r["familyName"],
                None,
                ident,
                r["email"],
                None,
                None,
                _join(a for a in agents.get((r["_t"], r["_k"]), []) if a not in gone),
                _join(grade_codes(r["grade"])),
                None,
                r["sourcedId"],
                None,
                None,
                None,
                None,
                org,
                None,
            ]


def _roles(mode):
    # One primary role per user at the school: its sourcedId is the user's with "-role".
    org = _org_sid()
    for page in _pages(rostering.USERS, mode):
        for r in page:
            base = _base(r, mode)
            base[0] = f"{r['sourcedId']}-role"
            yield [*base, r["sourcedId"], "primary", r["role"], None, None, org, None]


def _ended_homeroom(sub):
    return and_(sub.c._t == 0, sub.c.endDate.is_not(None))  # rostering._enrollments_stmt's student_home


def _enrollments(mode):
    org, gone = _org_sid(), _gone(mode)
    history = mode.history and not mode.delta
    if history:  # an ended enrollment's class may be deleted since: the file lists live classes only
        gone |= {
            f"class-{i}"
            for i in db.session.execute(
                select(SchoolClass.id).where(
                    SchoolClass.institution_id == current_institution_id(),
                    SchoolClass.deleted_at.is_not(None),
                )
            ).scalars()
        }
    for page in _pages(rostering.ENROLLMENTS, mode, also=_ended_homeroom if history else None):
        for r in page:
            if r["user_sid"] in gone or r["class_sid"] in gone:
                continue
            yield [*_base(r, mode), r["class_sid"], org, r["user_sid"], r["role"],
                   "true" if r["primary"] else "false", r["beginDate"], r["endDate"]]  # fmt: skip


def _demographics(mode):
    for page in _pages(rostering.DEMOGRAPHICS_COLL, mode):
        for r in page:
            yield [*_base(r, mode), r["birthDate"], r["sex"], *([None] * 11)]


def _categories(mode):
    for page in _pages(gradebook.CATEGORIES, mode):
        for r in page:
            yield [*_base(r, mode), r["title"], _number(r["weight"])]


def _line_items(mode):
    scale = f"scale-{current_institution_id()}"
    for page in _pages(gradebook.LINE_ITEMS, mode):
        for r in page:
            yield [*_base(r, mode), r["title"], None, r["dueDate"], r["dueDate"], r["class_sid"],
                   r["category_sid"], r["term_sid"], r["term_sid"], scale, "0", _number(r["max_score"])]  # fmt: skip


def _results(mode):
    for page in _pages(gradebook.RESULTS, mode):
        for r in page:
            yield [*_base(r, mode), r["line_item_sid"], r["student_sid"], "fully graded", _number(r["score"]),
                   None, r["dlm"].date() if r["dlm"] else None, r["comment"], None, None, None, None, None]  # fmt: skip


def _scales(mode):
    org = _org_sid()
    for page in _pages(gradebook.SCALES, mode):
        for r in page:
            bands = grading.Scale(r["bands"]).bands
            values = _join(f"{{{_number(low)}:{letter}}}" for low, letter in bands)
            yield [*_base(r, mode), "Percentage to letter", "percentage", org, None, None, values]


# --- the package --------------------------------------------------------------------------------------


class Package:
    """A OneRoster CSV zip of the caller's school (what app/jobs/exporters.py builds for the two kinds)."""

    title = "OneRoster"

    def __init__(self, mode: Mode):
        self.mode = mode

    def estimate(self) -> int:
        """Rows of the largest files (users, enrollments, results): what EXPORT_MAX_ROWS is checked on."""
        total = 0
        for coll in (rostering.USERS, rostering.ENROLLMENTS, gradebook.RESULTS):
            sub = coll.stmt().subquery()
            cond = sub.c.dlm > self.mode.since if self.mode.delta else sub.c.status == "active"
            total += db.session.execute(select(func.count()).select_from(sub).where(cond)).scalar_one()
        return total

    def write(self, path, progress=None) -> int:
        mode, done = self.mode, 0
        files = [
            ("orgs", _orgs(mode)),
            ("academicSessions", _sessions(mode)),
            ("courses", _courses(mode)),
            ("classes", _classes(mode)),
            ("users", _users(mode)),
            ("roles", _roles(mode)),
            ("enrollments", _enrollments(mode)),
            ("demographics", _demographics(mode)),
            ("categories", _categories(mode)),
            ("lineItems", _line_items(mode)),
            ("results", _results(mode)),
            ("scoreScales", _scales(mode)),
        ]
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            with _text(zf, "manifest.csv") as fh:
                writer = csv.writer(fh, lineterminator="\r\n")
                writer.writerow(["propertyName", "value"])
                writer.writerow(["manifest.version", MANIFEST_VERSION])
                writer.writerow(["oneroster.version", ONEROSTER_VERSION])
                present = {name for name, _ in files}
                for name in sorted(present | set(ABSENT)):
                    writer.writerow([f"file.{name}", mode.label if name in present else "absent"])
                writer.writerow(["source.systemName", SYSTEM_NAME])
                writer.writerow(["source.systemCode", SYSTEM_CODE])
            for name, rows in files:
                with _text(zf, f"{name}.csv") as fh:
                    writer = csv.writer(fh, lineterminator="\r\n")
                    writer.writerow(HEADERS[name])
                    for row in rows:
                        writer.writerow([_cell(v) for v in row])
                        done += 1
                        if progress is not None and not done % 1000:
                            progress(done)
        return done


def _text(zf, name):
    return io.TextIOWrapper(zf.open(name, "w"), encoding="utf-8", newline="")


def package(mode: Mode) -> Package:
    return Package(mode)
