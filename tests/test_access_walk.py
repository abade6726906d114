"""The access walk: every operation of the OpenAPI document, called as every role, on records inside and
outside the caller's reach and in another school. It expects what the views declare
(`@roles(..., reach=...)`, app/core/auth.py; docs/ACCESS.md is made from the same declarations):

- a role the operation does not name: 403;
- a role it names, on a record its reach gives it: 2xx;
- ... on a record of the same school outside its reach (own class / other class, own child / other child,
  self / another student, own export / someone else's): 404, as for a missing record;
- ... on a record of another school: 404;
- a list: 2xx, holding the record inside the role's reach and never the one outside it.

The records come from the demo seed (app/seed.py) and a few made here; whether a record is inside or
outside a role's reach is worked out below from the data itself, not from app/access/rules.py. Each call
runs in a savepoint rolled back after it (and Redis, which holds session revocations and rate-limit
counts, is emptied after every write), so each sees the same school.
"""

import io
import re
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from PIL import Image
from sqlalchemy import select

from app.academics.models import AcademicYear, ClassSubject, Enrolment, SchoolClass, Subject, Term
from app.access.matrix import operations, render
from app.announcements.models import Announcement, AnnouncementRecipient
from app.attendance.models import AttendanceCode, AttendanceSession
from app.core.auth import ROLES
from app.core.crypto import encrypt
from app.core.tenancy import set_current_institution
from app.extensions import db
from app.finance.models import C2bPayment, FeeCategory, Invoice, MpesaAccount, Payment, StkRequest
from app.grading.models import Assessment, AssessmentType
from app.institutions.calendar import school_today
from app.institutions.models import Closure, Institution
from app.jobs.models import Job
from app.oneroster.models import OneRosterClient
from app.people.models import Guardian, StudentGuardian, Teacher, User
from app.rollover.models import Rollover
from app.timetable.models import Lesson, Period, Room
from app.uploads.models import Upload
from tests.conftest import PASSWORD, login

UNSCOPED = {"skip_tenant": True}
PREFIX = "/api/v1/"
MAX_PAGES = 20


@dataclass
class Records:
    """Ids of one kind of record: per role, one inside its reach and (where the reach narrows) one
    outside it; and one of another school."""

    inside: dict = field(default_factory=dict)
    outside: dict = field(default_factory=dict)
    foreign: int | None = None

    def everyone(self, ident):
        self.inside.update(dict.fromkeys(ROLES, ident))
        return self


def _one(stmt):
    found = db.session.execute(stmt.limit(1), execution_options=UNSCOPED).scalar()
    assert found is not None, f"the walk needs a row for: {stmt}"
    return found


def _add(obj):
    set_current_institution(None)  # rows are written with their own institution (a call may have set one)
    db.session.add(obj)
    db.session.flush()
    return obj.id


def _current_students(class_ids):
    return select(Enrolment.student_id).where(Enrolment.class_id.in_(class_ids), Enrolment.end_date.is_(None))


