"""Announcements: staff post to an audience; a task fans the post out to its recipients.

Posting writes the announcement and enqueues `tasks.announcements.deliver` after the commit. Delivery
(`deliver`) runs in one transaction, safe to run twice:

1. Recipients, set-based: one INSERT ... SELECT per kind of person (guardians, students, staff logins)
   into announcement_recipients, ON CONFLICT (announcement, kind, person) DO NOTHING. A guardian of two
   children in the class is one row; a second run adds nobody.
2. Messages for the rows this run added only, by each person's channel: guardians by `notify_by`
   (e-mail, SMS or both; app/notifications/services.py `channels`), staff by e-mail. Students get no
   message (the school reaches families through their guardians); they read it in the app. Each message
   has the dedupe key announcement:{id}:{kind}:{person}, so the outboxes hold it once however often
   this runs.
3. Commit, then one batch send per outbox (the every-minute dispatchers would send them anyway): no
   task per message, so ten thousand recipients are two broker messages, not ten thousand.
"""

import logging

from sqlalchemy import and_, case, func, literal, or_, select, update

from app.academics.models import Enrolment, SchoolClass
from app.access.rules import class_in_scope_or_404, enrolled_on
from app.announcements.models import Announcement, AnnouncementRecipient
from app.audit import services as audit
from app.core.auth import Principal
from app.core.background import enqueue_after_commit
from app.core.errors import Forbidden, NotFound, ValidationFailed
from app.core.models import utcnow
from app.core.upsert import in_chunks, insert_for
from app.extensions import db
from app.institutions.calendar import school_today
from app.institutions.models import Institution
from app.notifications import mailer, sms, sms_services
from app.notifications.services import channels, enqueue_emails, institution_scope
from app.people.models import Guardian, Student, StudentGuardian, User

log = logging.getLogger("schoolhouse.announcements")

DELIVER_TASK = "tasks.announcements.deliver"
EMAIL_DISPATCH_TASK = "tasks.notifications.dispatch_outbox"
SMS_DISPATCH_TASK = "tasks.notifications.dispatch_sms_outbox"
STAFF_ROLES = ("admin", "teacher", "accountant")
TEACHER_AUDIENCES = ("class", "guardians")
MESSAGE_CHUNK = 500  # outbox rows per INSERT (SQLite allows 32,766 bound values per statement)
SMS_MAX_SEGMENTS = 3  # a longer announcement is cut short by SMS; the full text is in the app and e-mail

R = AnnouncementRecipient.__table__


# -- posting ---------------------------------------------------------------------------------------------


def _check_audience(p: Principal, data: dict) -> None:
    audience = data["audience"]
    needs = {"grade": "grade_level", "class": "class_id", "guardians": "class_id"}.get(audience)
    errors = {}
    for name in ("grade_level", "class_id"):
        if name == needs and data.get(name) is None:
            errors[name] = f"is required for audience {audience}"
        elif name != needs and data.get(name) is not None:
            errors[name] = f"is not used with audience {audience}"
    if errors:
        raise ValidationFailed(errors)
    if p.role == "teacher" and audience not in TEACHER_AUDIENCES:
        raise Forbidden("Teachers post to their own classes or to those classes' guardians.")
    if needs == "class_id":
        class_in_scope_or_404(data["class_id"], p)  # a teacher's own classes; another's is not found
    elif needs == "grade_level":
        live = select(SchoolClass.id).where(
            SchoolClass.grade_level == data["grade_level"], SchoolClass.deleted_at.is_(None)
        )
        if db.session.execute(live.limit(1)).scalar() is None:
            raise ValidationFailed({"grade_level": "no class of the school is in this grade"})


def post_announcement(p: Principal, data: dict) -> Announcement:
    """Validate the audience for this caller, store the announcement, deliver it after the commit."""
    _check_audience(p, data)
    announcement = Announcement(
        author_id=p.user_id,
        title=data["title"],
        body=data["body"],
        audience=data["audience"],
        grade_level=data.get("grade_level"),
        class_id=data.get("class_id"),
        status="queued",
        recipient_count=0,
        email_count=0,
        sms_count=0,
        created_at=utcnow(),
    )
    db.session.add(announcement)
    db.session.flush()
    audit.record(
        "create",
        "announcement",
        announcement.id,
        {"audience": [None, announcement.audience], "title": [None, announcement.title]},
    )
    enqueue_after_commit(DELIVER_TASK, announcement.id)  # sent by this commit, never after a rollback
    db.session.commit()
    return announcement


# -- delivery --------------------------------------------------------------------------------------------


def _stamp(iid, aid, kind, now):
    return (literal(iid), literal(aid), literal(kind), literal(now))


