"""The OneRoster 1.2 CSV binding, import side: a zip (manifest.csv and the data files) moves a school's
roster here from another system (or from another Schoolhouse school: app/oneroster/csvexport.py).

What it makes, upserted by sourcedId (the table oneroster_sourced_ids remembers which local record each
imported sourcedId became, so a second import of the same or a newer file updates instead of adding):
- academicSessions: schoolYear -> academic year; term and semester -> a term of its parent year
  (gradingPeriods are skipped: Schoolhouse grades by term);
- courses -> subjects (a course that only homeroom classes use is not a subject);
- classes: homeroom -> a class of its terms' year (grade from `grades`, section from the title's last
  word, e.g. "Grade 7A" -> A); scheduled -> that subject taught in its homeroom class, named by the
  extension column metadata.schoolhouse.homeroomSourcedId or else by where its students are enrolled;
- users (role from roles.csv, or a 1.1 `role` column): student, teacher, parent/guardian/relative
  (-> guardian, linked to children through agentSourcedIds); administrators and other roles are
  skipped (logins are not imported: people get a login through the native invitations);
- demographics -> a student's date of birth and sex;
- enrollments: a student in a homeroom class -> an enrolment; a teacher -> the homeroom teacher of a
  homeroom class, the teacher of a scheduled one; a student in a scheduled class is implied by the
  homeroom enrolment;
- the gradebook: categories -> assessment types, lineItems -> assessments of a scheduled class (its
  gradingPeriod the term), results -> grades, a school-wide scoreScale -> the school's letter bands.
  They are written through the grading services (app/grading/services.py), as the native API and the
  OneRoster gradebook service write them: the same checks (the term of the class's year, the date in
  the term, a score within 0..max, the student enrolled in the class), the same audit rows (with the
  importing admin as the actor) and the same cache invalidation; what those services refuse is
  reported per row like any other error.
Delta files may carry status tobedeleted: such a student, teacher, guardian or class is soft-deleted,
such an enrolment ended, such a lineItem or category deleted (through the grading services).

All or nothing: every row of every file is checked first and each problem reported as {file, line,
field, error}; with any error nothing is written. Otherwise the whole file set is written in one
transaction (a dry run writes it and rolls it back, so it reports what only the database can tell).
"""

import csv
import io
import re
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

from flask import g
from pydantic import ValidationError
from sqlalchemy import select

from app.academics.models import AcademicYear, ClassSubject, Enrolment, SchoolClass, Subject, Term
from app.audit import services as audit
from app.core.auth import Principal
from app.core.csvtext import FORMULA_START
from app.core.errors import ApiError, Conflict, ValidationFailed
from app.core.models import utcnow
from app.core.schemas import NUL, _email
from app.core.upsert import insert_for
from app.extensions import db
from app.grading import services as grading
from app.grading.models import Assessment, AssessmentType, Grade
from app.grading.schemas import AssessmentCreate, AssessmentTypeCreate, GradeIn
from app.institutions.models import Institution
from app.institutions.schemas import InstitutionUpdate
from app.oneroster.csvexport import HOMEROOM_COLUMN
from app.oneroster.models import OneRosterSourcedId
from app.people.models import Guardian, Student, StudentGuardian, Teacher

FILES = ("academicSessions", "courses", "classes", "users", "roles", "demographics", "enrollments",
         "categories", "lineItems", "results", "scoreScales")  # fmt: skip
IGNORED = ("orgs",)
MAX_UNCOMPRESSED = 20  # times IMPORT_MAX_BYTES: a zip that inflates further is refused (zip bomb)
MAX_REPORTED_ERRORS = 1000
GUARDIAN_ROLES = {"parent": "parent", "guardian": "guardian", "relative": "guardian"}
TEACHER_ROLES = ("teacher", "aide")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
SECTION = re.compile(r"(\d+)\s*([A-Za-z][A-Za-z0-9]{0,9})$")


# --- the upload ---------------------------------------------------------------------------------------