class World:
    """The records, the logins and the request bodies of the walk."""

    def __init__(self, client, demo):
        self.client, self.demo = client, demo
        iid, hid = demo["demo_institution_id"], demo["hillside_institution_id"]
        self.today = school_today(db.session.get(Institution, iid))
        start = demo["current_term"]["start"]
        self.day = start + timedelta(days=(7 - start.weekday()) % 7)  # a Monday of the current term
        self.tokens = {role: login(client, f"{role}@demo-academy.test") for role in ROLES}
        self.r: dict[str, Records] = {}
        self._people(iid, hid)
        self._academics(iid, hid)
        self._activity(iid, hid)
        db.session.commit()
        db.session.remove()

    def foreign(self, model, hid, *where):
        return _one(select(model.id).where(model.institution_id == hid, *where).order_by(model.id))

    # --- who is whose -------------------------------------------------------------------------------

    def _people(self, iid, hid):
        d = self.demo
        cid, other = d["demo_class_id"], d["other_class_id"]
        tid = d["demo_teacher_id"]
        self.teacher_classes = set(
            db.session.execute(
                select(SchoolClass.id).where(
                    SchoolClass.institution_id == iid,
                    (SchoolClass.homeroom_teacher_id == tid)
                    | SchoolClass.id.in_(select(ClassSubject.class_id).where(ClassSubject.teacher_id == tid)),
                ),
                execution_options=UNSCOPED,
            ).scalars()
        )
        assert cid in self.teacher_classes and other not in self.teacher_classes
        family_classes = {cid, d["demo_sibling_class_id"]}
        stranger = d["apostrophe_student_id"]  # in the demo class, of another family
        outsider = _one(_current_students([other]))  # in a class the demo teacher does not teach

        students = self.r["students"] = Records(foreign=d["hillside_student_id"]).everyone(
            d["demo_student_id"]
        )
        students.outside = {"teacher": outsider, "guardian": stranger, "student": stranger}

        def guardian_of(student_id):
            return _one(select(StudentGuardian.guardian_id).where(StudentGuardian.student_id == student_id))

        # a guardian none of whose children is in a class the demo teacher teaches
        untaught_guardian = _one(
            select(StudentGuardian.guardian_id)
            .where(StudentGuardian.student_id == outsider)
            .where(
                ~StudentGuardian.guardian_id.in_(
                    select(StudentGuardian.guardian_id).where(
                        StudentGuardian.student_id.in_(_current_students(self.teacher_classes))
                    )
                )
            )
        )
        self.r["guardians"] = Records(
            outside={
                "teacher": untaught_guardian,
                "guardian": guardian_of(stranger),
                "student": guardian_of(stranger),
            },
            foreign=self.foreign(Guardian, hid),
        ).everyone(d["demo_guardian_id"])
        # a teacher who neither teaches nor leads a class of the demo family
        family_teachers = (
            select(ClassSubject.teacher_id)
            .where(ClassSubject.class_id.in_(family_classes))
            .union(select(SchoolClass.homeroom_teacher_id).where(SchoolClass.id.in_(family_classes)))
        )
        stranger_teacher = _one(
            select(Teacher.id).where(Teacher.institution_id == iid, ~Teacher.id.in_(family_teachers))
        )
        self.r["teachers"] = Records(
            outside={"guardian": stranger_teacher, "student": stranger_teacher},
            foreign=d["hillside_teacher_id"],
        ).everyone(tid)
        target = _add(
            User(
                institution_id=iid,
                email="walk-target@demo-academy.test",
                password_hash="x",
                role="accountant",
                first_name="Walk",
                last_name="Target",
                is_active=True,
            )
        )
        self.r["users"] = Records(foreign=self.foreign(User, hid)).everyone(target)
        self.spare_guardian = _add(Guardian(institution_id=iid, first_name="Spare", last_name="Guardian"))

    # --- the school's structure ---------------------------------------------------------------------

    def _academics(self, iid, hid):
        d = self.demo
        cid, other = d["demo_class_id"], d["other_class_id"]
        year = _add(
            AcademicYear(
                institution_id=iid,
                name="Walk 2090",
                start_date=date(2090, 1, 1),
                end_date=date(2090, 12, 31),
            )
        )
        self.r["academic-years"] = Records(foreign=self.foreign(AcademicYear, hid)).everyone(year)
        # an applied rollover of that (empty) year: GET .../rollover finds it, a second apply and the
        # undo have it to act on (app/rollover)
        _add(Rollover(institution_id=iid, source_year_id=year, status="applied", request={}, created_ids={}))
        self.later_term = _one(
            select(Term.id)
            .where(Term.institution_id == iid, Term.id != d["demo_current_term_id"])
            .order_by(Term.start_date.desc())
        )
        term = _add(
            Term(
                institution_id=iid,
                academic_year_id=d["demo_academic_year_id"],
                name="Walk term",
                start_date=d["current_term"]["start"],
                end_date=d["current_term"]["start"],
            )
        )
        self.r["terms"] = Records(foreign=self.foreign(Term, hid)).everyone(term)
        self.free_subject = _add(Subject(institution_id=iid, code="WALK", name="Walking"))
        self.r["subjects"] = Records(foreign=self.foreign(Subject, hid)).everyone(self.free_subject)
        cs_subject = _add(Subject(institution_id=iid, code="WALKCS", name="Walking in class"))
        self.r["classes"] = Records(
            outside={r: other for r in ("teacher", "guardian", "student")},
            foreign=d["hillside_class_id"],
        ).everyone(cid)
        class_subject = _add(
            ClassSubject(
                institution_id=iid, class_id=cid, subject_id=cs_subject, teacher_id=d["demo_teacher_id"]
            )
        )
        self.r["class-subjects"] = Records(
            outside=dict.fromkeys(
                ("teacher", "guardian", "student"),
                _one(select(ClassSubject.id).where(ClassSubject.class_id == other)),
            ),
            foreign=self.foreign(ClassSubject, hid),
        ).everyone(class_subject)

        def enrolment_of(student_id):
            return _one(
                select(Enrolment.id).where(Enrolment.student_id == student_id, Enrolment.end_date.is_(None))
            )

        students = self.r["students"]
        # The demo student's earlier enrolment in a class the demo teacher does not teach: the teacher
        # sees the enrolments of their own classes only, not a student's whole history.
        current_start = db.session.execute(
            select(Enrolment.start_date).where(Enrolment.id == enrolment_of(d["demo_student_id"]))
        ).scalar_one()
        past_elsewhere = _add(
            Enrolment(
                institution_id=iid,
                student_id=d["demo_student_id"],
                class_id=other,
                start_date=current_start - timedelta(days=300),
                end_date=current_start - timedelta(days=1),
            )
        )
        self.r["enrolments"] = Records(
            outside={
                "teacher": past_elsewhere,
                "guardian": enrolment_of(students.outside["guardian"]),
                "student": enrolment_of(students.outside["student"]),
            },
            foreign=self.foreign(Enrolment, hid),
        ).everyone(enrolment_of(d["demo_student_id"]))
        self.assessment_type = _add(AssessmentType(institution_id=iid, name="Walk type", weight=10))
        self.r["assessment-types"] = Records(foreign=self.foreign(AssessmentType, hid)).everyone(
            self.assessment_type
        )
        # the demo teacher teaches this class subject (Mathematics in the demo class)
        mine = _one(select(Assessment.id).where(Assessment.class_subject_id == d["demo_class_subject_id"]))
        elsewhere = _one(
            select(Assessment.id)
            .join(ClassSubject, ClassSubject.id == Assessment.class_subject_id)
            .where(ClassSubject.class_id == other)
        )
        self.r["assessments"] = Records(
            outside=dict.fromkeys(("teacher", "guardian", "student"), elsewhere),
            foreign=self.foreign(Assessment, hid),
        ).everyone(mine)
        fee = _add(
            FeeCategory(institution_id=iid, term_id=self.later_term, name="Walk fee", amount_minor=100)
        )
        self.r["fee-categories"] = Records(foreign=self.foreign(FeeCategory, hid)).everyone(fee)
        closure = _add(
            Closure(
                institution_id=iid,
                start_date=date(2090, 1, 2),
                end_date=date(2090, 1, 3),
                kind="holiday",
                name="Walk closure",
            )
        )
        self.r["closures"] = Records(foreign=self.foreign(Closure, hid)).everyone(closure)
        code = _add(AttendanceCode(institution_id=iid, code="WALK", label="Walking", status="present"))
        self.r["attendance-codes"] = Records(foreign=self.foreign(AttendanceCode, hid)).everyone(code)
        self._timetable(iid, hid, class_subject)

    def _timetable(self, iid, hid, class_subject):
        """Two Sunday periods the seed leaves free: a lesson of the demo class in the first, and the
        second for the lesson a POST adds; a room no lesson uses."""
        d = self.demo

        def period(number, hour):
            return _add(
                Period(
                    institution_id=iid,
                    weekday=6,
                    number=number,
                    name=f"Walk {number}",
                    starts_at=time(hour, 0),
                    ends_at=time(hour, 40),
                )
            )

        first = period(1, 9)
        self.free_period = period(2, 10)
        self.r["periods"] = Records(foreign=self.foreign(Period, hid)).everyone(self.free_period)
        self.r["rooms"] = Records(foreign=self.foreign(Room, hid)).everyone(
            _add(Room(institution_id=iid, name="Walk room"))
        )
        year = db.session.get(AcademicYear, d["demo_academic_year_id"])
        lesson = _add(
            Lesson(
                institution_id=iid,
                class_subject_id=class_subject,
                class_id=d["demo_class_id"],
                subject_id=db.session.get(ClassSubject, class_subject).subject_id,
                teacher_id=d["demo_teacher_id"],
                period_id=first,
                weekday=6,
                start_date=year.start_date,
                end_date=year.end_date,
            )
        )
        self.walk_class_subject = class_subject
        # a lesson of a class none of the demo family is in
        elsewhere = _one(select(Lesson.id).where(Lesson.class_id == d["other_class_id"]).order_by(Lesson.id))
        self.r["lessons"] = Records(
            outside={"guardian": elsewhere, "student": elsewhere}, foreign=self.foreign(Lesson, hid)
        ).everyone(lesson)

    # --- money, sessions, jobs ----------------------------------------------------------------------

    def _activity(self, iid, hid):
        d = self.demo
        sid, stranger = d["demo_student_id"], d["apostrophe_student_id"]
        now = datetime.now(UTC)

        def invoice(student_id, n):
            return _add(
                Invoice(
                    institution_id=iid,
                    student_id=student_id,
                    term_id=self.later_term,
                    number=f"WALK-{n}",
                    status="open",
                    total_minor=1000,
                    paid_minor=0,
                )
            )

        def payment(student_id, n):
            return _add(
                Payment(
                    institution_id=iid,
                    student_id=student_id,
                    amount_minor=100_000_000,
                    method="cash",
                    reference=f"WALK-PAY-{n}",
                    kind="payment",
                    received_at=now,
                    created_at=now,
                )
            )

        family_only = ("guardian", "student")
        self.r["invoices"] = Records(
            outside=dict.fromkeys(family_only, invoice(stranger, 2)), foreign=self.foreign(Invoice, hid)
        ).everyone(invoice(sid, 1))
        self.r["payments"] = Records(
            outside=dict.fromkeys(family_only, payment(stranger, 2)), foreign=self.foreign(Payment, hid)
        ).everyone(payment(sid, 1))  # also the credit a refund is paid from
        self._mpesa(iid, hid, family_only)

        admin = {"Authorization": f"Bearer {self.tokens['admin']['access_token']}"}

        def qr_session(class_id):
            resp = self.client.post(
                f"/api/v1/classes/{class_id}/attendance-sessions", json={"minutes": 60}, headers=admin
            )
            assert resp.status_code == 201, resp.get_json()
            return resp.get_json()

        mine = qr_session(d["demo_class_id"])
        self.checkin_token = mine["token"]
        foreign_session = _add(
            AttendanceSession(
                institution_id=hid,
                class_id=d["hillside_class_id"],
                period=0,
                date=self.today,
                opened_at=now,
                expires_at=now + timedelta(minutes=5),
            )
        )
        self.r["attendance-sessions"] = Records(
            outside={"teacher": qr_session(d["other_class_id"])["id"]}, foreign=foreign_session
        ).everyone(mine["id"])

        def job(job_type, role, institution_id=iid, user_ids=d["demo_user_ids"]):
            return _add(
                Job(
                    institution_id=institution_id,
                    job_type=job_type,
                    kind="class_roster",
                    format="csv",
                    params={},
                    status="failed",
                    requested_by_id=user_ids[role],
                    attempts=0,
                    progress_percent=0,
                    rows_done=0,
                )
            )

        admins_job = job("export", "admin")
        self.r["exports"] = Records(
            inside={
                "admin": admins_job,
                "teacher": job("export", "teacher"),
                "accountant": job("export", "accountant"),
            },
            outside={"teacher": admins_job, "accountant": admins_job},
            foreign=job("export", "admin", hid, d["hillside_user_ids"]),
        )
        self.r["imports"] = Records(
            inside={"admin": job("import", "admin")},
            foreign=job("import", "admin", hid, d["hillside_user_ids"]),
        )

        def oneroster_client(institution_id, n):
            return _add(
                OneRosterClient(
                    institution_id=institution_id,
                    client_id=f"walk-client-{n}",
                    secret_hash="not-a-hash",
                    name="Walk LMS",
                    scopes="roster.readonly",
                    created_at=now,
                )
            )

        self.r["oneroster"] = Records(foreign=oneroster_client(hid, 2)).everyone(oneroster_client(iid, 1))

        def upload(owner_type, owner_id, kind, institution_id=iid):
            # rows only: the views the walk calls read records, and the files' links find no file
            return _add(
                Upload(
                    institution_id=institution_id,
                    owner_type=owner_type,
                    owner_id=owner_id,
                    kind=kind,
                    filename="walk.pdf",
                    content_type="application/pdf",
                    size_bytes=1,
                    sha256="0" * 64,
                    storage_key=f"{institution_id}/walk-{owner_type}-{owner_id}-{kind}.pdf",
                    thumbnail_status="none",
                    created_at=now,
                )
            )

        upload("student", sid, "photo")
        upload("teacher", d["demo_teacher_id"], "photo")
        upload("institution", iid, "logo")
        outsider = self.r["students"].outside["teacher"]
        mine = upload("student", sid, "birth_certificate")
        self.r["documents"] = Records(
            outside={
                "teacher": upload("student", outsider, "medical_form"),
                "guardian": upload("student", stranger, "medical_form"),
                "student": upload("student", stranger, "other"),
            },
            foreign=upload("student", d["hillside_student_id"], "other", hid),
        ).everyone(mine)
        self.r["files"] = Records(foreign=self.r["documents"].foreign).everyone(mine)

        self._announcements(iid, hid)

    def _announcements(self, iid, hid):
        """One announcement to every demo role (the teacher posted it), one to none of them (the admin's),
        one in Hillside."""
        d, now = self.demo, datetime.now(UTC)

        def announcement(institution_id, author_id, title):
            return _add(
                Announcement(
                    institution_id=institution_id,
                    author_id=author_id,
                    title=title,
                    body="Walk.",
                    audience="school",
                    status="delivered",
                    recipient_count=0,
                    email_count=0,
                    sms_count=0,
                    created_at=now,
                )
            )

        to_all = announcement(iid, d["demo_user_ids"]["teacher"], "Walk to all")
        to_none = announcement(iid, d["demo_user_ids"]["admin"], "Walk to nobody")
        foreign = announcement(hid, d["hillside_user_ids"]["admin"], "Walk elsewhere")
        people = [("user", d["demo_user_ids"][role]) for role in ("admin", "teacher", "accountant")]
        people += [("guardian", d["demo_guardian_id"]), ("student", d["demo_student_id"])]
        set_current_institution(None)
        db.session.add_all(
            AnnouncementRecipient(
                institution_id=iid, announcement_id=to_all, kind=kind, person_id=person, created_at=now
            )
            for kind, person in people
        )
        db.session.flush()
        self.r["me"] = Records(outside=dict.fromkeys(ROLES, to_none), foreign=foreign).everyone(to_all)
        self.r["announcements"] = Records(
            inside={"admin": to_all, "teacher": to_all}, outside={"teacher": to_none}, foreign=foreign
        )

    def _mpesa(self, iid, hid, family_only):
        """The demo school on the Daraja simulator, a push request per family and school, a paybill
        payment in suspense per school."""
        _add(
            MpesaAccount(
                institution_id=iid,
                environment="simulator",
                shortcode="174379",
                transaction_type="CustomerPayBillOnline",
                consumer_key_enc=encrypt("sim-consumer-key"),
                consumer_secret_enc=encrypt("sim-consumer-secret"),
                passkey_enc=encrypt("sim-passkey"),
                callback_token="walk-callback-token",
            )
        )
        now = datetime.now(UTC)

        def push(institution_id, invoice_id, n):
            student_id = db.session.execute(
                select(Invoice.student_id).where(Invoice.id == invoice_id), execution_options=UNSCOPED
            ).scalar_one()
            return _add(
                StkRequest(
                    institution_id=institution_id,
                    invoice_id=invoice_id,
                    student_id=student_id,
                    phone="254712345678",
                    amount_minor=100,
                    merchant_request_id=f"walk-{n}",
                    checkout_request_id=f"ws_CO_walk_{n}",
                    status="pending",
                    created_at=now,
                )
            )

        invoices = self.r["invoices"]
        self.r["stk-requests"] = Records(
            outside=dict.fromkeys(family_only, push(iid, invoices.outside["guardian"], 2)),
            foreign=push(hid, invoices.foreign, 3),
        ).everyone(push(iid, invoices.inside["admin"], 1))

        def suspense(institution_id, n):
            return _add(
                C2bPayment(
                    institution_id=institution_id,
                    trans_id=f"WALKC2B{n}",
                    amount_minor=100,
                    bill_ref="NOBODY",
                    status="suspense",
                    created_at=now,
                )
            )

        self.r["paybill-payments"] = Records(foreign=suspense(hid, 2)).everyone(suspense(iid, 1))

    # --- what each operation is sent --------------------------------------------------------------------

    def bodies(self):
        d, day = self.demo, str(self.day)
        later = str(self.today + timedelta(days=30))
        student = d["demo_student_id"]
        return {
            "POST /api/v1/academic-years": {
                "name": "Walk 2091",
                "start_date": "2091-01-01",
                "end_date": "2091-12-31",
            },
            "PATCH /api/v1/academic-years/{ident}": {"name": "Walk 2090 renamed"},
            "POST /api/v1/academic-years/{ident}/rollover": {"dry_run": True},
            "POST /api/v1/terms": {
                "academic_year_id": d["demo_academic_year_id"],
                "name": "Walk term 2",
                "start_date": day,
                "end_date": day,
            },
            "PATCH /api/v1/terms/{ident}": {"name": "Walk term renamed"},
            "POST /api/v1/subjects": {"code": "WALK2", "name": "Walking more"},
            "PATCH /api/v1/subjects/{ident}": {"name": "Walking renamed"},
            "POST /api/v1/classes": {
                "academic_year_id": d["demo_academic_year_id"],
                "name": "Walk class",
                "grade_level": 12,
                "section": "W",
            },
            "PATCH /api/v1/classes/{ident}": {"capacity": 40},
            "POST /api/v1/class-subjects": {"class_id": d["demo_class_id"], "subject_id": self.free_subject},
            "PATCH /api/v1/class-subjects/{ident}": {"teacher_id": None},
            "POST /api/v1/enrolments": {
                "student_id": student,
                "class_id": d["other_class_id"],
                "start_date": later,
            },
            "POST /api/v1/enrolments/{ident}/end": {"end_date": str(self.today)},
            "PATCH /api/v1/enrolments/{ident}": {"reason": "walk"},
            "POST /api/v1/enrolments/{ident}/transfer": {"class_id": d["other_class_id"], "date": later},
            "POST /api/v1/closures": {
                "start_date": "2090-02-01",
                "end_date": "2090-02-01",
                "name": "Walk day",
            },
            "PATCH /api/v1/closures/{ident}": {"name": "Walk day renamed"},
            "POST /api/v1/attendance-codes": {"code": "WALK2", "label": "Walking more", "status": "late"},
            "PATCH /api/v1/attendance-codes/{ident}": {"label": "Walking renamed"},
            "PUT /api/v1/students/{ident}/report-card/remarks": {
                "term_id": d["demo_current_term_id"],
                "kind": "class_teacher",
                "text": "Walks well.",
            },
            "POST /api/v1/students": {"admission_number": "WALK-1", "first_name": "Wal", "last_name": "Ker"},
            "PATCH /api/v1/students/{ident}": {"first_name": "Walker"},
            "POST /api/v1/students/{ident}/guardians": {"guardian_id": self.spare_guardian},
            "POST /api/v1/guardians": {"first_name": "Gwen", "last_name": "Walker"},
            "PATCH /api/v1/guardians/{ident}": {"phone": "+254 700 000001"},
            "PUT /api/v1/guardians/{ident}/channel": {"notify_by": "sms"},
            "POST /api/v1/students/{ident}/erasure": {"confirm": True},
            "POST /api/v1/guardians/{ident}/erasure": {"confirm": True},
            "POST /api/v1/announcements": {
                "title": "Walk",
                "body": "Walking today.",
                "audience": "class",
                "class_id": d["demo_class_id"],
            },
            "PUT /api/v1/mpesa-account": {
                "environment": "simulator",
                "shortcode": "174379",
                "consumer_key": "sim-consumer-key",
                "consumer_secret": "sim-consumer-secret",
                "passkey": "sim-passkey",
            },
            "POST /api/v1/payments/mpesa/stk": {
                "invoice_id": self.r["invoices"].inside["admin"],
                "phone": "0712345678",
                "amount": "1",
            },
            "POST /api/v1/paybill-payments/{ident}/assign": {
                "invoice_id": self.r["invoices"].inside["admin"]
            },
            "POST /api/v1/teachers": {
                "employee_number": "WALK-T1",
                "first_name": "Tom",
                "last_name": "Walker",
            },
            "PATCH /api/v1/teachers/{ident}": {"specialization": "Walking"},
            "POST /api/v1/users": {
                "email": "walk-new@demo-academy.test",
                "password": "a-long-password-1",
                "role": "accountant",
                "first_name": "Wanda",
                "last_name": "Walker",
            },
            "POST /api/v1/invitations": {
                "email": "walk-invited@demo-academy.test",
                "role": "accountant",
                "first_name": "Ivy",
                "last_name": "Walker",
            },
            "PATCH /api/v1/users/{ident}": {"first_name": "Renamed"},
            "POST /api/v1/oneroster/clients": {"name": "Walk LMS 2", "scopes": ["roster-core.readonly"]},
            "POST /api/v1/assessment-types": {"name": "Walk type 2", "weight": "10"},
            "PATCH /api/v1/assessment-types/{ident}": {"weight": "15"},
            "POST /api/v1/assessments": {
                "class_subject_id": d["demo_class_subject_id"],
                "term_id": d["demo_current_term_id"],
                "assessment_type_id": self.assessment_type,
                "title": "Walk quiz",
                "max_score": "10",
                "date": day,
            },
            "PATCH /api/v1/assessments/{ident}": {"title": "Renamed quiz"},
            "PUT /api/v1/assessments/{ident}/grades": {"grades": [{"student_id": student, "score": "1"}]},
            "POST /api/v1/fee-categories": {
                "term_id": self.later_term,
                "name": "Walk fee 2",
                "amount": "100.00",
            },
            "PATCH /api/v1/fee-categories/{ident}": {"name": "Walk fee renamed"},
            "POST /api/v1/invoices/generate": {
                "term_id": d["demo_current_term_id"],
                "class_id": d["demo_class_id"],
            },
            "POST /api/v1/invoices/{ident}/void": {"reason": "walk"},
            "POST /api/v1/payments": {
                "student_id": student,
                "amount": "10.00",
                "method": "cash",
                "reference": "WALK-PAY-3",
            },
            "POST /api/v1/payments/{ident}/reverse": {"reason": "walk"},
            "POST /api/v1/students/{ident}/refunds": {
                "amount": "1.00",
                "method": "cash",
                "reference": "WALK-REF",
            },
            "POST /api/v1/periods": {
                "weekday": 6,
                "number": 3,
                "name": "Walk 3",
                "starts_at": "11:00",
                "ends_at": "11:40",
            },
            "PATCH /api/v1/periods/{ident}": {"name": "Walk renamed"},
            "POST /api/v1/rooms": {"name": "Walk room 2"},
            "PATCH /api/v1/rooms/{ident}": {"capacity": 12},
            "POST /api/v1/lessons": {
                "class_subject_id": self.walk_class_subject,
                "period_id": self.free_period,
            },
            "PATCH /api/v1/lessons/{ident}": {"room_id": None},
            "PUT /api/v1/classes/{ident}/attendance/{day}": {
                "records": [{"student_id": student, "status": "present"}]
            },
            "POST /api/v1/classes/{ident}/attendance-sessions": {"minutes": 5},
            "POST /api/v1/attendance/check-in": {"token": self.checkin_token},
            "POST /api/v1/exports": {
                "kind": "class_roster",
                "format": "csv",
                "params": {"class_id": d["demo_class_id"]},
            },
            "POST /api/v1/imports/students": lambda: {
                "data": {
                    "file": (io.BytesIO(b"admission_number,first_name,last_name\nWALK-9,Wal,Ker\n"), "s.csv")
                },
                "content_type": "multipart/form-data",
            },
            "POST /api/v1/imports/teachers": lambda: {
                "data": {
                    "file": (
                        io.BytesIO(
                            b"email,first_name,last_name,employee_number\nwalk.t@demo-academy.test,Wal,Ker,WALK-T\n"
                        ),
                        "t.csv",
                    )
                },
                "content_type": "multipart/form-data",
            },
            "POST /api/v1/imports/guardians": lambda: {
                "data": {
                    "file": (
                        io.BytesIO(b"email,first_name,last_name\nwalk.g@demo-academy.test,Wal,Ker\n"),
                        "g.csv",
                    )
                },
                "content_type": "multipart/form-data",
            },
            "POST /api/v1/imports/oneroster": lambda: {
                "data": {"file": (io.BytesIO(_oneroster_zip()), "roster.zip")},
                "content_type": "multipart/form-data",
            },
            "PUT /api/v1/students/{ident}/photo": lambda: _multipart(_tiny_jpeg(), "photo.jpg"),
            "PUT /api/v1/teachers/{ident}/photo": lambda: _multipart(_tiny_jpeg(), "photo.jpg"),
            "PUT /api/v1/institution/logo": lambda: _multipart(_tiny_jpeg(), "logo.jpg"),
            "POST /api/v1/students/{ident}/documents": lambda: _multipart(
                b"%PDF-1.4\ntrailer<<>>\n%%EOF\n", "letter.pdf", kind="transfer_letter"
            ),
            "PATCH /api/v1/institution": {"phone": "+254 20 000 0000"},
            "POST /api/v1/auth/password": {
                "current_password": PASSWORD,
                "new_password": "another-long-password",
            },
            "POST /api/v1/auth/login": {"email": "admin@demo-academy.test", "password": PASSWORD},
            "POST /api/v1/auth/password/forgot": {"email": "admin@demo-academy.test"},
            "POST /api/v1/auth/password/set": {
                "token": "not-a-link-token-0123",
                "new_password": "a long unusual phrase 42",
            },
            "POST /api/v1/operator/login": {"email": "admin@demo-academy.test", "password": PASSWORD},
            "POST /api/v1/auth/refresh": {"refresh_token": self.tokens["admin"]["refresh_token"]},
        }

    def queries(self):
        term = f"term_id={self.demo['demo_current_term_id']}"
        return {
            "GET /api/v1/students/{ident}/results": term,
            "GET /api/v1/students/{ident}/report-card": term,
            "GET /api/v1/classes/{ident}/ranking": term,
        }