def _students_of(a: Announcement, today):
    """Live active students of the audience (enrolled today in its class, or a class of its grade)."""
    live = [
        Student.institution_id == a.institution_id,
        Student.deleted_at.is_(None),
        Student.status == "active",
    ]
    if a.audience == "school":
        return select(Student.id).where(*live)
    classes = select(SchoolClass.id).where(
        SchoolClass.institution_id == a.institution_id, SchoolClass.deleted_at.is_(None)
    )
    classes = (
        classes.where(SchoolClass.id == a.class_id)
        if a.audience in ("class", "guardians")
        else classes.where(SchoolClass.grade_level == a.grade_level)
    )
    return (
        select(Enrolment.student_id)
        .join(Student, Student.id == Enrolment.student_id)
        .where(
            Enrolment.institution_id == a.institution_id,
            Enrolment.class_id.in_(classes),
            enrolled_on(today),
            *live,
        )
    )


def _recipient_selects(a: Announcement, now, today):
    """{kind: SELECT (institution_id, announcement_id, kind, created_at, person_id) DISTINCT}."""
    iid, aid = a.institution_id, a.id
    selects = {}
    if a.audience == "staff" or a.audience == "school":
        selects["user"] = select(*_stamp(iid, aid, "user", now), User.id).where(
            User.institution_id == iid,
            User.role.in_(STAFF_ROLES),
            User.is_active.is_(True),
            User.deleted_at.is_(None),
        )
    if a.audience == "staff":
        return selects
    students = _students_of(a, today)
    if a.audience != "guardians":
        selects["student"] = select(*_stamp(iid, aid, "student", now), Student.id).where(
            Student.id.in_(students)
        )
    selects["guardian"] = select(*_stamp(iid, aid, "guardian", now), Guardian.id).where(
        Guardian.institution_id == iid,
        Guardian.deleted_at.is_(None),
        Guardian.id.in_(select(StudentGuardian.guardian_id).where(StudentGuardian.student_id.in_(students))),
    )
    return selects


def _add_recipients(a: Announcement, now, today) -> dict[str, list[int]]:
    """INSERT ... SELECT each kind's recipients; returns {kind: [person ids added by this run]}."""
    added = {}
    cols = ["institution_id", "announcement_id", "kind", "created_at", "person_id"]
    for kind, sel in _recipient_selects(a, now, today).items():
        stmt = (
            insert_for(R)
            .from_select(cols, sel)
            .on_conflict_do_nothing(index_elements=["announcement_id", "kind", "person_id"])
            .returning(R.c.person_id)
        )
        added[kind] = list(db.session.execute(stmt).scalars())
    return added


def sms_text(school: str, title: str, body: str) -> sms.Encoded:
    """'{school}: {title}. {body}', cut to SMS_MAX_SEGMENTS segments (with an ellipsis) when longer."""
    full = " ".join(f"{school}: {title}. {body}".split())
    encoded = sms.encode(full)
    if encoded.segments <= SMS_MAX_SEGMENTS:
        return encoded
    low, high = 0, len(full)  # the longest prefix that fits, found by halving: encode() is linear
    while low < high:
        mid = (low + high + 1) // 2
        if sms.encode(full[:mid].rstrip() + "…").segments <= SMS_MAX_SEGMENTS:
            low = mid
        else:
            high = mid - 1
    return sms.encode(full[:low].rstrip() + "…")


def _messages(a: Announcement, inst, added) -> tuple[list[dict], list[dict]]:
    author = db.session.get(User, a.author_id) if a.author_id else None
    author_name = f"{author.first_name} {author.last_name}".strip() if author else None
    school = {"school": inst.name, "school_email": inst.email, "school_phone": inst.phone}
    subject = f"{inst.name}: {a.title}"
    encoded = sms_text(inst.name, a.title, a.body)
    emails, texts = [], []

    def email(kind, ident, to, name):
        emails.append(
            {
                "institution_id": a.institution_id,
                "dedupe_key": f"announcement:{a.id}:{kind}:{ident}",
                "to": to,
                "template": "announcement",
                "subject": subject,
                "context": {
                    **school,
                    "recipient_name": name,
                    "title": a.title,
                    "body": a.body,
                    "author_name": author_name,
                },
            }
        )

    for chunk in in_chunks(added.get("guardian", []), MESSAGE_CHUNK):
        rows = db.session.execute(
            select(
                Guardian.id.label("guardian_id"),
                Guardian.first_name,
                Guardian.last_name,
                Guardian.email,
                Guardian.phone,
                Guardian.notify_by,
            ).where(Guardian.id.in_(chunk))
        ).all()
        for r in rows:
            wants_email, phone = channels(r, f"announcement {a.id}")
            if phone:
                texts.append(
                    {
                        "institution_id": a.institution_id,
                        "dedupe_key": f"announcement:{a.id}:guardian:{r.guardian_id}",
                        "to": phone,
                        "kind": "announcement",
                        "encoded": encoded,
                    }
                )
            if wants_email:
                email("guardian", r.guardian_id, r.email, f"{r.first_name} {r.last_name}".strip())
    for chunk in in_chunks(added.get("user", []), MESSAGE_CHUNK):
        rows = db.session.execute(
            select(User.id, User.first_name, User.last_name, User.email).where(User.id.in_(chunk))
        ).all()
        for r in rows:
            if mailer.valid_address(r.email):
                email("user", r.id, r.email, f"{r.first_name} {r.last_name}".strip())
    return emails, texts