def open_zip(data: bytes, limit: int) -> zipfile.ZipFile:
    """The upload as a OneRoster zip (422 naming what is wrong otherwise)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise ValidationFailed({"file": "is not a zip file (the OneRoster CSV binding is a zip)"}) from None
    if sum(i.file_size for i in infos) > MAX_UNCOMPRESSED * limit:
        raise ValidationFailed({"file": f"unpacks to more than {MAX_UNCOMPRESSED * limit:,} bytes"})
    names = {i.filename for i in infos}
    if "manifest.csv" not in names:
        raise ValidationFailed({"file": "has no manifest.csv at the top of the zip"})
    manifest = dict(_rows(zf, "manifest.csv", header=False))
    version = manifest.get("oneroster.version")
    if version not in ("1.1", "1.2"):
        raise ValidationFailed(
            {"file": f"manifest.csv: oneroster.version must be 1.2 (or 1.1), not {version!r}"}
        )
    return zf


def _text(zf, name) -> str:
    try:
        text = zf.read(name).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationFailed({"file": f"{name} must be UTF-8 text"}) from None
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError):
        raise ValidationFailed({"file": f"{name} cannot be read from the zip"}) from None
    if NUL in text:
        raise ValidationFailed({"file": f"{name} contains NUL characters"})
    return text


def _unguard(value: str) -> str:
    # Exports put ' before formula-looking text (app/oneroster/csvexport.py); the value is what follows.
    return value[1:] if value[:1] == "'" and value[1:2] in FORMULA_START else value


def _rows(zf, name, header=True):
    reader = csv.reader(io.StringIO(_text(zf, name)))
    try:
        if not header:
            return [(r[0].strip(), r[1].strip()) for r in reader if len(r) >= 2]
        names = [h.strip() for h in next(reader, [])]
        out = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue
            out.append(
                (reader.line_num, {n: (_unguard(values[i].strip()) or None) if i < len(values) else None
                                   for i, n in enumerate(names)})
            )  # fmt: skip
        return out
    except csv.Error as exc:
        raise ValidationFailed({"file": f"{name} is not valid CSV: {exc}"}) from None


def read(data: bytes, limit: int) -> dict:
    """{file name: [(line, {column: value or None})]} of the data files Schoolhouse reads."""
    zf = open_zip(data, limit)
    names = {i.filename for i in zf.infolist()}
    return {n: (_rows(zf, f"{n}.csv") if f"{n}.csv" in names else []) for n in FILES + IGNORED}


def count_rows(data: bytes, limit: int) -> int:
    files = read(data, limit)
    return sum(len(files[n]) for n in FILES)


# --- checking -----------------------------------------------------------------------------------------


@dataclass
class Plan:
    errors: list = field(default_factory=list)
    failed_rows: set = field(default_factory=set)
    years: dict = field(default_factory=dict)  # sid -> values
    terms: dict = field(default_factory=dict)
    subjects: dict = field(default_factory=dict)
    homerooms: dict = field(default_factory=dict)
    sections: dict = field(default_factory=dict)
    people: dict = field(default_factory=dict)  # sid -> (kind, values, line)
    links: dict = field(default_factory=dict)  # (student sid, guardian sid) -> (relationship, primary)
    enrolments: dict = field(default_factory=dict)
    homeroom_teacher: dict = field(default_factory=dict)  # class sid -> teacher sid
    section_teacher: dict = field(default_factory=dict)
    deletes: list = field(default_factory=list)  # (entity, sid)
    ends: dict = field(default_factory=dict)  # enrolment sid -> end date
    categories: dict = field(default_factory=dict)  # sid -> {line, name, weight}
    line_items: dict = field(default_factory=dict)  # sid -> {line, values, section, category, term}
    results: dict = field(default_factory=dict)  # sid -> {line, line_item, student, score, comment}
    gradebook_deletes: list = field(default_factory=list)  # (entity, sid, file, line)
    scale: dict | None = None  # {line, bands}: the school's letter bands
    skipped: Counter = field(default_factory=Counter)

    def fail(self, file, line, column, error):
        self.failed_rows.add((file, line))
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"file": f"{file}.csv", "line": line, "field": column, "error": error})


def _day(p: Plan, file, line, row, column, required=False):
    raw = row.get(column)
    if raw is None:
        if required:
            p.fail(file, line, column, "is required")
        return None
    try:
        if not DATE.match(raw):
            raise ValueError
        day = date.fromisoformat(raw[:10])
        if not 1900 <= day.year <= 2100:
            raise ValueError
        return day
    except ValueError:
        p.fail(file, line, column, "must be a date, YYYY-MM-DD (1900-2100)")
        return None


def _text_cell(p: Plan, file, line, row, column, limit, required=False):
    value = row.get(column)
    if value is None:
        if required:
            p.fail(file, line, column, "is required")
        return None
    if len(value) > limit:
        p.fail(file, line, column, f"must be at most {limit} characters")
        return None
    return value


def _grade(code):
    """A CEDS grade code as Schoolhouse's grade level (KG 0, PK -1, 01..13 as numbers)."""
    if code is None:
        return None
    code = code.split(",")[0].strip().upper()
    if code in ("KG", "TK"):
        return 0
    if code in ("PK", "IT", "PR"):
        return -1
    return int(code) if code.isdigit() and int(code) <= 20 else None


def _list(value):
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _sid(p: Plan, file, line, row, seen):
    sid = row.get("sourcedId")
    if sid is None:
        p.fail(file, line, "sourcedId", "is required")
    elif len(sid) > 255:
        p.fail(file, line, "sourcedId", "must be at most 255 characters")
        sid = None
    elif sid in seen:
        p.fail(file, line, "sourcedId", f"appears more than once in {file}.csv (first on line {seen[sid]})")
        sid = None
    else:
        seen[sid] = line
    return sid


def _deleted(row):
    return (row.get("status") or "active").lower() == "tobedeleted"


def plan(files: dict, known: dict, today: date) -> Plan:
    """Check every row; `known` is {entity: {sourcedId: local id}} of earlier imports."""
    p = Plan()
    _plan_sessions(p, files["academicSessions"], known)
    courses = _plan_courses(p, files["courses"])
    _plan_classes(p, files["classes"], files["enrollments"], courses, known)
    roles = _roles(files["roles"])
    _plan_users(p, files["users"], roles, known)
    _plan_demographics(p, files["demographics"])
    _plan_enrollments(p, files["enrollments"], known, today)
    _plan_categories(p, files["categories"])
    _plan_line_items(p, files["lineItems"], known)
    _plan_results(p, files["results"], known)
    _plan_scales(p, files["scoreScales"])
    for name in IGNORED:
        if files[name] and name != "orgs":
            p.skipped[f"{name}.csv rows"] += len(files[name])
    return p


