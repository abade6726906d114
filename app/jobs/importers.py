"""CSV imports: the shared machinery (header check, rows, results, the kinds' shape) and the student
import. Teachers and guardians: app/jobs/people_import.py. The header is checked when the file is
uploaded; then (in a task) every row is validated and written in batches, each batch one transaction
(app/jobs/services.py run_import).

Students are upserted on (institution, admission number). Rules:
- columns: admission_number, first_name, last_name (required), date_of_birth (YYYY-MM-DD), gender,
  grade_level (0-20), status (active, graduated, withdrawn), email, class_id (enrol in that class from
  the import's start date, by default the school's today), enrolled_from (YYYY-MM-DD: this row's first
  day in the class instead, e.g. the term's start, so rolls for earlier days can be taken);
- a student has at most one enrolment on any date (app/academics/services.py): a current enrolment in
  another class that began earlier is closed the day before; one in the same class that began later is
  moved back to the earlier day (backdated); any other overlap is a row error naming the enrolment;
- an empty cell means "no value": a new student gets the default, an existing one keeps what it has;
- a row with an error is reported (row number, admission number, field: reason) and not written; the
  other rows are. A dry run reports the same without writing anything;
- cells are stored as given (text): formula-looking names are escaped when they are exported, not here;
- resumable: each batch commits together with the job's progress and running totals, so a run that is
  killed half way continues after the last committed batch and counts every row once.
"""

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import select, update

from app.academics.models import Enrolment, SchoolClass
from app.academics.services import OPEN
from app.audit import services as audit
from app.core.errors import ValidationFailed
from app.core.models import utcnow
from app.core.schemas import HAS_NUL, NUL, _email
from app.core.upsert import insert_for
from app.extensions import db
from app.jobs.schemas import MAX_START_AHEAD_DAYS
from app.people.models import Student

COLUMNS = (
    "admission_number",
    "first_name",
    "last_name",
    "date_of_birth",
    "gender",
    "grade_level",
    "status",
    "email",
    "class_id",
    "enrolled_from",
)
REQUIRED = ("admission_number", "first_name", "last_name")
FIELDS = ("first_name", "last_name", "date_of_birth", "gender", "grade_level", "status", "email")
STATUSES = ("active", "graduated", "withdrawn")
MAX_REPORTED_ERRORS = 1000
DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Context:
    """What every batch of one run needs to know."""

    institution_id: int
    actor_id: int | None
    today: date  # the school's today
    start_date: date  # enrolments made by the import start on this day
    dry_run: bool


@dataclass(frozen=True)
class ImportKind:
    """One kind of import: its columns, and how its rows are checked and written.

    plan(rows, ctx) -> [(line, clean values, errors)] validates the whole file; run_batch(batch, ctx,
    result) writes one batch in the caller's transaction (a dry run's is rolled back by the caller) and
    adds to `result`, which new_result(rows) starts. `key` names a row in the error report."""

    name: str
    columns: tuple
    required: tuple
    key: str
    plan: Callable
    run_batch: Callable
    new_result: Callable
    enrols: bool = False  # takes a start date for the enrolments it makes

    def template(self) -> str:
        return ",".join(self.columns) + "\n"


def decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationFailed({"file": "must be UTF-8 text (save the spreadsheet as 'CSV UTF-8')"}) from None
    if NUL in text:  # refused at upload, like NUL in any other input (app/core/schemas.py)
        raise ValidationFailed({"file": HAS_NUL})
    return text


def check_header(data: bytes, columns=COLUMNS, required=REQUIRED) -> list:
    """At upload: the file is CSV with the required columns and nothing unknown (422 otherwise)."""
    text = decode(data)
    try:
        header = next(csv.reader(io.StringIO(text)), None)
    except csv.Error as exc:
        raise ValidationFailed({"file": f"is not valid CSV: {exc}"}) from None
    if not header or not any(h.strip() for h in header):
        raise ValidationFailed({"file": "is empty: the first line must name the columns"})
    names = [h.strip().lower() for h in header]
    errors = []
    missing = [c for c in required if c not in names]
    if missing:
        errors.append(f"missing column(s): {', '.join(missing)}")
    unknown = [h for h in names if h not in columns]
    if unknown:
        errors.append(f"unknown column(s): {', '.join(unknown)} (allowed: {', '.join(columns)})")
    repeated = sorted({h for h in names if names.count(h) > 1})
    if repeated:
        errors.append(f"repeated column(s): {', '.join(repeated)}")
    if errors:
        raise ValidationFailed({"file": "; ".join(errors)})
    return names