def _tiny_jpeg():
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "teal").save(out, "JPEG")
    return out.getvalue()


def _multipart(data, filename, **fields):
    return {"data": {"file": (io.BytesIO(data), filename), **fields}, "content_type": "multipart/form-data"}


# What public operations answer without a token ("2xx" or a status).
PUBLIC = {
    "POST /api/v1/auth/login": "2xx",
    "POST /api/v1/auth/refresh": "2xx",
    "GET /api/v1/exports/{ident}/download": 404,  # without its signed link an export is not found
    "GET /api/v1/files/{ident}": 404,  # likewise a photo or document
    "POST /api/v1/auth/password/forgot": "2xx",  # answers alike for every address
    "GET /api/v1/auth/password/link": 422,  # the e-mailed link's token is the credential: none given
    "POST /api/v1/auth/password/set": 400,  # a token no link carried
    "POST /api/v1/operator/login": 401,  # a school's admin is not an operator
    # M-Pesa's callbacks and SMS delivery reports: the path's secret token is the credential
    "POST /api/v1/pay/hooks/{token}/stk": 404,
    "POST /api/v1/pay/hooks/{token}/validation": 404,
    "POST /api/v1/pay/hooks/{token}/confirmation": 404,
    "POST /api/v1/sms/delivery-reports/{token}": 404,
}
# Lists whose rows are records of a kind other than the path's first segment.
ROWS_OF = {"GET /api/v1/classes/{ident}/students": "students"}