def _plan_sessions(p, rows, known):
    seen = {}
    for line, row in rows:
        sid = _sid(p, "academicSessions", line, row, seen)
        kind = (row.get("type") or "").strip()
        title = _text_cell(p, "academicSessions", line, row, "title", 40, required=True)
        start = _day(p, "academicSessions", line, row, "startDate", required=True)
        end = _day(p, "academicSessions", line, row, "endDate", required=True)
        if start and end and start > end:
            p.fail("academicSessions", line, "endDate", "must not be before startDate")
        if kind == "schoolYear":
            if sid:
                p.years[sid] = {"line": line, "name": title, "start_date": start, "end_date": end}
        elif kind in ("term", "semester"):
            if sid:
                p.terms[sid] = {"line": line, "name": title, "start_date": start, "end_date": end,
                                "parent": row.get("parentSourcedId")}  # fmt: skip
        elif kind == "gradingPeriod":
            p.skipped["gradingPeriods"] += 1
        else:
            p.fail("academicSessions", line, "type", "must be schoolYear, term, semester or gradingPeriod")
    for t in p.terms.values():
        parent = t["parent"]
        if parent is None:
            p.fail("academicSessions", t["line"], "parentSourcedId", "a term needs its school year")
        elif parent not in p.years and parent not in known["year"]:
            p.fail("academicSessions", t["line"], "parentSourcedId", f"no schoolYear {parent!r}")


def _plan_courses(p, rows):
    seen, courses = {}, {}
    for line, row in rows:
        sid = _sid(p, "courses", line, row, seen)
        title = _text_cell(p, "courses", line, row, "title", 100, required=True)
        code = row.get("courseCode") or title
        if sid and title:
            courses[sid] = {"line": line, "name": title, "code": (code or "")[:20]}
    return courses


def _year_of(p, sids, known):
    """The academic year (sourcedId) a class's terms belong to."""
    for sid in sids:
        if sid in p.years or sid in known["year"]:
            return sid
        term = p.terms.get(sid)
        if term is not None:
            return term["parent"]
        if sid in known["term"]:
            return ("term", sid)  # an earlier import's term: its year is looked up when writing
    return None


def _plan_classes(p, rows, enrol_rows, courses, known):
    seen, scheduled = {}, []
    for line, row in rows:
        sid = _sid(p, "classes", line, row, seen)
        kind = (row.get("classType") or "").strip()
        title = _text_cell(p, "classes", line, row, "title", 60, required=True)
        if sid is None:
            continue
        if _deleted(row):
            p.deletes.append(("class", sid))
            continue
        if kind == "homeroom":
            terms = _list(row.get("termSourcedIds"))
            year = _year_of(p, terms, known)
            if year is None:
                p.fail("classes", line, "termSourcedIds",
                       "must name at least one academicSession of this file or of an earlier import")  # fmt: skip
            grade = _grade(row.get("grades"))
            if grade is None:
                p.fail("classes", line, "grades", "a homeroom class needs a grade (CEDS code: KG, 01..12)")
            p.homerooms[sid] = {"line": line, "name": title, "year": year, "grade": grade}
        elif kind == "scheduled":
            scheduled.append((line, sid, row))
        else:
            p.fail("classes", line, "classType", "must be homeroom or scheduled")
    # a scheduled class's homeroom: the extension column, else where most of its students are enrolled
    homeroom_of_student = {}
    section_students = defaultdict(list)
    for _, row in enrol_rows:
        if (row.get("role") or "") != "student" or _deleted(row):
            continue
        cls, user = row.get("classSourcedId"), row.get("userSourcedId")
        if cls in p.homerooms:
            homeroom_of_student[user] = cls
        else:
            section_students[cls].append(user)
    used = set()
    for line, sid, row in scheduled:
        course = row.get("courseSourcedId")
        if course not in courses and course not in known["subject"]:
            p.fail("classes", line, "courseSourcedId", f"no course {course!r}")
        parent = row.get(HOMEROOM_COLUMN)
        if parent is None:
            votes = Counter(homeroom_of_student.get(u) for u in section_students.get(sid, []))
            votes.pop(None, None)
            parent = votes.most_common(1)[0][0] if votes else None
        if parent is None or (parent not in p.homerooms and parent not in known["class"]):
            p.fail("classes", line, HOMEROOM_COLUMN,
                   "a scheduled class is a subject taught in a homeroom class: name it here, or enrol its "
                   "students in one")  # fmt: skip
            continue
        if (parent, course) in used:
            p.fail("classes", line, "courseSourcedId", "this course is already taught in that homeroom class")
            continue
        used.add((parent, course))
        p.sections[sid] = {"line": line, "homeroom": parent, "course": course}
    for sid, c in courses.items():
        if any(s["course"] == sid for s in p.sections.values()) or not any(
            True for _, r in rows if r.get("courseSourcedId") == sid
        ):
            p.subjects[sid] = c
        else:
            p.skipped["homeroom courses"] += 1


def _roles(rows):
    out = {}
    for _, row in rows:
        user = row.get("userSourcedId")
        if user and (row.get("roleType") or "primary") == "primary" and user not in out:
            out[user] = row.get("role")
    return out