def deliver(announcement_id: int, *, dispatch: bool = True) -> dict:
    """Fan one announcement out (see the module's doc). Returns what this run added. dispatch=False
    leaves the sending to the every-minute dispatchers (bench/announce_bench.py times the fan-out alone)."""
    a = db.session.execute(
        select(Announcement).where(Announcement.id == announcement_id).execution_options(skip_tenant=True)
    ).scalar_one_or_none()
    if a is None:
        return {"recipients": 0, "email": 0, "sms": 0}
    with institution_scope(a.institution_id):
        inst = db.session.get(Institution, a.institution_id)
        now = utcnow()
        added = _add_recipients(a, now, school_today(inst))
        emails, texts = _messages(a, inst, added)
        email_ids = enqueue_emails(emails)
        sms_ids = []
        for chunk in in_chunks(texts, MESSAGE_CHUNK):
            sms_ids.extend(sms_services.enqueue_sms(chunk))
        report = {
            "recipients": sum(len(v) for v in added.values()),
            "email": len(email_ids),
            "sms": len(sms_ids),
        }
        db.session.execute(
            update(Announcement)
            .where(Announcement.id == a.id)
            .values(
                status="delivered",
                delivered_at=func.coalesce(Announcement.delivered_at, now),
                recipient_count=Announcement.recipient_count + report["recipients"],
                email_count=Announcement.email_count + report["email"],
                sms_count=Announcement.sms_count + report["sms"],
            )
        )
        if email_ids and dispatch:
            enqueue_after_commit(EMAIL_DISPATCH_TASK)
        if sms_ids and dispatch:
            enqueue_after_commit(SMS_DISPATCH_TASK)
    db.session.commit()
    log.info("announcement %s delivered: %s", announcement_id, report)
    return report


# -- reading ---------------------------------------------------------------------------------------------


def mine(p: Principal):
    """Recipient rows that name the caller: as a guardian, a student or a staff login."""
    who = [and_(R.c.kind == "user", R.c.person_id == p.user_id)]
    if p.guardian_id:
        who.append(and_(R.c.kind == "guardian", R.c.person_id == p.guardian_id))
    if p.student_id:
        who.append(and_(R.c.kind == "student", R.c.person_id == p.student_id))
    return or_(*who)


def my_announcements(p: Principal):
    """SELECT of the caller's announcements with read state (the list view pages it)."""
    return (
        select(
            Announcement.id,
            Announcement.title,
            Announcement.body,
            Announcement.audience,
            Announcement.created_at,
            AnnouncementRecipient.read_at,
            case((AnnouncementRecipient.read_at.is_(None), False), else_=True).label("read"),
        )
        .join(AnnouncementRecipient, AnnouncementRecipient.announcement_id == Announcement.id)
        .where(mine(p))
    )


def unread_count(p: Principal) -> int:
    return db.session.execute(
        select(func.count()).select_from(AnnouncementRecipient).where(mine(p), R.c.read_at.is_(None))
    ).scalar_one()


def mark_read(p: Principal, announcement_id: int):
    """Mark the caller's copy read (the first time only); 404 when it is not theirs."""
    now = utcnow()
    db.session.execute(
        update(AnnouncementRecipient)
        .where(R.c.announcement_id == announcement_id, mine(p), R.c.read_at.is_(None))
        .values(read_at=now)
    )
    row = db.session.execute(my_announcements(p).where(Announcement.id == announcement_id)).first()
    if row is None:
        raise NotFound("announcement")
    db.session.commit()
    return row


def staff_announcements(p: Principal):
    """Admins: the school's announcements; teachers: their own. With delivery counts."""
    read = (
        select(func.count())
        .select_from(AnnouncementRecipient)
        .where(R.c.announcement_id == Announcement.id, R.c.read_at.is_not(None))
        .correlate(Announcement)
        .scalar_subquery()
    )
    stmt = select(Announcement, read.label("read_count"))
    if p.role != "admin":
        stmt = stmt.where(Announcement.author_id == p.user_id)
    return stmt


__all__ = ["post_announcement", "deliver", "my_announcements", "mark_read", "staff_announcements"]