def read_rows(data: bytes):
    """(line number, {column: stripped text or None}) for every non-blank data line."""
    text = decode(data)
    reader = csv.reader(io.StringIO(text))
    names = [h.strip().lower() for h in next(reader)]
    out = []
    for values in reader:
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue
        row = {n: (values[i].strip() or None) if i < len(values) else None for i, n in enumerate(names)}
        if len(values) > len(names):
            row["_extra"] = True
        out.append((line, row))
    return names, out


def validate(row: dict, today: date):
    """Field rules of one row -> (clean values, {field: reason})."""
    errors, clean = {}, {}
    if row.get("_extra"):
        errors["row"] = "has more cells than the header has columns"
    for name in REQUIRED:
        value = row.get(name)
        limit = 40 if name == "admission_number" else 100
        if not value:
            errors[name] = "is required"
        elif len(value) > limit:
            errors[name] = f"must be at most {limit} characters"
        else:
            clean[name] = value
    if (v := row.get("date_of_birth")) is not None:
        try:
            if not DATE_PATTERN.match(v):
                raise ValueError
            born = date.fromisoformat(v)
            if born > today:
                errors["date_of_birth"] = "must not be in the future"
            else:
                clean["date_of_birth"] = born
        except ValueError:
            errors["date_of_birth"] = "must be a date, YYYY-MM-DD"
    if (v := row.get("gender")) is not None:
        if len(v) > 20:
            errors["gender"] = "must be at most 20 characters"
        else:
            clean["gender"] = v
    if (v := row.get("grade_level")) is not None:
        try:
            level = int(v)
            if not 0 <= level <= 20:
                raise ValueError
            clean["grade_level"] = level
        except ValueError:
            errors["grade_level"] = "must be a whole number from 0 to 20"
    if (v := row.get("status")) is not None:
        if v.lower() not in STATUSES:
            errors["status"] = f"must be one of {', '.join(STATUSES)}"
        else:
            clean["status"] = v.lower()
    if (v := row.get("email")) is not None:
        try:
            clean["email"] = _email(v)
        except ValueError as exc:
            errors["email"] = f"is not a valid e-mail address ({exc})"
    if (v := row.get("class_id")) is not None:
        try:
            class_id = int(v)
            if class_id < 1:
                raise ValueError
            clean["class_id"] = class_id
        except ValueError:
            errors["class_id"] = "must be a class id (a positive whole number)"
    if (v := row.get("enrolled_from")) is not None:
        try:
            if not DATE_PATTERN.match(v):
                raise ValueError
            day = date.fromisoformat(v)
            if not date(1900, 1, 1) <= day <= today + timedelta(days=MAX_START_AHEAD_DAYS):
                errors["enrolled_from"] = (
                    f"must be from 1900 to at most {MAX_START_AHEAD_DAYS} days after today"
                )
            elif clean.get("class_id") is None and "class_id" not in errors:
                errors["enrolled_from"] = "needs a class_id on the same row"
            else:
                clean["enrolled_from"] = day
        except ValueError:
            errors["enrolled_from"] = "must be a date, YYYY-MM-DD"
    return clean, errors


def new_result(rows):
    return {
        "rows": rows,
        "created": 0,
        "updated": 0,
        "unchanged": 0,
        "enrolled": 0,
        "failed": 0,
        "errors": [],
        "errors_truncated": False,
        "created_ids": [],  # the students created (none in a dry run)
    }


def fail(result, line, errors, **key):
    """Count a refused row and report it (row number, the row's key, {field: reason})."""
    result["failed"] += 1
    if len(result["errors"]) < MAX_REPORTED_ERRORS:
        result["errors"].append({"row": line, **key, "errors": errors})
    else:
        result["errors_truncated"] = True


def _fail(result, line, admission, errors):
    fail(result, line, errors, admission_number=admission)


def plan(rows, ctx: Context):
    """Validate every row (fields, duplicates in the file, classes) -> [(line, clean values, errors)]."""
    institution_id = ctx.institution_id
    checked, first_seen = [], {}
    for line, raw in rows:
        clean, errors = validate(raw, ctx.today)
        adm = clean.get("admission_number")
        if adm is not None:
            if adm in first_seen:
                errors["admission_number"] = (
                    f"appears more than once in the file (first on row {first_seen[adm]})"
                )
            else:
                first_seen[adm] = line
        checked.append((line, clean, errors))
    class_ids = {c["class_id"] for _, c, _ in checked if "class_id" in c}
    if class_ids:
        known = set(
            db.session.execute(
                select(SchoolClass.id).where(
                    SchoolClass.institution_id == institution_id,
                    SchoolClass.id.in_(class_ids),
                    SchoolClass.deleted_at.is_(None),
                )
            ).scalars()
        )
        for _, clean, errors in checked:
            if clean.get("class_id") is not None and clean["class_id"] not in known:
                errors["class_id"] = f"no such class ({clean['class_id']})"
    return checked