def _plan_users(p, rows, roles, known):
    seen, numbers = {}, {"student": {}, "teacher": {}}
    agents = {}
    for line, row in rows:
        sid = _sid(p, "users", line, row, seen)
        role = roles.get(sid) or row.get("role")
        if sid is None:
            continue
        if role is None:
            p.fail("users", line, "role", "no role for this user (roles.csv, or a role column)")
            continue
        kind = ("student" if role == "student" else "teacher" if role in TEACHER_ROLES
                else "guardian" if role in GUARDIAN_ROLES else None)  # fmt: skip
        if kind is None:
            p.skipped[f"users with role {role}"] += 1
            continue
        if _deleted(row):
            p.deletes.append((kind, sid))
            continue
        values = {
            "first_name": _text_cell(p, "users", line, row, "givenName", 100, required=True),
            "last_name": _text_cell(p, "users", line, row, "familyName", 100, required=True),
        }
        if (email := row.get("email")) is not None:
            try:
                values["email"] = _email(email)
            except ValueError as exc:
                p.fail("users", line, "email", f"is not a valid e-mail address ({exc})")
        if kind == "student":
            ident = row.get("identifier") or _first_user_id(row.get("userIds")) or sid
            values["admission_number"] = ident
            values["grade_level"] = _grade(row.get("grades"))
            values["status"] = (
                "active" if (row.get("enabledUser") or "true").lower() == "true" else "withdrawn"
            )
        elif kind == "teacher":
            values["employee_number"] = row.get("identifier") or _first_user_id(row.get("userIds")) or sid
            values["phone"] = _text_cell(p, "users", line, row, "phone", 40)
        else:
            values["phone"] = _text_cell(p, "users", line, row, "phone", 40)
        key = values.get("admission_number") or values.get("employee_number")
        if key is not None:
            if len(key) > 40:
                p.fail("users", line, "identifier", "must be at most 40 characters")
            elif key in numbers[kind]:
                p.fail("users", line, "identifier",
                       f"the same {'admission' if kind == 'student' else 'employee'} number as line "
                       f"{numbers[kind][key]}")  # fmt: skip
            else:
                numbers[kind][key] = line
        p.people[sid] = (kind, values, line)
        if kind == "guardian":
            values["_relationship"] = GUARDIAN_ROLES[role]
        agents[sid] = (line, _list(row.get("agentSourcedIds")))
    # agents: a student's guardians (the first is the primary one), a guardian's children
    for sid, (line, others) in agents.items():
        kind = p.people[sid][0]
        for i, other in enumerate(others):
            other_kind = p.people.get(other, (None,))[0] or _known_kind(other, known)
            pair_kinds = {kind, other_kind}
            if other_kind is None:
                p.fail("users", line, "agentSourcedIds", f"no user {other!r}")
            elif pair_kinds != {"student", "guardian"}:
                continue  # only student-guardian links are kept
            else:
                student, guardian = (sid, other) if kind == "student" else (other, sid)
                rel = p.people[guardian][1]["_relationship"] if guardian in p.people else "guardian"
                primary = kind == "student" and i == 0
                old = p.links.get((student, guardian))
                p.links[(student, guardian)] = (rel, primary or bool(old and old[1]))


def _known_kind(sid, known):
    for kind in ("student", "teacher", "guardian"):
        if sid in known[kind]:
            return kind
    return None


def _first_user_id(value):
    # userIds: "{type:identifier}" entries, comma-separated
    for part in re.findall(r"\{([^{}]*)\}", value or ""):
        _, _, ident = part.partition(":")
        if ident.strip():
            return ident.strip()
    return None


def _plan_demographics(p, rows):
    for line, row in rows:
        sid = row.get("sourcedId")
        person = p.people.get(sid)
        if person is None or person[0] != "student":
            continue
        values = person[1]
        born = _day(p, "demographics", line, row, "birthDate")
        if born is not None:
            values["date_of_birth"] = born
        sex = (row.get("sex") or "").lower()
        if sex in ("male", "female"):
            values["gender"] = sex


def _plan_enrollments(p, rows, known, today):
    seen, current = {}, {}
    for line, row in rows:
        sid = _sid(p, "enrollments", line, row, seen)
        cls, user, role = row.get("classSourcedId"), row.get("userSourcedId"), row.get("role")
        if sid is None:
            continue
        if _deleted(row):
            p.ends[sid] = _day(p, "enrollments", line, row, "endDate") or today
            continue
        kind = p.people.get(user, (None,))[0] or _known_kind(user, known)
        if kind is None:
            if user not in p.people:
                p.fail("enrollments", line, "userSourcedId", f"no user {user!r} (a student or teacher)")
            continue
        is_home = cls in p.homerooms or cls in known["class"]
        is_section = cls in p.sections or cls in known["section"]
        if not (is_home or is_section):
            p.fail("enrollments", line, "classSourcedId", f"no class {cls!r}")
            continue
        if role == "student" and kind == "student":
            if is_section:
                p.skipped["student enrollments in scheduled classes (implied by the homeroom)"] += 1
                continue
            begin = _day(p, "enrollments", line, row, "beginDate") or today
            end = _day(p, "enrollments", line, row, "endDate")
            if end is None:
                if user in current:
                    p.fail("enrollments", line, "classSourcedId",
                           f"the student already has a current homeroom enrollment (line {current[user]})")  # fmt: skip
                    continue
                current[user] = line
            p.enrolments[sid] = {"line": line, "student": user, "class": cls, "start": begin, "end": end}
        elif role in TEACHER_ROLES and kind == "teacher":
            target = p.homeroom_teacher if is_home else p.section_teacher
            if cls not in target or (row.get("primary") or "").lower() == "true":
                target[cls] = user
        else:
            p.skipped[f"enrollments with role {role}"] += 1


# --- the gradebook: checked here as far as a row alone tells; the grading services check the rest ------

LINE_ITEM_COLUMNS = {"title": "title", "date": "dueDate", "max_score": "resultValueMax",
                     "term_id": "gradingPeriodSourcedId", "assessment_type_id": "categorySourcedId",
                     "class_subject_id": "classSourcedId"}  # fmt: skip


def _decimal_cell(raw):
    """A number cell as the plain decimal text the grading schemas read ("0.50000" -> "0.5")."""
    if raw is None:
        return None
    try:
        number = Decimal(raw)
    except InvalidOperation:
        return raw  # the schema names it
    if not number.is_finite():
        return raw
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _schema(p: Plan, file, line, schema, values, columns):
    """values checked by one of the native API's schemas; each problem reported on the column it came
    from. None when any."""
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "row"
            p.fail(file, line, columns.get(name, name), err["msg"])
        return None


