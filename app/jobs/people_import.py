"""Teacher and guardian CSV imports, on the student import's machinery (app/jobs/importers.py).

Rules, for both:
- a row is matched on its e-mail address, compared case-insensitively: a known teacher (guardian) is
  updated, an unknown one created. An empty cell means "no value": an existing person keeps what it has;
- everyone imported gets a login with their role unless they have one. A login of the school with that
  address and role that belongs to nobody yet is linked instead of making a second. A new login has no
  usable password: invite_new_users() below is where its invitation is sent;
- a row is refused (reported with its row number, written not at all) when a field is invalid, when its
  address appears earlier in the file, belongs to a deleted or to more than one person, or to a login
  that cannot be theirs (another role, another person, a deleted login, or one the school cannot see);
- teachers: employee_number is required for a new teacher and must not belong to another teacher;
- guardians: admission_numbers lists the guardian's children (separated by ; or ,); every number must be
  a live student of the school, or the row is refused. Links are added, and their relationship and
  is_primary updated when those cells are given; links the file does not name are left alone.
A dry run goes through the same writes and the caller rolls them back (app/jobs/services.py
run_import), so it reports what only the database can tell, such as an address taken by a login the
school cannot see.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select

from app.audit import services as audit
from app.auth.accounts import issue_invitation, unusable_password_hash
from app.core.models import utcnow
from app.core.schemas import _email
from app.core.upsert import insert_for
from app.extensions import db
from app.jobs.importers import DATE_PATTERN, Context, ImportKind, fail
from app.people.models import Guardian, Student, StudentGuardian, Teacher, User

_SEPARATORS = re.compile(r"[;,]")
LOGIN_FIELDS = ("email", "role", "first_name", "last_name", "is_active")


def invite_new_users(user_ids):
    """The logins an import created get an invitation to set their password (app/auth/accounts.py).

    Called in the batch's transaction, after the logins are written and before the batch commits, so
    an invitation queued in the notification outbox is kept exactly when its login is (a dry run never
    calls it)."""
    if not user_ids:
        return
    users = db.session.execute(select(User).where(User.id.in_(user_ids)).order_by(User.id)).scalars()
    for user in users:
        issue_invitation(user)


# --- cells --------------------------------------------------------------------------------------------


def _text(row, name, limit, clean, errors, required=False):
    value = row.get(name)
    if value is None:
        if required:
            errors[name] = "is required"
    elif len(value) > limit:
        errors[name] = f"must be at most {limit} characters"
    else:
        clean[name] = value


def _flag(row, name, clean, errors):
    value = row.get(name)
    if value is None:
        return
    if value.lower() in ("true", "1", "yes"):
        clean[name] = True
    elif value.lower() in ("false", "0", "no"):
        clean[name] = False
    else:
        errors[name] = "must be true or false"


def _person(row):
    """The cells teachers and guardians share: email, first_name, last_name, phone."""
    clean, errors = {}, {}
    if row.get("_extra"):
        errors["row"] = "has more cells than the header has columns"
    if (v := row.get("email")) is None:
        errors["email"] = "is required"
    else:
        try:
            clean["email"] = _email(v)  # lower-cased: the match is case-insensitive
        except ValueError as exc:
            errors["email"] = f"is not a valid e-mail address ({exc})"
    _text(row, "first_name", 100, clean, errors, required=True)
    _text(row, "last_name", 100, clean, errors, required=True)
    _text(row, "phone", 40, clean, errors)
    return clean, errors


def _teacher_row(row):
    clean, errors = _person(row)
    _text(row, "employee_number", 40, clean, errors)
    _text(row, "specialization", 100, clean, errors)
    if (v := row.get("hired_on")) is not None:
        try:
            if not DATE_PATTERN.match(v):
                raise ValueError
            clean["hired_on"] = date.fromisoformat(v)
        except ValueError:
            errors["hired_on"] = "must be a date, YYYY-MM-DD"
    return clean, errors


def _guardian_row(row):
    clean, errors = _person(row)
    if (v := row.get("admission_numbers")) is not None:
        numbers = list(dict.fromkeys(n.strip() for n in _SEPARATORS.split(v) if n.strip()))
        if any(len(n) > 40 for n in numbers):
            errors["admission_numbers"] = "each admission number must be at most 40 characters"
        elif numbers:
            clean["admission_numbers"] = numbers
    _text(row, "relationship", 40, clean, errors)
    _flag(row, "is_primary", clean, errors)
    return clean, errors


# --- the kinds ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class People:
    """What differs between the teacher and the guardian import."""

    model: type
    role: str  # of the logins made; also the record's name in the audit trail and in messages
    fields: tuple  # written from the file (email is the key and is never rewritten)
    validate: Callable  # row -> (clean values, {field: reason})


TEACHERS_SPEC = People(
    Teacher,
    "teacher",
    ("first_name", "last_name", "employee_number", "phone", "specialization", "hired_on"),
    _teacher_row,
)
GUARDIANS_SPEC = People(Guardian, "guardian", ("first_name", "last_name", "phone"), _guardian_row)


def new_result(rows):
    return {
        "rows": rows,
        "created": 0,
        "updated": 0,
        "unchanged": 0,
        "logins_created": 0,
        "logins_linked": 0,
        "failed": 0,
        "errors": [],
        "errors_truncated": False,
        "created_ids": [],  # the people created (none in a dry run)
        "created_user_ids": [],  # their new logins (none in a dry run)
    }


def _guardian_result(rows):
    return {**new_result(rows), "links_created": 0, "links_updated": 0}


def _plan(spec: People, rows, ctx: Context):
    """Validate every row (fields, repeats in the file, children) -> [(line, clean values, errors)]."""
    checked, first_email, first_number = [], {}, {}
    for line, raw in rows:
        clean, errors = spec.validate(raw)
        for name, seen in (("email", first_email), ("employee_number", first_number)):
            value = clean.get(name)
            if value is None:
                continue
            if value in seen:
                errors[name] = f"appears more than once in the file (first on row {seen[value]})"
            else:
                seen[value] = line
        checked.append((line, clean, errors))
    numbers = {n for _, c, _ in checked for n in c.get("admission_numbers", ())}
    if numbers:
        known = dict(
            db.session.execute(
                select(Student.admission_number, Student.id).where(
                    Student.admission_number.in_(numbers), Student.deleted_at.is_(None)
                )
            ).all()
        )
        for _, clean, errors in checked:
            unknown = [n for n in clean.get("admission_numbers", ()) if n not in known]
            if unknown:
                errors["admission_numbers"] = f"no student with admission number {', '.join(unknown)}"
            elif "admission_numbers" in clean:
                clean["student_ids"] = [known[n] for n in clean["admission_numbers"]]
    return checked


def _by_email(model, emails):
    """{lower-cased e-mail: [rows]} of the school's rows of `model` (deleted ones too)."""
    found: dict = {}
    if emails:
        for row in db.session.execute(select(model).where(func.lower(model.email).in_(emails))).scalars():
            found.setdefault(row.email.lower(), []).append(row)
    return found