def _existing(institution_id, admissions):
    rows = (
        db.session.execute(
            select(Student).where(
                Student.institution_id == institution_id, Student.admission_number.in_(admissions)
            )
        )
        .scalars()
        .all()
    )
    return {s.admission_number: s for s in rows}


def run_batch(batch, ctx: Context, result):
    """One batch: classify against the database, then (unless dry run) write it in the caller's transaction."""
    institution_id, actor_id, start = ctx.institution_id, ctx.actor_id, ctx.start_date
    valid = [(line, clean) for line, clean, errors in batch if not errors]
    for line, clean, errors in batch:
        if errors:
            _fail(result, line, clean.get("admission_number"), errors)
    existing = _existing(institution_id, [c["admission_number"] for _, c in valid])
    creates, updates, enrol = [], [], []
    for line, clean in valid:
        adm = clean["admission_number"]
        old = existing.get(adm)
        if old is not None and old.deleted_at is not None:
            _fail(
                result,
                line,
                adm,
                {
                    "admission_number": "belongs to a deleted student; restore that record "
                    "first or use another number"
                },
            )
            continue
        values = {f: clean[f] for f in FIELDS if f in clean}
        if old is None:
            values.setdefault("status", "active")
            creates.append((line, adm, values))
        else:
            changes = {
                f: [_plain(getattr(old, f)), _plain(v)] for f, v in values.items() if getattr(old, f) != v
            }
            updates.append((line, old, values, changes))
        if clean.get("class_id") is not None:
            enrol.append((line, adm, clean["class_id"], clean.get("enrolled_from") or start))
    result["created"] += len(creates)
    result["updated"] += sum(1 for u in updates if u[3])
    result["unchanged"] += sum(1 for u in updates if not u[3])
    if ctx.dry_run:
        result["enrolled"] += _enrolments(
            enrol,
            {a: s.id for a, s in existing.items()},
            result,
            institution_id,
            actor_id,
            write=False,
        )
        return
    ids = {adm: s.id for adm, s in existing.items()}
    ids.update(_upsert(creates, updates, institution_id))
    result["created_ids"] += [ids[adm] for _, adm, _ in creates if adm in ids]
    entries = [
        audit.entry(
            "create",
            "student",
            ids[adm],
            {k: [None, _plain(v)] for k, v in {"admission_number": adm, **values}.items()},
            institution_id=institution_id,
            actor_id=actor_id,
        )
        for _, adm, values in creates
        if adm in ids
    ]
    entries += [
        audit.entry("update", "student", old.id, changes, institution_id=institution_id, actor_id=actor_id)
        for _, old, _, changes in updates
        if changes
    ]
    audit.record_many(entries)
    result["enrolled"] += _enrolments(enrol, ids, result, institution_id, actor_id, write=True)


def _plain(value):
    return value.isoformat() if isinstance(value, date) else value


def _upsert(creates, updates, institution_id):
    """INSERT ... ON CONFLICT (institution_id, admission_number) DO UPDATE for the whole batch. Each row
    carries complete values (the file's, over the stored ones), so one statement serves new and known
    students alike, and a row inserted concurrently by someone else is updated rather than failing."""
    now = utcnow()
    rows = []
    for _, adm, values in creates:
        rows.append(
            {
                "institution_id": institution_id,
                "admission_number": adm,
                "first_name": values["first_name"],
                "last_name": values["last_name"],
                "date_of_birth": values.get("date_of_birth"),
                "gender": values.get("gender"),
                "grade_level": values.get("grade_level"),
                "status": values.get("status", "active"),
                "email": values.get("email"),
                "created_at": now,
                "updated_at": now,
            }
        )
    for _, old, values, changes in updates:
        if not changes:
            continue
        merged = {f: values.get(f, getattr(old, f)) for f in FIELDS}
        rows.append(
            {
                "institution_id": institution_id,
                "admission_number": old.admission_number,
                **merged,
                "created_at": old.created_at,
                "updated_at": now,
            }
        )
    if not rows:
        return {}
    stmt = insert_for(Student).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["institution_id", "admission_number"],
        set_={**{f: stmt.excluded[f] for f in FIELDS}, "updated_at": stmt.excluded.updated_at},
        where=Student.deleted_at.is_(None),
    ).returning(Student.admission_number, Student.id)
    # Every row names this institution and the conflict key includes it: only this school's rows change.
    return dict(db.session.execute(stmt).all())