def _plan_categories(p, rows):
    seen, titles = {}, {}
    for line, row in rows:
        sid = _sid(p, "categories", line, row, seen)
        if sid is None:
            continue
        if _deleted(row):
            p.gradebook_deletes.append(("category", sid, "categories", line))
            continue
        body = _schema(p, "categories", line, AssessmentTypeCreate,
                       {"name": row.get("title"), "weight": _decimal_cell(row.get("weight")) or "1"},
                       {"name": "title", "weight": "weight"})  # fmt: skip
        if body is None:
            continue
        if body.name in titles:  # one assessment type of a name per school
            p.fail("categories", line, "title", f"the same title as line {titles[body.name]}")
            continue
        titles[body.name] = line
        p.categories[sid] = {"line": line, "name": body.name, "weight": body.weight}


def _plan_line_items(p, rows, known):
    seen = {}
    for line, row in rows:
        sid = _sid(p, "lineItems", line, row, seen)
        if sid is None:
            continue
        if _deleted(row):
            p.gradebook_deletes.append(("lineitem", sid, "lineItems", line))
            continue
        section, category = row.get("classSourcedId"), row.get("categorySourcedId")
        term = row.get("gradingPeriodSourcedId") or row.get("academicSessionSourcedId")
        refs_ok = True
        if section not in p.sections and section not in known["section"]:
            p.fail(
                "lineItems",
                line,
                "classSourcedId",
                f"no scheduled class {section!r} (a subject taught in a class)",
            )
            refs_ok = False
        if category not in p.categories and category not in known["category"]:
            p.fail("lineItems", line, "categorySourcedId", f"no category {category!r}")
            refs_ok = False
        if term not in p.terms and term not in known["term"]:
            p.fail("lineItems", line, "gradingPeriodSourcedId", f"no term {term!r}")
            refs_ok = False
        if _decimal_cell(row.get("resultValueMin")) not in (None, "0"):
            p.fail("lineItems", line, "resultValueMin", "scores start at 0 in Schoolhouse")
        due = _day(p, "lineItems", line, row, "dueDate") or _day(p, "lineItems", line, row, "assignDate")
        if due is None and row.get("dueDate") is None and row.get("assignDate") is None:
            p.fail("lineItems", line, "dueDate", "is required")
        body = _schema(p, "lineItems", line, AssessmentCreate,
                       {"class_subject_id": 0, "term_id": 0, "assessment_type_id": 0, "title": row.get("title"),
                        "max_score": _decimal_cell(row.get("resultValueMax")), "date": due or date(2000, 1, 1)},
                       LINE_ITEM_COLUMNS)  # fmt: skip
        if body is not None and refs_ok and due is not None:
            p.line_items[sid] = {"line": line, "section": section, "category": category, "term": term,
                                 "values": {"title": body.title, "max_score": body.max_score, "date": due}}  # fmt: skip


def _plan_results(p, rows, known):
    seen = {}
    for line, row in rows:
        sid = _sid(p, "results", line, row, seen)
        if sid is None:
            continue
        if _deleted(row):
            p.skipped[
                "results with status tobedeleted (a grade is changed, not deleted, in Schoolhouse)"
            ] += 1
            continue
        line_item, student = row.get("lineItemSourcedId"), row.get("studentSourcedId")
        if line_item not in p.line_items and line_item not in known["lineitem"]:
            p.fail("results", line, "lineItemSourcedId", f"no lineItem {line_item!r}")
        student_kind = p.people.get(student, (None,))[0] or _known_kind(student, known)
        if student_kind != "student":
            p.fail("results", line, "studentSourcedId", f"no student {student!r}")
        if row.get("score") is None:
            p.fail("results", line, "score", "is required (Schoolhouse records scores)")
            continue
        values = {"student_id": 0, "score": _decimal_cell(row.get("score"))}
        if row.get("comment") is not None:
            values["comment"] = row["comment"]
        body = _schema(p, "results", line, GradeIn, values, {"score": "score", "comment": "comment"})
        if body is not None:
            p.results[sid] = {"line": line, "line_item": line_item, "student": student, "score": body.score,
                              "comment": row.get("comment")}  # fmt: skip


BAND = re.compile(r"\{\s*([^{}:]+?)\s*:\s*([^{}]+?)\s*\}")


def _plan_scales(p, rows):
    for line, row in rows:
        if _deleted(row) or row.get("classSourcedId") or row.get("courseSourcedId"):
            p.skipped["scoreScales of a class or course, or tobedeleted"] += 1
            continue
        if p.scale is not None:
            p.skipped["scoreScales after the school's first"] += 1
            continue
        bands = []
        for low, letter in BAND.findall(row.get("scoreScaleValue") or ""):
            try:
                bands.append({"letter": letter, "min": float(Decimal(low))})
            except InvalidOperation:
                p.fail("scoreScales", line, "scoreScaleValue", f"{low!r} is not a number")
        if not bands:
            p.fail("scoreScales", line, "scoreScaleValue", "needs {lowest score:letter} entries")
            continue
        bands.sort(key=lambda b: b["min"], reverse=True)
        body = _schema(p, "scoreScales", line, InstitutionUpdate, {"grading_scale": bands},
                       {"grading_scale": "scoreScaleValue"})  # fmt: skip
        if body is not None:
            p.scale = {"line": line, "bands": [b.model_dump() for b in body.grading_scale]}


# --- writing ------------------------------------------------------------------------------------------