def _login_for(spec, person, email, logins, linked, errors):
    """(existing login id to link or None, whether a new login is needed) for one row."""
    if person is not None and person.user_id is not None:
        return None, False
    users = logins.get(email, [])
    if not users:
        return None, True
    user = users[0]  # e-mails of logins are unique
    if user.deleted_at is not None:
        errors["email"] = "belongs to a deleted login; restore it first or use another address"
    elif user.role != spec.role:
        errors["email"] = f"is already the address of a {user.role} login (a login has one role)"
    elif user.id in linked:
        errors["email"] = f"is already the login of another {spec.role}"
    else:
        return user.id, False
    return None, False


def _number_owners(numbers):
    if not numbers:
        return {}
    rows = db.session.execute(
        select(Teacher.employee_number, Teacher.id, Teacher.deleted_at).where(
            Teacher.employee_number.in_(numbers)
        )
    ).all()
    return {n: (tid, deleted is not None) for n, tid, deleted in rows}


def _check_number(person, clean, owners, errors):
    number = clean.get("employee_number")
    if number is None:
        if person is None:
            errors["employee_number"] = "is required for a new teacher"
        return
    owner = owners.get(number)
    if owner is not None and (person is None or owner[0] != person.id):
        errors["employee_number"] = (
            "belongs to a deleted teacher" if owner[1] else "belongs to another teacher"
        )