def _resource(path):
    return path.removeprefix(PREFIX).split("/")[0] if path.startswith(PREFIX) else None


def _is_list(op):
    """A collection GET of a record kind: its rows carry that kind's ids."""
    if op.method != "GET":
        return None
    if op.name in ROWS_OF:
        return ROWS_OF[op.name]
    rest = op.path.removeprefix(PREFIX)
    return rest if op.path.startswith(PREFIX) and "/" not in rest else None


class Walk:
    def __init__(self, world, client, redis_client):
        self.world, self.client, self.redis = world, client, redis_client
        self.conn = db.session.get_bind()
        self.bodies, self.queries = world.bodies(), world.queries()
        self.problems: list[str] = []
        self.calls = 0

    def url(self, op, ids):
        url = op.path
        for name, value in ids.items():
            url = url.replace("{" + name + "}", str(value))
        leftover = re.findall(r"\{\w+\}", url)
        assert not leftover, f"{op.name}: no value for {leftover}"
        query = self.queries.get(op.name)
        return f"{url}?{query}" if query else url

    def call(self, op, role, url):
        token = self.world.tokens[role]["access_token"] if role else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = self.bodies.get(op.name)
        kw = body() if callable(body) else ({"json": body} if body is not None else {})
        savepoint = self.conn.begin_nested()
        try:
            resp = self.client.open(url, method=op.method, headers=headers, **kw)
        finally:
            db.session.remove()
            savepoint.rollback()
            if op.method != "GET":  # revocations and rate-limit counts roll back with the rest
                self.redis.flushall()
        self.calls += 1
        return resp

    def ids(self, op, role, variant):
        """Path values for `role`'s record of this variant; None when the walk has no such record."""
        ids = {}
        for name in re.findall(r"\{(\w+)\}", op.path):
            if name == "day":
                ids[name] = self.world.day
                continue
            if name == "token":  # public callbacks: a token no school has
                ids[name] = "not-a-school-token"
                continue
            if name == "slug":  # operator views: no school role may call them, whichever school
                ids[name] = "demo-academy"
                continue
            kind = "guardians" if name == "guardian_id" else _resource(op.path)
            records = self.world.r.get(kind)
            assert records is not None, f"{op.name}: the walk has no {kind} records; add them to World"
            if variant == "foreign":
                ident = records.foreign
            else:
                ident = getattr(records, variant).get(role)
            if ident is None:
                return None
            ids[name] = ident
        return ids

    def expect(self, op, role, variant, resp, wanted):
        status = resp.status_code
        ok = 200 <= status < 300 if wanted == "2xx" else status == wanted
        if not ok:
            self.problems.append(
                f"{op.name} as {role or 'anonymous'} ({variant}): {status}, expected {wanted}: "
                f"{resp.get_data(as_text=True)[:200]}"
            )
        return ok

    def operation(self, op):
        if op.public:
            self.expect(
                op,
                None,
                "no token",
                self.call(op, None, self.url(op, self.ids(op, "admin", "inside"))),
                PUBLIC[op.name],
            )
            return
        has_record = bool(re.search(r"\{(ident|guardian_id)\}", op.path))
        for role in ROLES:
            if role not in op.roles:
                ids = self.ids(op, role, "inside") or self.ids(op, "admin", "inside")
                self.expect(op, role, "role not declared", self.call(op, role, self.url(op, ids)), 403)
                continue
            ids = self.ids(op, role, "inside")
            if ids is None:
                self.problems.append(f"{op.name}: the walk has no record inside {role}'s reach; add one")
                continue
            resp = self.call(op, role, self.url(op, ids))
            if self.expect(op, role, "inside", resp, "2xx") and _is_list(op):
                self.check_rows(op, role, ids)
            if not has_record:
                continue
            if not op.reach.whole_school_for(role):
                outside = self.ids(op, role, "outside")
                if outside is None:
                    self.problems.append(f"{op.name}: the walk has no record outside {role}'s reach; add one")
                else:
                    self.expect(op, role, "outside reach", self.call(op, role, self.url(op, outside)), 404)
            self.expect(
                op,
                role,
                "other school",
                self.call(op, role, self.url(op, self.ids(op, role, "foreign"))),
                404,
            )

    def check_rows(self, op, role, ids):
        """Every page of the list: the role's record is on it, the one outside its reach never."""
        records = self.world.r.get(_is_list(op))
        if records is None:
            return
        seen, url = set(), self.url(op, ids) + ("&" if "?" in self.url(op, ids) else "?") + "limit=200"
        for _ in range(MAX_PAGES):
            body = self.call(op, role, url).get_json()
            seen |= {row["id"] for row in body["data"]}
            if not body.get("next_cursor"):
                break
            url = re.sub(r"&cursor=.*$", "", url) + f"&cursor={body['next_cursor']}"
        else:
            if not op.reach.whole_school_for(role):
                self.problems.append(f"{op.name} as {role}: more than {MAX_PAGES} pages of 200 rows")
            return
        inside, outside = records.inside.get(role), records.outside.get(role)
        if inside is not None and inside not in seen:
            self.problems.append(f"{op.name} as {role}: the list misses record {inside}, inside its reach")
        if outside is not None and outside in seen:
            self.problems.append(f"{op.name} as {role}: the list shows record {outside}, outside its reach")
        if records.foreign in seen:
            self.problems.append(
                f"{op.name} as {role}: the list shows another school's record {records.foreign}"
            )