ENTITIES = ("year", "term", "subject", "class", "section", "student", "teacher", "guardian", "enrolment",
            "category", "lineitem", "result")  # fmt: skip
MODELS = {
    "category": AssessmentType,
    "lineitem": Assessment,
    "result": Grade,
    "year": AcademicYear,
    "term": Term,
    "subject": Subject,
    "class": SchoolClass,
    "section": ClassSubject,
    "student": Student,
    "teacher": Teacher,
    "guardian": Guardian,
    "enrolment": Enrolment,
}


def known_ids(institution_id) -> dict:
    """{entity: {sourcedId: local id}} of this school's earlier imports whose records still exist."""
    out = {e: {} for e in ENTITIES}
    rows = db.session.execute(
        select(OneRosterSourcedId.entity, OneRosterSourcedId.sourced_id, OneRosterSourcedId.local_id).where(
            OneRosterSourcedId.institution_id == institution_id
        )
    ).all()
    by_entity = defaultdict(dict)
    for entity, sid, local in rows:
        by_entity[entity][sid] = local
    for entity, sids in by_entity.items():
        model = MODELS.get(entity)
        if model is None:
            continue
        alive = set(
            db.session.execute(
                select(model.id).where(
                    model.institution_id == institution_id, model.id.in_(list(sids.values()))
                )
            ).scalars()
        )
        out[entity] = {s: i for s, i in sids.items() if i in alive}
    return out


class Writer:
    def __init__(self, institution_id, actor_id, known):
        self.iid, self.actor, self.known = institution_id, actor_id, known
        self.created, self.updated, self.deleted = Counter(), Counter(), Counter()
        self.audit = []
        self.new_maps = []

    def local(self, entity, sid):
        return self.known[entity].get(sid)

    def upsert(self, entity, sid, values, find=None):
        """The record an earlier import made for `sid` (or `find()`: one of the school's own), updated;
        else a new one. Returns its id."""
        model = MODELS[entity]
        ident = self.local(entity, sid)
        obj = db.session.get(model, ident) if ident is not None else None
        adopted = False
        if obj is None and find is not None:
            obj = find()
            adopted = obj is not None
        if obj is None:
            obj = model(institution_id=self.iid, **values)
            db.session.add(obj)
            db.session.flush()
            self.created[entity] += 1
            self.audit.append(audit.entry("create", entity_type(entity), obj.id, {"sourcedId": [None, sid]},
                                          institution_id=self.iid, actor_id=self.actor))  # fmt: skip
        else:
            changes = {
                k: [_plain(getattr(obj, k)), _plain(v)] for k, v in values.items() if getattr(obj, k) != v
            }
            for k, v in values.items():
                setattr(obj, k, v)
            if changes:
                self.updated[entity] += 1
                db.session.flush()
                self.audit.append(audit.entry("update", entity_type(entity), obj.id, changes,
                                              institution_id=self.iid, actor_id=self.actor))  # fmt: skip
        if ident is None or adopted or ident != obj.id:
            self.new_maps.append((entity, sid, obj.id))
        self.known[entity][sid] = obj.id
        return obj

    def finish(self):
        """The sourcedId of each record made or adopted, in one upsert per chunk (a re-import moves
        a sourcedId to the record it names now)."""
        now = utcnow()
        rows = {(entity, sid): local for entity, sid, local in self.new_maps}
        values = [{"institution_id": self.iid, "entity": entity, "sourced_id": sid, "local_id": local,
                   "created_at": now} for (entity, sid), local in rows.items()]  # fmt: skip
        for i in range(0, len(values), 5000):
            stmt = insert_for(OneRosterSourcedId)
            stmt = stmt.on_conflict_do_update(
                index_elements=["institution_id", "entity", "sourced_id"],
                set_={"local_id": stmt.excluded.local_id},
            )
            db.session.execute(stmt, values[i : i + 5000])
        audit.record_many(self.audit)
        db.session.flush()


def entity_type(entity):
    return {"year": "academic_year", "section": "class_subject", "subject": "subject",
            "category": "assessment type"}.get(entity, entity)  # fmt: skip


def _plain(v):
    return v.isoformat() if isinstance(v, date) else v