def _span(e) -> str:
    return f"enrolment {e.id} (class {e.class_id}, {e.start_date.isoformat()} to " + (
        f"{e.end_date.isoformat()})" if e.end_date else f"{OPEN})"
    )


def _enrolments(enrol, ids, result, institution_id, actor_id, write):
    """Put students in the class their row names from the row's start (enrolled_from, else the import's
    start date). Per student, at most one enrolment on any date: a current enrolment in another class
    that began earlier is closed the day before; one in the same class that began later is backdated;
    any other overlap is refused for that row, naming the enrolment. Counts the rows that enrol."""
    if not enrol:
        return 0
    student_ids = [ids[adm] for _, adm, _, _ in enrol if adm in ids]
    earliest = min(start for *_, start in enrol)
    # Every enrolment a row could touch: current ones and those ending on or after the earliest start.
    history: dict[int, list] = {}
    for e in db.session.execute(
        select(Enrolment)
        .where(
            Enrolment.institution_id == institution_id,
            Enrolment.student_id.in_(student_ids or [-1]),
            (Enrolment.end_date.is_(None)) | (Enrolment.end_date >= earliest),
        )
        .order_by(Enrolment.start_date)
    ).scalars():
        history.setdefault(e.student_id, []).append(e)
    moves, backdates, new = [], [], []
    for line, adm, class_id, start in enrol:
        sid = ids.get(adm)
        rows = history.get(sid, []) if sid is not None else []
        cur = next((e for e in rows if e.end_date is None), None)
        if cur is not None and cur.class_id == class_id and cur.start_date <= start:
            continue  # already there on that day
        if cur is not None and cur.class_id == class_id:
            action, others = "backdate", [e for e in rows if e is not cur]
        elif cur is not None and cur.start_date < start:
            action, others = "move", [e for e in rows if e is not cur]
        else:
            action, others = "new", rows
        clash = next((e for e in others if e.end_date is None or e.end_date >= start), None)
        if clash is not None:
            _fail(
                result,
                line,
                adm,
                {
                    "class_id": f"the student is already enrolled on some of these dates: {_span(clash)} "
                    f"(a student has one enrolment on any date); change it in the enrolments instead"
                },
            )
            continue
        if action == "backdate":
            backdates.append((cur, start))
        else:
            if action == "move":
                moves.append((cur, start - timedelta(days=1)))
            new.append((sid, class_id, start))
    if not write:
        return len(new) + len(backdates)
    now = utcnow()
    entries = []
    for e, value, field in [(e, d, "end_date") for e, d in moves] + [
        (e, d, "start_date") for e, d in backdates
    ]:
        old = getattr(e, field)
        db.session.execute(
            update(Enrolment)
            .where(Enrolment.id == e.id)
            .values({field: value, "updated_at": now})
            .execution_options(synchronize_session=False)
        )
        entries.append(
            audit.entry(
                "update",
                "enrolment",
                e.id,
                {field: [old.isoformat() if old else None, value.isoformat()]},
                institution_id=institution_id,
                actor_id=actor_id,
            )
        )
    if new:
        table = Enrolment.__table__
        made = db.session.execute(
            table.insert()
            .values(
                [
                    {
                        "institution_id": institution_id,
                        "student_id": sid,
                        "class_id": class_id,
                        "start_date": start,
                        "end_date": None,
                        "reason": "Student import",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for sid, class_id, start in new
                ]
            )
            .returning(table.c.id, table.c.student_id, table.c.class_id, table.c.start_date)
        ).all()
        entries += [
            audit.entry(
                "create",
                "enrolment",
                eid,
                {"student_id": [None, sid], "class_id": [None, cid], "start_date": [None, start.isoformat()]},
                institution_id=institution_id,
                actor_id=actor_id,
            )
            for eid, sid, cid, start in made
        ]
    audit.record_many(entries)
    return len(new) + len(backdates)


STUDENTS = ImportKind(
    name="students",
    columns=COLUMNS,
    required=REQUIRED,
    key="admission_number",
    plan=plan,
    run_batch=run_batch,
    new_result=new_result,
    enrols=True,
)