def _insert_logins(spec, wanted, ctx):
    """Create the logins (one statement); {e-mail: id} of those made. An address some other login holds,
    one this school cannot see included, is skipped by the database and comes back missing."""
    if not wanted:
        return {}
    now = utcnow()
    unusable = unusable_password_hash()  # the invitation's link sets the real one
    rows = [
        {
            "institution_id": ctx.institution_id,
            "email": email,
            "password_hash": unusable,
            "role": spec.role,
            "first_name": clean["first_name"],
            "last_name": clean["last_name"],
            "is_active": True,
            "created_at": now,
            "updated_at": now,
        }
        for email, clean in wanted
    ]
    stmt = insert_for(User).values(rows).on_conflict_do_nothing().returning(User.email, User.id)
    made = dict(db.session.execute(stmt).all())
    audit.record_many(
        [
            audit.entry(
                "create",
                "user",
                uid,
                {f: [None, r[f]] for f in LOGIN_FIELDS},
                institution_id=ctx.institution_id,
                actor_id=ctx.actor_id,
            )
            for r in rows
            if (uid := made.get(r["email"])) is not None
        ]
    )
    return made


def _run_batch(spec: People, batch, ctx: Context, result):
    """One batch, written in the caller's transaction: logins first (so a row whose address the
    database refuses is reported, not half written), then the people, then (guardians) the links."""
    rows = []
    for line, clean, errors in batch:
        if errors:
            fail(result, line, errors, email=clean.get("email"))
        else:
            rows.append((line, clean))
    emails = [c["email"] for _, c in rows]
    people = _by_email(spec.model, emails)
    logins = _by_email(User, emails)
    user_ids = [u.id for found in logins.values() for u in found]
    linked = set(
        db.session.execute(
            select(spec.model.user_id).where(spec.model.user_id.in_(user_ids or [-1]))
        ).scalars()
    )
    owners = _number_owners({c["employee_number"] for _, c in rows if c.get("employee_number")})
    planned = []
    for line, clean in rows:
        email, errors = clean["email"], {}
        matches = people.get(email, [])
        live = [p for p in matches if p.deleted_at is None]
        person, login, new_login = (live[0] if len(live) == 1 else None), None, False
        if len(live) > 1:
            ids = ", ".join(str(p.id) for p in live)
            errors["email"] = f"matches more than one {spec.role} ({ids}); keep one of them"
        elif matches and not live:
            errors["email"] = (
                f"belongs to a deleted {spec.role}; restore that record first or use another address"
            )
        else:
            if spec.model is Teacher:
                _check_number(person, clean, owners, errors)
            login, new_login = _login_for(spec, person, email, logins, linked, errors)
        if errors:
            fail(result, line, errors, email=email)
        else:
            planned.append((line, clean, person, login, new_login))
    made = _insert_logins(spec, [(c["email"], c) for _, c, _, _, new in planned if new], ctx)
    creates, written, entries = [], [], []
    for line, clean, person, login, new_login in planned:
        uid = made.get(clean["email"]) if new_login else login
        if new_login and uid is None:
            fail(result, line, {"email": "is already used by another login"}, email=clean["email"])
            continue
        result["logins_linked"] += int(login is not None)
        values = {f: clean[f] for f in spec.fields if f in clean}
        if uid is not None:
            values["user_id"] = uid
        if person is None:
            person = spec.model(email=clean["email"], **values)
            db.session.add(person)
            creates.append(person)
        else:
            for k, v in values.items():
                setattr(person, k, v)
            changes = audit.diff(person, values.keys())
            result["updated" if changes else "unchanged"] += 1
            if changes:
                entries.append(
                    audit.entry(
                        "update",
                        spec.role,
                        person.id,
                        changes,
                        institution_id=ctx.institution_id,
                        actor_id=ctx.actor_id,
                    )
                )
        written.append((person, clean))
    db.session.flush()
    result["created"] += len(creates)
    entries += [
        audit.entry(
            "create",
            spec.role,
            p.id,
            audit.snapshot(p, ("email", *spec.fields, "user_id")),
            institution_id=ctx.institution_id,
            actor_id=ctx.actor_id,
        )
        for p in creates
    ]
    audit.record_many(entries)
    new_users = list(made.values())
    result["logins_created"] += len(new_users)
    if spec.model is Guardian:
        _link_children(written, ctx, result)
    if ctx.dry_run:
        return
    result["created_ids"] += [p.id for p in creates]
    result["created_user_ids"] += new_users
    invite_new_users(new_users)


