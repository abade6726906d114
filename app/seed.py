"""Demo and scale data: `flask seed demo [--if-empty] [--reset]` and `flask seed scale --students N`.

`seed_demo(password)` builds two small, realistic schools (Demo Academy, Hillside School) with
set-based inserts: the same output every time for a given date (fixed random seeds; the calendar is
placed around today so the current term is always under way). `seed_scale(students, days)` builds a
large "Scale School" on PostgreSQL with `INSERT ... SELECT` statements run by the server.

No request context is involved: every row sets its `institution_id` explicitly.
"""

import csv
import io
import json
import random
import re
import time
import unicodedata
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import func, insert, select, text

from app import models as _models  # noqa: F401  (every table registered before we walk the metadata)
from app.academics.models import AcademicYear, ClassSubject, Enrolment, SchoolClass, Subject, Term
from app.attendance.models import DEFAULT_CODES, AttendanceCode, AttendanceRecord
from app.core.security import hash_password
from app.extensions import db
from app.finance.models import FeeCategory, Invoice, InvoiceLine, Payment
from app.grading.models import Assessment, AssessmentType, Grade
from app.institutions.models import DEFAULT_GRADING_SCALE, Closure, Institution
from app.people.models import Guardian, Student, StudentGuardian, Teacher, User
from app.seed_names import FEMALE_FIRST_NAMES, GUARDIAN_RELATIONSHIPS_PRIMARY, LAST_NAMES, MALE_FIRST_NAMES
from app.timetable.models import Lesson, Period, Room

seed_cli = AppGroup("seed", help="Load demo data (any database) or scale data (PostgreSQL only).")

DEMO_SLUGS = ("demo-academy", "hillside")
SCALE_SLUG = "scale-school"
CHUNK = 5000  # rows per executemany batch

# ---------------------------------------------------------------------------------------------------
# Institutions of the demo seed
# ---------------------------------------------------------------------------------------------------

DEMO_SPECS = [
    {
        "key": "demo",
        "name": "Demo Academy",
        "slug": "demo-academy",
        "code": "DA",
        "currency": "KES",
        "timezone": "Africa/Nairobi",
        "email": "office@demo-academy.test",
        "phone": "+254 20 765 4321",
        "address": "14 Riverside Drive, Westlands, Nairobi, Kenya",
        "phone_prefix": "+254 7",
        "phone_digits": 8,
        "grades": list(range(1, 11)),
        "sections": ["A", "B"],
        "students_per_class": 30,
        "subjects": [
            ("MATH", "Mathematics"),
            ("ENG", "English"),
            ("KIS", "Kiswahili"),
            ("SCI", "Integrated Science"),
            ("SST", "Social Studies"),
            ("RE", "Religious Education"),
            ("ART", "Creative Arts"),
            ("PE", "Physical Education"),
        ],
        "teachers_per_subject": 3,  # grade bands: 1-4, 5-7, 8-10
        "extra_teachers": [("School Counselling", None)],
        "demo_class": (7, "A"),
        "other_class": (1, "A"),
        "sibling_class": (3, "B"),
        "apostrophe_student": ("Liam", "O'Brien", "male"),
        # (name, major units, scope) -- scope: "grade" (one per grade), "all", or (grade, section)
        "fees": [
            ("Tuition", lambda g: 18_000 + 1_500 * (g - 1), "grade"),
            ("Activities", 2_500, "all"),
            ("Field trip: Lake Naivasha", 4_000, (10, "A")),
        ],
        "payment_methods": [("mobile_money", 55), ("bank", 25), ("cash", 12), ("card", 8)],
        "logins": ["admin", "teacher", "guardian", "student", "accountant"],
        # the bell schedule, Monday to Friday: 40-minute lessons, a break after the third, lunch after the sixth
        "periods": [
            ("08:00", "08:40"),
            ("08:40", "09:20"),
            ("09:20", "10:00"),
            ("10:30", "11:10"),
            ("11:10", "11:50"),
            ("11:50", "12:30"),
            ("14:00", "14:40"),
            ("14:40", "15:20"),
            ("15:20", "16:00"),
        ],
    },
    {
        "key": "hillside",
        "name": "Hillside School",
        "slug": "hillside",
        "code": "HS",
        "currency": "USD",
        "timezone": "America/Chicago",
        "email": "office@hillside.test",
        "phone": "+1 312 555 0142",
        "address": "200 Hillside Avenue, Springfield, IL, USA",
        "phone_prefix": "+1 312 555 ",
        "phone_digits": 4,
        "grades": list(range(1, 7)),
        "sections": ["A"],
        "students_per_class": 25,
        "subjects": [
            ("MATH", "Mathematics"),
            ("ENG", "English Language Arts"),
            ("SCI", "Science"),
            ("HIST", "History"),
            ("GEO", "Geography"),
            ("FRE", "French"),
            ("MUS", "Music"),
            ("PE", "Physical Education"),
        ],
        "teachers_per_subject": 1,
        "extra_teachers": [],
        "demo_class": (4, "A"),
        "other_class": None,
        "sibling_class": None,
        "apostrophe_student": ("Aoife", "O'Sullivan", "female"),
        "fees": [
            ("Tuition", lambda g: 950 + 40 * (g - 1), "grade"),
            ("Activities", 75, "all"),
            ("Technology", 40, "all"),
        ],
        "payment_methods": [("card", 45), ("bank", 40), ("cash", 10), ("mobile_money", 5)],
        "logins": ["admin", "teacher"],
        "periods": [
            ("08:15", "09:00"),
            ("09:05", "09:50"),
            ("09:55", "10:40"),
            ("10:45", "11:30"),
            ("12:15", "13:00"),
            ("13:05", "13:50"),
            ("13:55", "14:40"),
        ],
    },
]

ASSESSMENT_TYPES = [("Homework", Decimal("20")), ("Test", Decimal("30")), ("Exam", Decimal("50"))]
# (title, type, max score, week of the term it is set in (0-based))
ASSESSMENT_PLAN = [
    ("Homework 1", "Homework", Decimal("20"), 1),
    ("Test 1", "Test", Decimal("50"), 4),
    ("Mid-term exam", "Exam", Decimal("100"), 6),
]


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def _tz(name):
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:  # no tz database on this machine: local times become UTC, nothing else changes
        return UTC