def test_every_operation_as_every_role(app, client, demo, redis_client, daraja_sim_url, monkeypatch):
    monkeypatch.setitem(app.config, "MPESA_SIMULATOR_URL", daraja_sim_url)  # POST /payments/mpesa/stk
    world = World(client, demo)
    walk = Walk(world, client, redis_client)
    ops = operations(app)
    for op in ops:
        walk.operation(op)
    document = {
        (method.upper(), path)
        for path, item in client.get("/api/v1/openapi.json").get_json()["paths"].items()
        for method in item
    }
    assert {(op.method, op.path) for op in ops} == document
    assert not walk.problems, f"{len(walk.problems)} of {walk.calls} calls broke a rule:\n" + "\n".join(
        walk.problems
    )


def test_the_document_shows_each_operations_roles(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    get_student = spec["paths"]["/api/v1/students/{ident}"]["get"]
    assert get_student["x-roles"] == ["admin", "teacher", "guardian", "student", "accountant"]
    assert get_student["x-reach"] == "students"
    assert "guardian (own children)" in get_student["description"]
    assert spec["paths"]["/api/v1/users"]["post"]["x-roles"] == ["admin"]
    assert "x-roles" not in spec["paths"]["/api/v1/auth/login"]["post"]  # public: security []


def test_docs_access_md_is_made_from_the_declarations(app):
    with open("docs/ACCESS.md", encoding="utf-8") as fh:
        written = fh.read()
    assert written == render(app), "docs/ACCESS.md is stale: python scripts/access_matrix.py > docs/ACCESS.md"


def _oneroster_zip():
    """A one-student OneRoster CSV zip (app/oneroster/csvimport.py)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.csv", "propertyName,value\nmanifest.version,1.0\noneroster.version,1.2\n")
        zf.writestr(
            "users.csv",
            "sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,role\n"
            "walk-s1,,,true,walk,,Wal,Ker,student\n",
        )
    return buf.getvalue()