def _link_children(written, ctx: Context, result):
    """Each guardian to the students their row names: new links added, named ones updated."""
    wanted = [(g.id, sid, clean) for g, clean in written for sid in clean.get("student_ids", ())]
    if not wanted:
        return
    existing = {
        (link.guardian_id, link.student_id): link
        for link in db.session.execute(
            select(StudentGuardian).where(StudentGuardian.guardian_id.in_({g for g, _, _ in wanted}))
        ).scalars()
    }
    entries = []
    for gid, sid, clean in wanted:
        link = existing.get((gid, sid))
        values = {"relationship_type": clean.get("relationship"), "is_primary": clean.get("is_primary")}
        if link is None:
            db.session.add(
                StudentGuardian(
                    student_id=sid,
                    guardian_id=gid,
                    relationship_type=values["relationship_type"] or "guardian",
                    is_primary=bool(values["is_primary"]),
                )
            )
            result["links_created"] += 1
            entries.append(
                audit.entry(
                    "link_guardian",
                    "student",
                    sid,
                    {"guardian_id": [None, gid]},
                    institution_id=ctx.institution_id,
                    actor_id=ctx.actor_id,
                )
            )
            continue
        changes = {}
        for attr, value in values.items():
            if value is not None and getattr(link, attr) != value:
                changes["relationship" if attr == "relationship_type" else attr] = [
                    getattr(link, attr),
                    value,
                ]
                setattr(link, attr, value)
        if changes:
            result["links_updated"] += 1
            entries.append(
                audit.entry(
                    "update_guardian_link",
                    "student",
                    sid,
                    {"guardian_id": [gid, gid], **changes},
                    institution_id=ctx.institution_id,
                    actor_id=ctx.actor_id,
                )
            )
    db.session.flush()
    audit.record_many(entries)


TEACHER_COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "employee_number",
    "phone",
    "specialization",
    "hired_on",
)
GUARDIAN_COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "admission_numbers",
    "relationship",
    "is_primary",
)
REQUIRED = ("email", "first_name", "last_name")

TEACHERS = ImportKind(
    name="teachers",
    columns=TEACHER_COLUMNS,
    required=REQUIRED,
    key="email",
    plan=lambda rows, ctx: _plan(TEACHERS_SPEC, rows, ctx),
    run_batch=lambda batch, ctx, result: _run_batch(TEACHERS_SPEC, batch, ctx, result),
    new_result=new_result,
)
GUARDIANS = ImportKind(
    name="guardians",
    columns=GUARDIAN_COLUMNS,
    required=REQUIRED,
    key="email",
    plan=lambda rows, ctx: _plan(GUARDIANS_SPEC, rows, ctx),
    run_batch=lambda batch, ctx, result: _run_batch(GUARDIANS_SPEC, batch, ctx, result),
    new_result=_guardian_result,
)