def apply(p: Plan, institution_id, actor_id, known, today) -> Writer:
    w = Writer(institution_id, actor_id, known)
    iid = institution_id

    def one(model, *conds):
        return db.session.execute(select(model).where(model.institution_id == iid, *conds)).scalars().first()

    for sid, y in p.years.items():
        vals = {k: y[k] for k in ("name", "start_date", "end_date")}
        vals["is_current"] = y["start_date"] <= today <= y["end_date"]
        w.upsert("year", sid, vals, lambda y=y: one(AcademicYear, AcademicYear.name == y["name"]))
    for sid, t in p.terms.items():
        year_id = w.local("year", t["parent"])
        vals = {"name": t["name"], "start_date": t["start_date"], "end_date": t["end_date"],
                "academic_year_id": year_id}  # fmt: skip
        w.upsert("term", sid, vals,
                 lambda t=t, y=year_id: one(Term, Term.academic_year_id == y, Term.name == t["name"]))  # fmt: skip
    for sid, s in p.subjects.items():
        w.upsert("subject", sid, {"name": s["name"], "code": s["code"]},
                 lambda s=s: one(Subject, Subject.code == s["code"]))  # fmt: skip
    used_sections = defaultdict(set)
    for c in db.session.execute(
        select(SchoolClass.academic_year_id, SchoolClass.grade_level, SchoolClass.section).where(
            SchoolClass.institution_id == iid
        )
    ):
        used_sections[(c[0], c[1])].add(c[2])
    for sid, h in p.homerooms.items():
        year_id = _year_id(w, h["year"])
        existing = db.session.get(SchoolClass, w.local("class", sid)) if w.local("class", sid) else None
        m = SECTION.search(h["name"])
        section = existing.section if existing is not None else (m.group(2) if m else None)
        taken = used_sections[(year_id, h["grade"])]
        if existing is None and (section is None or section in taken):
            section = next(s for s in _letters() if s not in taken)
        taken.add(section)
        vals = {"name": h["name"], "academic_year_id": year_id, "grade_level": h["grade"], "section": section}
        w.upsert("class", sid, vals)  # its homeroom teacher once the people are written
    # people before the rest that names them
    for sid, (kind, values, _line) in p.people.items():
        vals = {k: v for k, v in values.items() if not k.startswith("_")}
        find = None
        if kind == "student":
            find = lambda v=vals: one(Student, Student.admission_number == v["admission_number"])  # noqa: E731
        elif kind == "teacher":
            find = lambda v=vals: one(Teacher, Teacher.employee_number == v["employee_number"])  # noqa: E731
        w.upsert(kind, sid, vals, find)
    for sid, teacher in p.homeroom_teacher.items():
        cls = db.session.get(SchoolClass, w.local("class", sid))
        if cls.homeroom_teacher_id != w.local("teacher", teacher):
            cls.homeroom_teacher_id = w.local("teacher", teacher)
            w.updated["homeroom teacher"] += 1
    for sid, s in p.sections.items():
        vals = {"class_id": w.local("class", s["homeroom"]), "subject_id": w.local("subject", s["course"])}
        teacher = p.section_teacher.get(sid)
        vals["teacher_id"] = w.local("teacher", teacher) if teacher else None
        w.upsert("section", sid, vals,
                 lambda v=vals: one(ClassSubject, ClassSubject.class_id == v["class_id"],
                                    ClassSubject.subject_id == v["subject_id"]))  # fmt: skip
    for (student, guardian), (rel, primary) in p.links.items():
        s_id, g_id = w.local("student", student), w.local("guardian", guardian)
        link = db.session.get(StudentGuardian, (s_id, g_id))
        if link is None:
            db.session.add(StudentGuardian(institution_id=iid, student_id=s_id, guardian_id=g_id,
                                           relationship_type=rel, is_primary=primary))  # fmt: skip
            w.created["guardian link"] += 1
        elif (link.relationship_type, link.is_primary) != (rel, primary):
            link.relationship_type, link.is_primary = rel, primary
            w.updated["guardian link"] += 1
    db.session.flush()
    for sid, e in p.enrolments.items():
        student_id, class_id = w.local("student", e["student"]), w.local("class", e["class"])
        vals = {
            "student_id": student_id,
            "class_id": class_id,
            "start_date": e["start"],
            "end_date": e["end"],
        }
        if w.local("enrolment", sid) is None and e["end"] is None:
            current = one(Enrolment, Enrolment.student_id == student_id, Enrolment.end_date.is_(None))
            if current is not None and current.class_id != class_id:
                # moved here from another class: that enrolment ends the day before
                current.end_date = max(current.start_date, e["start"] - timedelta(days=1))
                db.session.flush()
            elif current is not None:
                w.upsert("enrolment", sid, {**vals, "start_date": current.start_date}, lambda c=current: c)
                continue
        vals["reason"] = "OneRoster import"
        w.upsert("enrolment", sid, vals)
    for sid, day in p.ends.items():
        obj = db.session.get(Enrolment, w.local("enrolment", sid)) if w.local("enrolment", sid) else None
        if obj is not None and obj.end_date is None:
            obj.end_date = max(obj.start_date, day)
            w.updated["enrolment"] += 1
    now = utcnow()
    for entity, sid in p.deletes:
        ident = w.local(entity, sid)
        obj = db.session.get(MODELS[entity], ident) if ident is not None else None
        if obj is not None and obj.deleted_at is None:
            obj.deleted_at = now
            w.updated[entity] += 1
            w.audit.append(audit.entry("delete", entity_type(entity), obj.id, None,
                                       institution_id=iid, actor_id=actor_id))  # fmt: skip
    _apply_gradebook(p, w, iid, actor_id)
    if not p.errors:
        w.finish()
    return w


def _one(iid, model, *conds):
    return db.session.execute(select(model).where(model.institution_id == iid, *conds)).scalars().first()


def _apply_gradebook(p: Plan, w: Writer, iid, actor_id):
    """Categories, lineItems, results and the scale, through the grading services, acting as the
    importing admin. What a service refuses is a row error (and then nothing is kept)."""
    principal = Principal(
        user_id=actor_id or 0, institution_id=iid, role="admin", session_id="oneroster-import"
    )
    try:
        for sid, c in p.categories.items():
            w.upsert("category", sid, {"name": c["name"], "weight": c["weight"]},
                     lambda c=c: _one(iid, AssessmentType, AssessmentType.name == c["name"]))  # fmt: skip
        for sid, li in p.line_items.items():
            _write_line_item(p, w, principal, sid, li)
        by_line_item = defaultdict(list)
        for sid, r in p.results.items():
            by_line_item[r["line_item"]].append((sid, r))
        for line_item, results in by_line_item.items():
            _write_results(p, w, principal, line_item, results)
        for entity, sid, file, line in p.gradebook_deletes:
            _delete(p, w, principal, entity, sid, file, line)
        if p.scale is not None:
            inst = db.session.get(Institution, iid)
            if audit.apply_update(inst, {"grading_scale": p.scale["bands"]}, "institution"):
                w.updated["scoreScale"] += 1
    except Conflict as exc:  # a unique or foreign-key clash at a flush: the transaction is over
        p.fail("lineItems", 0, "row", exc.detail)