def _at(day, hour, minute, tz):
    """A local wall-clock time on `day` in the school's zone, as an aware UTC datetime."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).astimezone(UTC)


def _ascii_slug(value):
    value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "", value.lower())


def _weighted(rng, pairs):
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


def _insert_ids(model, rows):
    """Insert rows (dicts keyed by attribute name) in one set-based statement; ids in input order."""
    if not rows:
        return []
    ids = []
    for start in range(0, len(rows), CHUNK):
        result = db.session.execute(
            insert(model).returning(model.id, sort_by_parameter_order=True), rows[start : start + CHUNK]
        )
        ids.extend(result.scalars().all())
    return ids


def _insert(model, rows):
    """Insert rows whose ids we do not need. PostgreSQL: one COPY (executemany spends ~70 us a row in
    the client, COPY ~5); elsewhere: batched executemany. Rows must name every column they need
    (COPY applies no Python-side defaults)."""
    if not rows:
        return
    conn = db.session.connection()
    if conn.dialect.name != "postgresql":
        for start in range(0, len(rows), CHUNK):
            db.session.execute(insert(model), rows[start : start + CHUNK])
        return
    keys = list(rows[0])
    columns = [model.__mapper__.attrs[k].columns[0].name for k in keys]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:  # None becomes an empty unquoted field: NULL in COPY's csv format
        writer.writerow([row[k] for k in keys])
    buf.seek(0)
    with conn.connection.driver_connection.cursor() as cursor:  # same connection, same transaction
        cursor.copy_expert(
            f"COPY {model.__table__.name} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buf
        )


def build_calendar(today):
    """Three 13-week terms with two-week breaks; the second is under way (started 7 weeks before
    this week's Monday), so it always holds 35-40 past school days and lasts another ~6 weeks."""
    monday = today - timedelta(days=today.weekday())
    t2_start = monday - timedelta(weeks=7)
    starts = [t2_start - timedelta(weeks=15), t2_start, t2_start + timedelta(weeks=15)]
    terms = [(f"Term {i + 1}", s, s + timedelta(weeks=13) - timedelta(days=3)) for i, s in enumerate(starts)]
    year_start, year_end = terms[0][1], terms[-1][2]
    name = (
        f"{year_start.year}/{str(year_end.year)[-2:]}"
        if year_start.year != year_end.year
        else str(year_start.year)
    )
    school_days = [
        t2_start + timedelta(days=n)
        for n in range((today - t2_start).days)
        if (t2_start + timedelta(days=n)).weekday() < 5
    ]
    return {
        "today": today,
        "year_name": name,
        "year_start": year_start,
        "year_end": year_end,
        "terms": terms,
        "current": 1,
        "school_days": school_days,
    }


def _delete_institution(slug):
    """Delete one institution and every row it owns, children first (some FKs are RESTRICT)."""
    conn = db.session.connection()
    inst_id = conn.execute(text("SELECT id FROM institutions WHERE slug = :slug"), {"slug": slug}).scalar()
    if inst_id is None:
        return False
    for table in reversed(db.metadata.sorted_tables):
        if table.name != "institutions" and "institution_id" in table.c:
            conn.execute(table.delete().where(table.c.institution_id == inst_id))
    conn.execute(text("DELETE FROM institutions WHERE id = :id"), {"id": inst_id})
    return True


# ---------------------------------------------------------------------------------------------------
# Demo seed
# ---------------------------------------------------------------------------------------------------


class _People:
    """Deterministic names, e-mails and phone numbers for one institution."""

    def __init__(self, rng, spec):
        self.rng = rng
        self.spec = spec
        self.phones = set()

    def first(self, gender):
        return self.rng.choice(FEMALE_FIRST_NAMES if gender == "female" else MALE_FIRST_NAMES)

    def last(self):
        return self.rng.choice(LAST_NAMES)

    def gender(self):
        return self.rng.choice(("female", "male"))

    def phone(self):
        while True:
            number = self.spec["phone_prefix"] + "".join(
                str(self.rng.randrange(10)) for _ in range(self.spec["phone_digits"])
            )
            if number not in self.phones:
                self.phones.add(number)
                return number


def _seed_institution(spec, calendar, password_hash):
    """Build one institution's data in Python, then insert it table by table (set-based)."""
    key = spec["key"]
    rng = random.Random(f"schoolhouse:{key}:people")  # names, families, assignments
    att_rng = random.Random(f"schoolhouse:{key}:attendance")  # separate streams: the number of past
    grade_rng = random.Random(f"schoolhouse:{key}:grades")  # school days (which depends on today)
    fin_rng = random.Random(f"schoolhouse:{key}:finance")  # never changes the names
    people = _People(rng, spec)
    tz = _tz(spec["timezone"])
    setup_at = _at(calendar["year_start"] - timedelta(days=14), 9, 0, tz)
    year_start = calendar["year_start"]
    code = spec["code"]
    domain = f"{spec['slug']}.test"
    counts = {}

    # -- institution --------------------------------------------------------------------------------
    (inst_id,) = _insert_ids(
        Institution,
        [
            {
                "name": spec["name"],
                "slug": spec["slug"],
                "currency": spec["currency"],
                "timezone": spec["timezone"],
                "email": spec["email"],
                "phone": spec["phone"],
                "address": spec["address"],
                "grading_scale": list(DEFAULT_GRADING_SCALE),
                "absence_threshold": 90,
                "created_at": setup_at,
                "updated_at": setup_at,
            }
        ],
    )

    def stamp(row, at=None):
        row["institution_id"] = inst_id
        row["created_at"] = row["updated_at"] = at or setup_at
        return row

    # -- calendar -----------------------------------------------------------------------------------
    (year_id,) = _insert_ids(
        AcademicYear,
        [
            stamp(
                {
                    "name": calendar["year_name"],
                    "start_date": year_start,
                    "end_date": calendar["year_end"],
                    "is_current": True,
                }
            )
        ],
    )
    term_ids = _insert_ids(
        Term,
        [
            stamp({"academic_year_id": year_id, "name": n, "start_date": s, "end_date": e})
            for n, s, e in calendar["terms"]
        ],
    )
    term_id = term_ids[calendar["current"]]
    _, term_start, term_end = calendar["terms"][calendar["current"]]

    subject_ids = _insert_ids(Subject, [stamp({"code": c, "name": n}) for c, n in spec["subjects"]])

    # -- teachers: `teachers_per_subject` per subject, each taking a band of grades --------------------
    per_subject = spec["teachers_per_subject"]
    teacher_rows = []
    teacher_subject = []  # (subject index, band) or None
    for s_idx, (_, s_name) in enumerate(spec["subjects"]):
        for band in range(per_subject):
            teacher_subject.append((s_idx, band))
            teacher_rows.append({"specialization": s_name})
    for spec_name, _ in spec["extra_teachers"]:
        teacher_subject.append(None)
        teacher_rows.append({"specialization": spec_name})
    for n, row in enumerate(teacher_rows, start=1):
        gender = people.gender()
        first, last = people.first(gender), people.last()
        row.update(
            user_id=None,
            employee_number=f"{code}-T{n:03d}",
            first_name=first,
            last_name=last,
            email=f"{_ascii_slug(first)}.{_ascii_slug(last)}@staff.{domain}",
            phone=people.phone(),
            hired_on=year_start - timedelta(days=rng.randrange(120, 365 * 12)),
        )

    grades = spec["grades"]
    class_keys = [(g, s) for g in grades for s in spec["sections"]]

    def band_of(grade):
        return (grades.index(grade) * per_subject) // len(grades)

    def teacher_for(class_key, s_idx):
        return teacher_subject.index((s_idx, band_of(class_key[0])))

    demo_class_key = spec["demo_class"]
    login_teacher = teacher_for(demo_class_key, 0)  # teaches subject 0 (Mathematics) in the demo class

    # homeroom: one distinct teacher per class, preferring someone who teaches the class;
    # the login teacher leads the demo class
    homeroom = {demo_class_key: login_teacher}
    used = {login_teacher}
    for ck in class_keys:
        if ck in homeroom:
            continue
        candidates = [teacher_for(ck, s) for s in range(len(spec["subjects"]))]
        rng.shuffle(candidates)
        free = [t for t in candidates if t not in used] or [
            t for t in range(len(teacher_rows)) if t not in used
        ]
        homeroom[ck] = free[0]
        used.add(free[0])

    # -- people: families, students, guardians ------------------------------------------------------
    guardians = []  # dicts (rows without institution/timestamps)
    families = []  # {"last": str, "guardians": [(guardian index, relationship, is_primary)], "classes": set}
    students = []  # dicts plus "_class" and "_family"
    links = []  # (student index, guardian index, relationship, is_primary)

    def new_guardian(first, last, gender):
        email_local = f"{_ascii_slug(first)}.{_ascii_slug(last)}{len(guardians) + 1}"
        guardians.append(
            {
                "user_id": None,
                "first_name": first,
                "last_name": last,
                "_gender": gender,
                "email": f"{email_local}@mail.{domain}",
                "phone": people.phone(),
            }
        )
        return len(guardians) - 1

    def new_family(last=None):
        last = last or people.last()
        rel1 = rng.choice(GUARDIAN_RELATIONSHIPS_PRIMARY)
        g1_gender = (
            "female"
            if rel1 in ("mother", "grandmother", "aunt")
            else "male"
            if rel1 == "father"
            else people.gender()
        )
        g1_last = last if not (g1_gender == "female" and rng.random() < 0.25) else people.last()
        members = [(new_guardian(people.first(g1_gender), g1_last, g1_gender), rel1, True)]
        if rng.random() < 0.65:
            rel2 = {"mother": "father", "father": "mother"}.get(
                rel1, rng.choice(("guardian", "uncle", "grandfather"))
            )
            g2_gender = "female" if rel2 == "mother" else "male"
            members.append((new_guardian(people.first(g2_gender), last, g2_gender), rel2, False))
        families.append({"last": last, "guardians": members, "classes": set()})
        return len(families) - 1

    demo_family = new_family() if spec["sibling_class"] else None
    forced = {}  # (class key, slot) -> ("family", index) or ("name", first, last, gender)
    if demo_family is not None:
        forced[(demo_class_key, 0)] = ("family", demo_family)
        forced[(spec["sibling_class"], 0)] = ("family", demo_family)
    forced[(demo_class_key, 1)] = ("name",) + spec["apostrophe_student"]

    adm_year = year_start.year
    for ck in class_keys:
        grade, _section = ck
        for slot in range(spec["students_per_class"]):
            f = forced.get((ck, slot))
            gender = people.gender()
            first = None
            if f and f[0] == "family":
                fam = f[1]
            elif f and f[0] == "name":
                first, last, gender = f[1], f[2], f[3]
                fam = new_family(last)
            elif families and rng.random() < 0.10:  # a sibling of a child in another class
                fam = rng.randrange(len(families))
                if ck in families[fam]["classes"] or fam == demo_family:
                    fam = new_family()
            else:
                fam = new_family()
            families[fam]["classes"].add(ck)
            first = first or people.first(gender)
            born = date(adm_year - grade - 6, 9, 1) + timedelta(days=rng.randrange(365))
            students.append(
                {
                    "user_id": None,
                    "admission_number": f"{code}-{adm_year}-{len(students) + 1:04d}",
                    "first_name": first,
                    "last_name": families[fam]["last"],
                    "date_of_birth": born,
                    "gender": gender,
                    "grade_level": grade,
                    "status": "active",
                    "email": None,
                    "_class": ck,
                    "_family": fam,
                    "_ability": min(97.0, max(30.0, rng.gauss(68, 12))),
                    "_attendance": _weighted(rng, [("regular", 85), ("patchy", 12), ("chronic", 3)]),
                }
            )
            for g_idx, rel, primary in families[fam]["guardians"]:
                links.append((len(students) - 1, g_idx, rel, primary))

    demo_student = next(i for i, s in enumerate(students) if s["_class"] == demo_class_key)
    apostrophe_student = next(
        i
        for i, s in enumerate(students)
        if s["_class"] == demo_class_key and s["last_name"] == spec["apostrophe_student"][1]
    )
    sibling_student = (
        next(i for i, s in enumerate(students) if s["_class"] == spec["sibling_class"])
        if spec["sibling_class"]
        else None
    )
    demo_guardian = families[students[demo_student]["_family"]]["guardians"][0][0]

    # -- logins -------------------------------------------------------------------------------------
    login_people = {
        "admin": (people.first("female"), people.last()),
        "accountant": (people.first("male"), people.last()),
        "teacher": (teacher_rows[login_teacher]["first_name"], teacher_rows[login_teacher]["last_name"]),
        "guardian": (guardians[demo_guardian]["first_name"], guardians[demo_guardian]["last_name"]),
        "student": (students[demo_student]["first_name"], students[demo_student]["last_name"]),
    }
    roles = spec["logins"]
    user_ids = dict(
        zip(
            roles,
            _insert_ids(
                User,
                [
                    stamp(
                        {
                            "email": f"{role}@{domain}",
                            "password_hash": password_hash,
                            "role": role,
                            "first_name": login_people[role][0],
                            "last_name": login_people[role][1],
                            "is_active": True,
                        }
                    )
                    for role in roles
                ],
            ),
        )
    )
    if "teacher" in user_ids:
        teacher_rows[login_teacher].update(user_id=user_ids["teacher"], email=f"teacher@{domain}")
    if "guardian" in user_ids:
        guardians[demo_guardian].update(user_id=user_ids["guardian"], email=f"guardian@{domain}")
    if "student" in user_ids:
        students[demo_student].update(user_id=user_ids["student"], email=f"student@{domain}")

    teacher_ids = _insert_ids(Teacher, [stamp(dict(r)) for r in teacher_rows])
    class_ids = dict(
        zip(
            class_keys,
            _insert_ids(
                SchoolClass,
                [
                    stamp(
                        {
                            "academic_year_id": year_id,
                            "name": f"Grade {g}{s}",
                            "grade_level": g,
                            "section": s,
                            "homeroom_teacher_id": teacher_ids[homeroom[(g, s)]],
                            "capacity": spec["students_per_class"] + 5,
                        }
                    )
                    for g, s in class_keys
                ],
            ),
        )
    )

    cs_keys = [(ck, s_idx) for ck in class_keys for s_idx in range(len(subject_ids))]
    cs_teacher = {k: teacher_for(*k) for k in cs_keys}
    cs_ids = dict(
        zip(
            cs_keys,
            _insert_ids(
                ClassSubject,
                [
                    stamp(
                        {
                            "class_id": class_ids[ck],
                            "subject_id": subject_ids[s_idx],
                            "teacher_id": teacher_ids[cs_teacher[(ck, s_idx)]],
                        }
                    )
                    for ck, s_idx in cs_keys
                ],
            ),
        )
    )

    counts.update(
        _seed_timetable(
            spec, calendar, stamp, class_keys, class_ids, subject_ids, cs_ids, cs_teacher, teacher_ids
        )
    )

    student_ids = _insert_ids(
        Student, [stamp({k: v for k, v in s.items() if not k.startswith("_")}) for s in students]
    )
    guardian_ids = _insert_ids(
        Guardian, [stamp({k: v for k, v in g.items() if not k.startswith("_")}) for g in guardians]
    )
    _insert(
        StudentGuardian,
        [
            {
                "institution_id": inst_id,
                "student_id": student_ids[s],
                "guardian_id": guardian_ids[g],
                "relationship_type": rel,
                "is_primary": primary,
            }
            for s, g, rel, primary in links
        ],
    )
    _insert(
        Enrolment,
        [
            stamp(
                {
                    "student_id": student_ids[i],
                    "class_id": class_ids[s["_class"]],
                    "start_date": year_start,
                    "end_date": None,
                    "reason": "Admitted",
                }
            )
            for i, s in enumerate(students)
        ],
    )
    roster = {ck: [] for ck in class_keys}
    for i, s in enumerate(students):
        roster[s["_class"]].append(i)

    # -- school calendar: closures, attendance codes ---------------------------------------------------
    # None falls on a day with seeded marks: half-term in term 1 (no marks), a public holiday in the
    # current term's future, exam week for one class of the top grade at the end of term 3.
    (_, t1_start, _), (_, _, t3_end) = calendar["terms"][0], calendar["terms"][2]
    half_term = t1_start + timedelta(weeks=6)
    holiday = calendar["today"] + timedelta(days=10)
    holiday += timedelta(days=max(0, 7 - holiday.weekday()) if holiday.weekday() >= 5 else 0)
    exams = t3_end - timedelta(days=t3_end.weekday() + 7)
    closures = [
        {
            "class_id": None,
            "start_date": half_term,
            "end_date": half_term + timedelta(days=4),
            "kind": "holiday",
            "name": "Half-term break",
        },
        {
            "class_id": class_ids[class_keys[-1]],
            "start_date": exams,
            "end_date": exams + timedelta(days=4),
            "kind": "exam",
            "name": "End-of-year examinations",
        },
    ]
    if holiday <= term_end:
        closures.append(
            {
                "class_id": None,
                "start_date": holiday,
                "end_date": holiday,
                "kind": "holiday",
                "name": "Public holiday",
            }
        )
    _insert(Closure, [stamp(c) for c in closures])
    _insert(AttendanceCode, [stamp({"code": c, "label": lbl, "status": st}) for c, lbl, st in DEFAULT_CODES])

    # -- attendance: whole-day marks for past school days of the current term ------------------------
    profiles = {
        "regular": [("present", 940), ("late", 30), ("absent", 25), ("excused", 5)],
        "patchy": [("present", 880), ("late", 50), ("absent", 50), ("excused", 20)],
        "chronic": [("present", 720), ("late", 50), ("absent", 180), ("excused", 50)],
    }
    cum = {}
    for name, pairs in profiles.items():
        acc, table = 0, []
        for status, weight in pairs:
            acc += weight
            table.append((acc, status))
        cum[name] = table
    excuses = ["Medical appointment", "Sick, note from parent", "Family event", "Religious observance"]
    teacher_user_of = {login_teacher: user_ids.get("teacher")}
    attendance = []
    status_counts = {"present": 0, "absent": 0, "late": 0, "excused": 0}
    for day in calendar["school_days"]:
        for ck in class_keys:
            marker = teacher_user_of.get(homeroom[ck])
            marked_at = _at(day, 8, att_rng.randrange(5, 40), tz)
            for i in roster[ck]:
                r = att_rng.randrange(1000)
                status = next(st for limit, st in cum[students[i]["_attendance"]] if r < limit)
                status_counts[status] += 1
                note = None
                if status == "excused":
                    note = att_rng.choice(excuses)
                elif status == "late":
                    note = f"Arrived {8 + att_rng.randrange(1, 3)}:{att_rng.randrange(0, 60):02d}"
                attendance.append(
                    {
                        "institution_id": inst_id,
                        "student_id": student_ids[i],
                        "class_id": class_ids[ck],
                        "subject_id": None,
                        "period": 0,
                        "date": day,
                        "status": status,
                        "note": note,
                        "source": "manual",
                        "marked_by_id": marker,
                        "created_at": marked_at,
                        "updated_at": marked_at,
                    }
                )
    _insert(AttendanceRecord, attendance)

    # -- assessments and grades ---------------------------------------------------------------------
    type_ids = dict(
        zip(
            [n for n, _ in ASSESSMENT_TYPES],
            _insert_ids(AssessmentType, [stamp({"name": n, "weight": w}) for n, w in ASSESSMENT_TYPES]),
        )
    )
    subject_offset = {s_idx: grade_rng.uniform(-6, 6) for s_idx in range(len(subject_ids))}
    assessment_rows, assessment_meta = [], []
    for ck, s_idx in cs_keys:
        plan = ASSESSMENT_PLAN if grade_rng.random() < 0.5 else ASSESSMENT_PLAN[:2]
        for title, type_name, max_score, week in plan:
            day = term_start + timedelta(weeks=week, days=grade_rng.randrange(5))
            assessment_rows.append(
                stamp(
                    {
                        "class_subject_id": cs_ids[(ck, s_idx)],
                        "term_id": term_id,
                        "assessment_type_id": type_ids[type_name],
                        "title": f"{spec['subjects'][s_idx][1]}: {title}",
                        "max_score": max_score,
                        "date": day,
                    },
                    _at(day - timedelta(days=7), 16, 0, tz),
                )
            )
            assessment_meta.append((ck, s_idx, max_score, day))
    assessment_ids = _insert_ids(Assessment, assessment_rows)
    grade_rows = []
    for a_id, (ck, s_idx, max_score, day) in zip(assessment_ids, assessment_meta):
        graded_at = _at(min(day + timedelta(days=2), calendar["today"] - timedelta(days=1)), 15, 30, tz)
        grader = teacher_user_of.get(cs_teacher[(ck, s_idx)])
        for i in roster[ck]:
            pct = min(100.0, max(0.0, grade_rng.gauss(students[i]["_ability"] + subject_offset[s_idx], 9)))
            score = (Decimal(round(float(max_score) * pct / 100 * 2)) / 2).quantize(Decimal("0.01"))
            comment = (
                "Excellent work"
                if pct >= 90
                else "Needs support: see me"
                if pct < 40
                else None
                if grade_rng.random() < 0.9
                else "Good effort"
            )
            grade_rows.append(
                {
                    "institution_id": inst_id,
                    "assessment_id": a_id,
                    "student_id": student_ids[i],
                    "score": score,
                    "comment": comment,
                    "graded_by_id": grader,
                    "created_at": graded_at,
                    "updated_at": graded_at,
                }
            )
    _insert(Grade, grade_rows)

    # -- fees, invoices, payments -------------------------------------------------------------------
    due = term_start + timedelta(days=28)
    fee_rows, fee_scope = [], []
    for name, amount, scope in spec["fees"]:
        if scope == "grade":
            for g in grades:
                fee_rows.append(
                    stamp(
                        {
                            "term_id": term_id,
                            "name": f"{name}: Grade {g}",
                            "amount_minor": amount(g) * 100,
                            "grade_level": g,
                            "class_id": None,
                            "due_date": due,
                        }
                    )
                )
                fee_scope.append(("grade", g))
        elif scope == "all":
            fee_rows.append(
                stamp(
                    {
                        "term_id": term_id,
                        "name": name,
                        "amount_minor": amount * 100,
                        "grade_level": None,
                        "class_id": None,
                        "due_date": due,
                    }
                )
            )
            fee_scope.append(("all", None))
        else:
            fee_rows.append(
                stamp(
                    {
                        "term_id": term_id,
                        "name": name,
                        "amount_minor": amount * 100,
                        "grade_level": None,
                        "class_id": class_ids[scope],
                        "due_date": due,
                    }
                )
            )
            fee_scope.append(("class", scope))
    fee_ids = _insert_ids(FeeCategory, fee_rows)

    issued_at = _at(term_start - timedelta(days=14), 9, 0, tz)
    invoice_rows, invoice_lines = [], []
    for n, (i, s) in enumerate(enumerate(students), start=1):
        lines = [
            (fee_ids[k], fee_rows[k]["name"], fee_rows[k]["amount_minor"])
            for k, (kind, val) in enumerate(fee_scope)
            if kind == "all"
            or (kind == "grade" and val == s["grade_level"])
            or (kind == "class" and val == s["_class"])
        ]
        invoice_lines.append(lines)
        invoice_rows.append(
            stamp(
                {
                    "student_id": student_ids[i],
                    "term_id": term_id,
                    "number": f"INV-{code}-{n:06d}",
                    "status": "open",
                    "total_minor": sum(a for _, _, a in lines),
                    "paid_minor": 0,
                    "due_date": due,
                    "voided_at": None,
                },
                issued_at,
            )
        )

    # payments: ~55% paid in full, ~25% part-paid, the rest not yet; the demo student's is part-paid
    unit = 500 * 100 if spec["currency"] == "KES" else 10 * 100
    recorder = user_ids.get("accountant") or user_ids.get("admin")
    first_pay_day = term_start - timedelta(days=12)
    last_pay_day = calendar["today"] - timedelta(days=1)
    span = (last_pay_day - first_pay_day).days
    refs = set()

    def reference(method, seq):
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        while True:
            if method == "mobile_money":
                ref = "".join(fin_rng.choice(alphabet) for _ in range(10))
            elif method == "bank":
                ref = f"BNK{fin_rng.randrange(10**9, 10**10)}"
            elif method == "card":
                ref = f"ch_{fin_rng.getrandbits(64):016x}"
            else:
                ref = f"RCPT-{code}-{seq:06d}"
            if ref not in refs:
                refs.add(ref)
                return ref

    payments = []
    for idx, inv in enumerate(invoice_rows):
        total = inv["total_minor"]
        r = fin_rng.random()
        if idx == demo_student:
            r = 0.6
        if r < 0.55:
            amounts = [total] if fin_rng.random() < 0.7 else [total // 2, total - total // 2]
        elif r < 0.80:
            paid = max(unit, min(total - unit, round(total * fin_rng.uniform(0.25, 0.75) / unit) * unit))
            amounts = [paid] if fin_rng.random() < 0.7 else [paid // 2, paid - paid // 2]
        else:
            amounts = []
        days = sorted(fin_rng.randrange(span + 1) for _ in amounts)
        for amount, offset in zip(amounts, days):
            method = _weighted(fin_rng, spec["payment_methods"])
            received = _at(
                first_pay_day + timedelta(days=offset), fin_rng.randrange(8, 17), fin_rng.randrange(60), tz
            )
            created = received + timedelta(minutes=fin_rng.randrange(1, 90))
            payments.append(
                {
                    "institution_id": inst_id,
                    "_invoice": idx,
                    "student_id": inv["student_id"],
                    "amount_minor": amount,
                    "method": method,
                    "reference": reference(method, len(payments) + 1),
                    "kind": "payment",
                    "reverses_id": None,
                    "note": None,
                    "received_at": received,
                    "recorded_by_id": recorder,
                    "created_at": created,
                }
            )
            inv["paid_minor"] += amount
            inv["updated_at"] = max(inv["updated_at"], created)
        inv["status"] = (
            "paid" if inv["paid_minor"] >= total else "partially_paid" if inv["paid_minor"] > 0 else "open"
        )
    invoice_ids = _insert_ids(Invoice, invoice_rows)
    _insert(
        InvoiceLine,
        [
            {
                "institution_id": inst_id,
                "invoice_id": invoice_ids[idx],
                "fee_category_id": fc,
                "description": desc,
                "amount_minor": amount,
            }
            for idx, lines in enumerate(invoice_lines)
            for fc, desc, amount in lines
        ],
    )
    payments.sort(key=lambda p: p["received_at"])
    for p in payments:
        p["invoice_id"] = invoice_ids[p.pop("_invoice")]
    _insert(Payment, payments)

    counts.update(
        students=len(students),
        guardians=len(guardians),
        student_guardians=len(links),
        teachers=len(teacher_rows),
        classes=len(class_keys),
        class_subjects=len(cs_keys),
        subjects=len(subject_ids),
        attendance_records=len(attendance),
        attendance_present_pct=round(100 * status_counts["present"] / max(1, len(attendance)), 1),
        assessments=len(assessment_ids),
        grades=len(grade_rows),
        fee_categories=len(fee_ids),
        invoices=len(invoice_ids),
        payments=len(payments),
        users=len(user_ids),
    )

    other_ck = spec["other_class"]
    if other_ck:  # a class the login teacher neither leads nor teaches in (teacher-scope tests)
        assert homeroom[other_ck] != login_teacher
        assert all(cs_teacher[k] != login_teacher for k in cs_keys if k[0] == other_ck)
    out = {
        "institution_id": inst_id,
        "academic_year_id": year_id,
        "term_ids": term_ids,
        "current_term_id": term_id,
        "student_id": student_ids[demo_student],
        "class_id": class_ids[demo_class_key],
        "teacher_id": teacher_ids[login_teacher],
        "other_class_id": class_ids.get(other_ck),
        "class_subject_id": cs_ids[(demo_class_key, 0)],
        "subject_id": subject_ids[0],
        "invoice_id": invoice_ids[demo_student],
        "apostrophe_student_id": student_ids[apostrophe_student],
        "user_ids": user_ids,
        "counts": counts,
    }
    if "guardian" in user_ids:
        out["guardian_id"] = guardian_ids[demo_guardian]
    if sibling_student is not None:
        out["sibling_student_id"] = student_ids[sibling_student]
        out["sibling_class_id"] = class_ids[spec["sibling_class"]]
    return out


def _clock(text_value):
    hours, minutes = text_value.split(":")
    return dt_time(int(hours), int(minutes))


def _seed_timetable(
    spec, calendar, stamp, class_keys, class_ids, subject_ids, cs_ids, cs_teacher, teacher_ids
):
    """The bell schedule (Monday to Friday), a room per class and a clash-free week of lessons for the
    whole year. In period p of weekday d the i-th class of a grade band takes subject (i + p + d) mod the
    number of subjects: the classes of one band (which share one teacher per subject) never take the same
    subject at once, and classes of different bands have different teachers, so no teacher, room or class
    is booked twice (tests/test_timetable.py checks it)."""
    n_subjects = len(spec["subjects"])
    band_of = {ck: cs_teacher[(ck, 0)] for ck in class_keys}  # the band's Mathematics teacher names it
    position = {}
    for ck in class_keys:
        position[ck] = sum(1 for other in position if band_of[other] == band_of[ck])
    assert max(position.values()) < n_subjects, "a band has more classes than subjects: lessons would clash"
    period_keys = [(d, n) for d in range(5) for n in range(1, len(spec["periods"]) + 1)]
    period_ids = dict(
        zip(
            period_keys,
            _insert_ids(
                Period,
                [
                    stamp(
                        {
                            "weekday": d,
                            "number": n,
                            "name": f"Period {n}",
                            "starts_at": _clock(spec["periods"][n - 1][0]),
                            "ends_at": _clock(spec["periods"][n - 1][1]),
                        }
                    )
                    for d, n in period_keys
                ],
            ),
        )
    )
    room_ids = dict(
        zip(
            class_keys,
            _insert_ids(
                Room,
                [
                    stamp({"name": f"Room {g}{s}", "capacity": spec["students_per_class"] + 5})
                    for g, s in class_keys
                ],
            ),
        )
    )
    lessons = []
    for ck in class_keys:
        for d, n in period_keys:
            s_idx = (position[ck] + n - 1 + d) % n_subjects
            lessons.append(
                stamp(
                    {
                        "class_subject_id": cs_ids[(ck, s_idx)],
                        "class_id": class_ids[ck],
                        "subject_id": subject_ids[s_idx],
                        "teacher_id": teacher_ids[cs_teacher[(ck, s_idx)]],
                        "room_id": room_ids[ck],
                        "period_id": period_ids[(d, n)],
                        "weekday": d,
                        "start_date": calendar["year_start"],
                        "end_date": calendar["year_end"],
                    }
                )
            )
    _insert(Lesson, lessons)
    return {"periods": len(period_ids), "rooms": len(room_ids), "lessons": len(lessons)}


def seed_demo(password, *, today=None, commit=True):
    """Create Demo Academy and Hillside School. Returns ids for tests; see the keys below.

    Demo logins (password `password`): admin@, teacher@, guardian@, student@, accountant@demo-academy.test;
    admin@ and teacher@hillside.test. The demo teacher is homeroom teacher of the demo class and teaches
    Mathematics there; the demo guardian is the primary guardian of the demo student and of a sibling in
    another class (`demo_sibling_student_id`); `other_class_id` is a class the demo teacher has nothing to do with.
    """
    started = time.perf_counter()
    calendar = build_calendar(today or date.today())
    password_hash = hash_password(password)  # once: argon2id is deliberately slow
    demo, hill = (_seed_institution(spec, calendar, password_hash) for spec in DEMO_SPECS)
    if commit:
        db.session.commit()
        if db.engine.dialect.name == "postgresql":
            # Statistics now, not at autovacuum's next round: planned without them, joins over the
            # fresh marks nest loops (the chronic absentees took 17 s for a teacher, 2 s for an admin).
            db.session.execute(text("ANALYZE"))
            db.session.commit()
    else:
        db.session.flush()
    return {
        "demo_institution_id": demo["institution_id"],
        "hillside_institution_id": hill["institution_id"],
        "demo_academic_year_id": demo["academic_year_id"],
        "demo_term_ids": demo["term_ids"],
        "demo_current_term_id": demo["current_term_id"],
        "demo_student_id": demo["student_id"],
        "demo_class_id": demo["class_id"],
        "demo_teacher_id": demo["teacher_id"],
        "demo_guardian_id": demo["guardian_id"],
        "demo_sibling_student_id": demo["sibling_student_id"],
        "demo_sibling_class_id": demo["sibling_class_id"],
        "demo_subject_id": demo["subject_id"],
        "demo_class_subject_id": demo["class_subject_id"],
        "demo_invoice_id": demo["invoice_id"],
        "apostrophe_student_id": demo["apostrophe_student_id"],
        "other_class_id": demo["other_class_id"],
        "demo_user_ids": demo["user_ids"],
        "hillside_current_term_id": hill["current_term_id"],
        "hillside_student_id": hill["student_id"],
        "hillside_class_id": hill["class_id"],
        "hillside_teacher_id": hill["teacher_id"],
        "hillside_user_ids": hill["user_ids"],
        "counts": {"demo-academy": demo["counts"], "hillside": hill["counts"]},
        "current_term": {
            "start": calendar["terms"][1][1],
            "end": calendar["terms"][1][2],
            "school_days_so_far": len(calendar["school_days"]),
        },
        "seconds": round(time.perf_counter() - started, 2),
    }


@seed_cli.command("demo")
@click.option(
    "--if-empty", is_flag=True, help="Do nothing when any institution exists (safe on every start)."
)
@click.option(
    "--reset", is_flag=True, help="Delete Demo Academy and Hillside School first, then seed them again."
)
def demo_command(if_empty, reset):
    """Create two demo schools with people, attendance, grades and fees."""
    existing = db.session.scalar(select(func.count()).select_from(Institution))
    if if_empty and existing:
        click.echo(f"Database has {existing} institution(s); demo seed skipped (--if-empty).")
        return
    password = current_app.config["DEMO_PASSWORD"]
    if not password:  # production: the published default password would guard real-looking logins
        raise click.ClickException(
            "Set DEMO_PASSWORD to seed the demo in production (the default is public)."
        )
    taken = db.session.scalars(select(Institution.slug).where(Institution.slug.in_(DEMO_SLUGS))).all()
    if taken and not reset:
        raise click.ClickException(
            f"{', '.join(taken)} already exist(s); use --reset to replace the demo schools."
        )
    if reset:
        for slug in DEMO_SLUGS:
            _delete_institution(slug)
    result = seed_demo(password)
    for slug, c in result["counts"].items():
        click.echo(
            f"{slug}: {c['students']} students, {c['guardians']} guardians, {c['teachers']} teachers, "
            f"{c['classes']} classes, {c['attendance_records']} attendance marks "
            f"({c['attendance_present_pct']}% present), {c['assessments']} assessments, "
            f"{c['grades']} grades, {c['invoices']} invoices, {c['payments']} payments"
        )
    term = result["current_term"]
    click.echo(
        f"Current term {term['start']} to {term['end']}, {term['school_days_so_far']} school days so far."
    )
    click.echo(f"Seeded in {result['seconds']} s. Logins (password from DEMO_PASSWORD):")
    for slug, key in (("demo-academy", "demo_user_ids"), ("hillside", "hillside_user_ids")):
        for role in result[key]:
            click.echo(f"  {role}@{slug}.test".ljust(34) + role)


# ---------------------------------------------------------------------------------------------------
# Scale seed (PostgreSQL)
# ---------------------------------------------------------------------------------------------------

SCALE_SUBJECTS = [
    ("MATH", "Mathematics"),
    ("ENG", "English"),
    ("SCI", "Science"),
    ("HIST", "History"),
    ("GEO", "Geography"),
    ("LANG", "Second Language"),
    ("ART", "Art"),
    ("PE", "Physical Education"),
]
SCALE_CLASS_SIZE = 40
SCALE_GRADES = 12


SCALE_TABLES = [
    "institutions",
    "users",
    "academic_years",
    "terms",
    "subjects",
    "teachers",
    "classes",
    "class_subjects",
    "students",
    "enrolments",
    "oneroster_classes",  # PostgreSQL: kept from the tables above by triggers (migration 0016)
    "oneroster_enrollments",
    "attendance_records",
]


def _bulk_settings(conn):
    """For the current transaction only: the app's statement/idle timeouts are for requests, not loads."""
    for setting in (
        "statement_timeout = 0",
        "idle_in_transaction_session_timeout = 0",
        "synchronous_commit = off",
        "work_mem = '64MB'",
    ):
        conn.execute(text(f"SET LOCAL {setting}"))


def _vacuum(tables, analyze):
    """VACUUM cannot run inside a transaction block: use a separate autocommit connection."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as ac:
        ac.execute(text("SET statement_timeout = 0"))
        ac.execute(text(f"VACUUM {'(ANALYZE) ' if analyze else ''}{', '.join(tables)}"))


def _past_school_days(today, n):
    days, d = [], today - timedelta(days=1)
    while len(days) < n:
        if d.weekday() < 5:
            days.append(d)
        d -= timedelta(days=1)
    return sorted(days)


def seed_scale(students=100_000, attendance_days=50, *, password=None, today=None, vacuum=False, echo=print):
    """Create (or replace) "Scale School" server-side: `students` students in classes of 40, each with
    `attendance_days` whole-day marks on the past school days. PostgreSQL only.

    With `password`, also creates admin@scale-school.test and teacher@scale-school.test (the teacher
    leads the first class and teaches in it) so benchmarks can log in.
    """
    if db.engine.dialect.name != "postgresql":
        raise RuntimeError(
            "seed scale needs PostgreSQL (set DATABASE_URL); it uses generate_series and ANALYZE"
        )
    if students < 1 or attendance_days < 0:
        raise ValueError("students must be >= 1 and attendance_days >= 0")
    today = today or date.today()
    days = _past_school_days(today, attendance_days)
    term_start = (days[0] if days else today) - timedelta(days=(days[0] if days else today).weekday())
    term_end = max(today + timedelta(weeks=4), term_start + timedelta(weeks=13) - timedelta(days=3))
    term_end += timedelta(days=(4 - term_end.weekday()) % 7)  # a Friday
    n_classes = -(-students // SCALE_CLASS_SIZE)
    n_teachers = n_classes
    nf = len(FEMALE_FIRST_NAMES)
    first_names = FEMALE_FIRST_NAMES + MALE_FIRST_NAMES
    timings = {}
    total_started = time.perf_counter()
    conn = db.session.connection()

    def step(name, sql, params=None):
        started = time.perf_counter()
        result = conn.execute(text(sql), params or {})
        elapsed = time.perf_counter() - started
        timings[name] = round(elapsed, 2)
        rows = result.rowcount if result.rowcount is not None and result.rowcount >= 0 else None
        echo(f"  {name:<34} {elapsed:7.2f} s" + (f"  {rows:>10,} rows" if rows is not None else ""))
        return result

    echo(
        f"Scale School: {students:,} students, {n_classes:,} classes, {attendance_days} school days "
        f"({students * len(days):,} attendance marks)"
    )
    _bulk_settings(conn)
    started = time.perf_counter()
    if _delete_institution(SCALE_SLUG):
        db.session.commit()
        timings["delete previous"] = round(time.perf_counter() - started, 2)
        echo(f"  {'delete previous scale-school':<34} {timings['delete previous']:7.2f} s")
        # reclaim the dead rows now, so the new load reuses the space instead of doubling tables and
        # indexes (a reload into 5M dead attendance rows ran ~30% slower and left the bloat behind)
        started = time.perf_counter()
        _vacuum(SCALE_TABLES, analyze=False)
        timings["vacuum after delete"] = round(time.perf_counter() - started, 2)
        echo(f"  {'vacuum after delete':<34} {timings['vacuum after delete']:7.2f} s")
        conn = db.session.connection()
        _bulk_settings(conn)

    now = "now()"  # server clock for created_at/updated_at (timestamptz: an absolute, UTC-comparable time)
    inst_id = step(
        "institution",
        f"""
        INSERT INTO institutions (name, slug, currency, timezone, email, grading_scale, absence_threshold,
                                  created_at, updated_at)
        VALUES ('Scale School', :slug, 'USD', 'UTC', 'office@scale-school.test', CAST(:scale AS json), 90,
                {now}, {now})
        RETURNING id""",
        {"slug": SCALE_SLUG, "scale": json.dumps(DEFAULT_GRADING_SCALE)},
    ).scalar()
    p = {
        "iid": inst_id,
        "ys": term_start,
        "ye": term_end,
        "year": f"Scale {term_start.year}",
        "n": students,
        "nc": n_classes,
        "nt": n_teachers,
        "size": SCALE_CLASS_SIZE,
        "ng": SCALE_GRADES,
        "fn": first_names,
        "nfem": nf,
        "w": max(6, len(str(students))),
        "wt": max(5, len(str(n_teachers))),
        "ln": LAST_NAMES,
        "adm": f"SC-{term_start.year}-",
    }
    year_id = step(
        "academic year + term",
        f"""
        WITH y AS (
            INSERT INTO academic_years (institution_id, name, start_date, end_date, is_current, created_at, updated_at)
            VALUES (:iid, :year, :ys, :ye, true, {now}, {now}) RETURNING id)
        INSERT INTO terms (institution_id, academic_year_id, name, start_date, end_date, created_at, updated_at)
        SELECT :iid, y.id, 'Term 1', :ys, :ye, {now}, {now} FROM y
        RETURNING academic_year_id""",
        p,
    ).scalar()
    p["yid"] = year_id
    step(
        "subjects",
        f"""
        INSERT INTO subjects (institution_id, code, name, created_at, updated_at)
        SELECT :iid, s.code, s.name, {now}, {now}
        FROM unnest(CAST(:codes AS text[]), CAST(:names AS text[])) AS s(code, name)""",
        {**p, "codes": [c for c, _ in SCALE_SUBJECTS], "names": [n for _, n in SCALE_SUBJECTS]},
    )

    # names are picked with hashint4/hashint8 (stable PostgreSQL hash functions): deterministic, well mixed
    step(
        "teachers",
        f"""
        INSERT INTO teachers (institution_id, employee_number, first_name, last_name, email, specialization,
                              hired_on, created_at, updated_at)
        SELECT :iid, 'SC-T' || lpad(g::text, :wt, '0'),
               (CAST(:fn AS text[]))[1 + mod(abs(hashint4(g)::bigint), cardinality(CAST(:fn AS text[])))],
               (CAST(:ln AS text[]))[1 + mod(abs(hashint4(g + 7919)::bigint), cardinality(CAST(:ln AS text[])))],
               'teacher' || g || '@staff.scale-school.test',
               (ARRAY['Mathematics','English','Science','History','Geography','Second Language','Art','Physical Education'])[1 + mod(g, 8)],
               CAST(:ys AS date) - mod(g * 37, 3650), {now}, {now}
        FROM generate_series(1, :nt) AS g""",
        p,
    )
    # class k (0-based): grade 1 + k % 12, section S<k / 12 + 1>; teacher k+1 is its homeroom teacher
    step(
        "classes",
        f"""
        INSERT INTO classes (institution_id, academic_year_id, name, grade_level, section, homeroom_teacher_id,
                             capacity, created_at, updated_at)
        SELECT :iid, :yid, 'Grade ' || (1 + t.k % :ng) || ' S' || (t.k / :ng + 1), 1 + t.k % :ng,
               'S' || (t.k / :ng + 1), t.id, :size, {now}, {now}
        FROM (SELECT id, (row_number() OVER (ORDER BY employee_number) - 1)::int AS k
              FROM teachers WHERE institution_id = :iid) AS t
        WHERE t.k < :nc
        ORDER BY t.k""",
        p,
    )
    # ids by position, passed back as arrays and looked up by subscript: constant time per row, and no
    # plan that depends on statistics (stale after a replace: one run re-aggregated classes per student)
    class_ids = (
        conn.execute(
            text("""
        SELECT id FROM classes WHERE institution_id = :iid
        ORDER BY (CAST(substr(section, 2) AS int) - 1) * :ng + grade_level"""),
            p,
        )
        .scalars()
        .all()
    )
    teacher_ids = (
        conn.execute(text("SELECT id FROM teachers WHERE institution_id = :iid ORDER BY employee_number"), p)
        .scalars()
        .all()
    )
    p.update(cids=class_ids, tids=teacher_ids)
    step(
        "class_subjects",
        f"""
        INSERT INTO class_subjects (institution_id, class_id, subject_id, teacher_id, created_at, updated_at)
        SELECT :iid, (CAST(:cids AS bigint[]))[k + 1], s.id, (CAST(:tids AS bigint[]))[1 + mod(k * 8 + s.idx, :nt)],
               {now}, {now}
        FROM generate_series(0, :nc - 1) AS k
        CROSS JOIN (SELECT id, (row_number() OVER (ORDER BY id) - 1)::int AS idx
                    FROM subjects WHERE institution_id = :iid) AS s
        ORDER BY k, s.idx""",
        p,
    )
    # student g (1-based) sits in class (g - 1) / 40
    step(
        "students",
        f"""
        INSERT INTO students (institution_id, admission_number, first_name, last_name, date_of_birth, gender,
                              grade_level, status, created_at, updated_at)
        SELECT :iid, :adm || lpad(g::text, :w, '0'), (CAST(:fn AS text[]))[f], (CAST(:ln AS text[]))[l],
               make_date(EXTRACT(year FROM CAST(:ys AS date))::int - grade - 6, 9, 1) + mod(g * 53, 365),
               CASE WHEN f <= :nfem THEN 'female' ELSE 'male' END, grade, 'active', {now}, {now}
        FROM (SELECT g,
                     1 + mod(abs(hashint4(g)::bigint), cardinality(CAST(:fn AS text[]))) AS f,
                     1 + mod(abs(hashint4(-g)::bigint), cardinality(CAST(:ln AS text[]))) AS l,
                     1 + ((g - 1) / :size) % :ng AS grade
              FROM generate_series(1, :n) AS g) AS x
        ORDER BY g""",
        p,
    )
    step(
        "enrolments",
        f"""
        INSERT INTO enrolments (institution_id, student_id, class_id, start_date, end_date, reason,
                                created_at, updated_at)
        SELECT :iid, st.id,
               (CAST(:cids AS bigint[]))[1 + (CAST(substr(st.admission_number, length(:adm) + 1) AS int) - 1) / :size],
               :ys, NULL, 'Admitted', {now}, {now}
        FROM students st
        WHERE st.institution_id = :iid
        ORDER BY st.id""",
        p,
    )
    step("analyze (for the attendance plan)", "ANALYZE students, classes, enrolments")

    # attendance: whole-day marks, ~93% present; ~3% of students are chronically absent.
    # Loaded in student-id order (the order of the unique index) in chunks, to show progress.
    if days:
        lo, hi = conn.execute(
            text("SELECT min(student_id), max(student_id) FROM enrolments WHERE institution_id = :iid"), p
        ).one()
        chunk = max(1, (hi - lo + 1) // 10 + 1)
        att_started = time.perf_counter()
        total_rows = 0
        for c_lo in range(lo, hi + 1, chunk):
            started = time.perf_counter()
            result = conn.execute(
                text("""
                INSERT INTO attendance_records (institution_id, student_id, class_id, subject_id, period, date,
                                                status, note, source, marked_by_id, created_at, updated_at)
                SELECT :iid, e.student_id, e.class_id, NULL, 0, d.day,
                       CASE WHEN mod(abs(hashint4(e.student_id)::bigint), 100) < 3 THEN
                                CASE WHEN h < 180 THEN 'absent' WHEN h < 230 THEN 'late'
                                     WHEN h < 280 THEN 'excused' ELSE 'present' END
                            ELSE CASE WHEN h < 25 THEN 'absent' WHEN h < 55 THEN 'late'
                                      WHEN h < 62 THEN 'excused' ELSE 'present' END
                       END,
                       NULL, 'manual', NULL,
                       (d.day + time '08:30') AT TIME ZONE 'UTC', (d.day + time '08:30') AT TIME ZONE 'UTC'
                FROM enrolments e
                CROSS JOIN unnest(CAST(:days AS date[])) AS d(day)
                CROSS JOIN LATERAL (SELECT mod(abs(hashint8(e.student_id::bigint * 100000 + (d.day - date '2000-01-01'))::bigint), 1000) AS h) AS r
                WHERE e.institution_id = :iid AND e.end_date IS NULL AND e.student_id BETWEEN :lo AND :hi
                ORDER BY e.student_id, d.day"""),
                {**p, "days": days, "lo": c_lo, "hi": c_lo + chunk - 1},
            )
            total_rows += result.rowcount
            echo(
                f"  {f'attendance {c_lo}..{min(hi, c_lo + chunk - 1)}':<34} {time.perf_counter() - started:7.2f} s"
                f"  {total_rows:>10,} rows so far"
            )
        timings["attendance"] = round(time.perf_counter() - att_started, 2)
        echo(
            f"  {'attendance total':<34} {timings['attendance']:7.2f} s  "
            f"{total_rows / max(timings['attendance'], 0.001):,.0f} rows/s"
        )

    logins = {}
    if password:
        password_hash = hash_password(password)
        logins = dict(
            conn.execute(
                text(f"""
            INSERT INTO users (institution_id, email, password_hash, role, first_name, last_name, is_active,
                               created_at, updated_at)
            VALUES (:iid, 'admin@scale-school.test', :ph, 'admin', 'Scale', 'Admin', true, {now}, {now}),
                   (:iid, 'teacher@scale-school.test', :ph, 'teacher', 'Scale', 'Teacher', true, {now}, {now})
            RETURNING role, id"""),
                {**p, "ph": password_hash},
            ).all()
        )
        conn.execute(
            text(
                "UPDATE teachers SET user_id = :uid, email = 'teacher@scale-school.test' "
                "WHERE institution_id = :iid AND employee_number = :emp"
            ),
            {**p, "uid": logins["teacher"], "emp": "SC-T" + "1".rjust(p["wt"], "0")},
        )

    started = time.perf_counter()
    db.session.commit()
    timings["commit"] = round(time.perf_counter() - started, 2)
    echo(f"  {'commit':<34} {timings['commit']:7.2f} s")

    started = time.perf_counter()
    if vacuum:
        _vacuum(SCALE_TABLES, analyze=True)
    else:
        conn = db.session.connection()
        conn.execute(text("SET LOCAL statement_timeout = 0"))
        conn.execute(text(f"ANALYZE {', '.join(SCALE_TABLES)}"))
        db.session.commit()
    timings["vacuum analyze" if vacuum else "analyze"] = round(time.perf_counter() - started, 2)
    echo(f"  {'vacuum (analyze)' if vacuum else 'analyze':<34} {time.perf_counter() - started:7.2f} s")
    timings["total"] = round(time.perf_counter() - total_started, 2)
    echo(f"  {'total':<34} {timings['total']:7.2f} s")

    counts = dict(
        db.session.execute(
            text("""
        SELECT 'students', count(*) FROM students WHERE institution_id = :iid
        UNION ALL SELECT 'classes', count(*) FROM classes WHERE institution_id = :iid
        UNION ALL SELECT 'teachers', count(*) FROM teachers WHERE institution_id = :iid
        UNION ALL SELECT 'class_subjects', count(*) FROM class_subjects WHERE institution_id = :iid
        UNION ALL SELECT 'enrolments', count(*) FROM enrolments WHERE institution_id = :iid
        UNION ALL SELECT 'attendance_records', count(*) FROM attendance_records WHERE institution_id = :iid
    """),
            p,
        ).all()
    )
    db.session.commit()
    return {
        "institution_id": inst_id,
        "academic_year_id": year_id,
        "term_start": term_start,
        "term_end": term_end,
        "first_day": days[0] if days else None,
        "last_day": days[-1] if days else None,
        "counts": counts,
        "user_ids": logins,
        "timings": timings,
    }


@seed_cli.command("scale")
@click.option(
    "--students",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Number of students (classes of 40).",
)
@click.option(
    "--attendance-days",
    default=50,
    show_default=True,
    type=click.IntRange(min=0),
    help="Past school days of attendance per student.",
)
@click.option("--vacuum", is_flag=True, help="Run VACUUM (ANALYZE) instead of ANALYZE after loading.")
def scale_command(students, attendance_days, vacuum):
    """Create or replace "Scale School" (slug scale-school) on PostgreSQL for benchmarks."""
    if db.engine.dialect.name != "postgresql":
        raise click.ClickException("seed scale needs PostgreSQL: set DATABASE_URL to a postgresql:// URL.")
    result = seed_scale(
        students,
        attendance_days,
        password=current_app.config.get("DEMO_PASSWORD"),
        vacuum=vacuum,
        echo=click.echo,
    )
    click.echo(
        f"Scale School id {result['institution_id']}: "
        + ", ".join(f"{k} {v:,}" for k, v in result["counts"].items())
    )
    if result["user_ids"]:
        click.echo("Logins (password from DEMO_PASSWORD): admin@scale-school.test, teacher@scale-school.test")