def _write_line_item(p, w, principal, sid, li):
    values = {**li["values"], "term_id": w.local("term", li["term"]),
              "assessment_type_id": w.local("category", li["category"])}  # fmt: skip
    section = w.local("section", li["section"])
    ident = w.local("lineitem", sid)
    obj = db.session.get(Assessment, ident) if ident is not None else None
    try:
        if obj is None:
            obj = grading.create_assessment({**values, "class_subject_id": section}, principal)
            w.created["lineitem"] += 1
            w.new_maps.append(("lineitem", sid, obj.id))
        elif obj.class_subject_id != section:
            p.fail("lineItems", li["line"], "classSourcedId", "a lineItem stays in its class")
            return
        else:
            changed = any(getattr(obj, k) != v for k, v in values.items())
            grading.update_assessment(obj, db.session.get(ClassSubject, section), values, principal)
            if changed:
                w.updated["lineitem"] += 1
    except ValidationFailed as exc:
        for name, error in exc.errors.items():
            p.fail("lineItems", li["line"], LINE_ITEM_COLUMNS.get(name, name), error)
        return
    w.known["lineitem"][sid] = obj.id


def _result_error(error):
    if "is not enrolled" not in error:
        return error
    # The usual cause is a student who has since left the class, in a file of current enrollments only.
    return (
        f"{error} on the lineItem's date: enrollments.csv must list the enrollment that covered it, with "
        "its endDate if it has ended (a Schoolhouse oneroster_bulk export with params.history does)"
    )


def _write_results(p, w, principal, line_item, results):
    ident = w.local("lineitem", line_item)
    if ident is None:  # its lineItem row failed: reported there
        for _, r in results:
            p.fail("results", r["line"], "lineItemSourcedId", f"lineItem {line_item!r} was not written")
        return
    assessment = db.session.get(Assessment, ident)
    rows = []
    for _, r in results:
        values = {"student_id": w.local("student", r["student"]), "score": r["score"]}
        if r["comment"] is not None:
            values["comment"] = r["comment"]
        rows.append(GradeIn.model_validate(values))
    try:
        out = grading.put_grades(assessment, db.session.get(ClassSubject, assessment.class_subject_id), rows,
                                 principal, answer=False)  # fmt: skip
    except ValidationFailed as exc:
        for name, error in exc.errors.items():  # grades[i].score, grades[i].student_id
            m = re.match(r"grades\[(\d+)\]\.(\w+)", name)
            i, column = (int(m.group(1)), m.group(2)) if m else (0, name)
            column = {"student_id": "studentSourcedId"}.get(column, column)
            p.fail(
                "results",
                results[i][1]["line"],
                column,
                _result_error(error.replace(f"student {rows[i].student_id} ", "the student ")),
            )
        return
    for counter, n in ((w.created, out["counts"]["created"]), (w.updated, out["counts"]["updated"])):
        if n:
            counter["result"] += n
    grades = dict(db.session.execute(
        select(Grade.student_id, Grade.id).where(Grade.assessment_id == assessment.id)
    ).all())  # fmt: skip
    for (sid, _), row in zip(results, rows, strict=True):
        gid = grades[row.student_id]
        if w.local("result", sid) != gid:
            w.new_maps.append(("result", sid, gid))
        w.known["result"][sid] = gid


def _delete(p, w, principal, entity, sid, file, line):
    ident = w.local(entity, sid)
    obj = db.session.get(MODELS[entity], ident) if ident is not None else None
    if obj is None:
        return  # never imported here, or already gone
    try:
        if entity == "lineitem":
            grading.delete_assessment(obj, db.session.get(ClassSubject, obj.class_subject_id), principal)
        else:
            grading.delete_assessment_type(obj)
    except ApiError as exc:
        p.fail(file, line, "status", exc.detail)
        return
    w.deleted[entity] += 1


def _year_id(w, year):
    if isinstance(year, tuple):  # ("term", sid): an earlier import's term
        return db.session.get(Term, w.local("term", year[1])).academic_year_id
    return w.local("year", year)


def _letters():
    for i in range(1, 10_000):
        s, n = "", i
        while n:
            n, r = divmod(n - 1, 26)
            s = chr(65 + r) + s
        yield s


def run(data: bytes, limit: int, institution_id, actor_id, today, dry_run) -> dict:
    """Check and (when nothing is wrong) write a OneRoster zip in the caller's transaction."""
    files = read(data, limit)
    rows = sum(len(files[n]) for n in FILES)
    known = known_ids(institution_id)
    p = plan(files, known, today)
    result = {
        "rows": rows,
        "dry_run": dry_run,
        "failed": len(p.failed_rows),
        "errors": p.errors,
        "errors_truncated": len(p.errors) >= MAX_REPORTED_ERRORS,
        "created": {},
        "updated": {},
        "skipped": dict(p.skipped),
        "written": False,
    }
    if p.errors:
        return result
    g.audit_actor_id = actor_id  # the rows the grading services audit name the importing admin
    try:
        w = apply(p, institution_id, actor_id, known, today)
    finally:
        g.pop("audit_actor_id", None)
    if p.errors:  # what only the grading services could tell: nothing is kept (the caller rolls back)
        result.update(failed=len(p.failed_rows), errors=p.errors,
                      errors_truncated=len(p.errors) >= MAX_REPORTED_ERRORS)  # fmt: skip
        return result
    result["created"], result["updated"] = dict(w.created), dict(w.updated)
    result["deleted"] = dict(w.deleted)
    result["written"] = not dry_run
    return result
