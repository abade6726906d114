"""Announcement fan-out benchmark: N guardians (one child each) in one class of a school made for the
run, an announcement to the class, and `app.announcements.services.deliver` timed: the recipients
(INSERT ... SELECT) and one e-mail and/or SMS outbox row per guardian by their channel (a third each
e-mail, SMS, both), committed. Target (issue 13): 10,000 recipients in under a minute. Prints one JSON
document; the school is deleted afterwards (--keep keeps it).

    DATABASE_URL=postgresql://... .venv/bin/python bench/announce_bench.py [--guardians 10000] [--send]

--send also times sending every queued message through the file backends (MAIL_DIR, SMS_DIR set to a
temporary directory), which a provider's rate decides in production, so it is reported apart.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_SECONDS = 60


def _app(out_dir):
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.pop("REDIS_URL", None)  # in-process tasks; nothing here needs Redis
    os.environ.update(MAIL_BACKEND="file", MAIL_DIR=str(out_dir / "mail"), SMS_BACKEND="file")
    os.environ["SMS_DIR"] = str(out_dir / "sms")
    from app import create_app  # noqa: PLC0415 - after the environment is set

    return create_app()


def _school(db, n):
    """A committed school: an admin, a year, one class, n students each with one guardian."""
    from sqlalchemy import insert, text  # noqa: PLC0415

    from app.academics.models import AcademicYear, Enrolment, SchoolClass  # noqa: PLC0415
    from app.core.models import utcnow  # noqa: PLC0415
    from app.institutions.models import DEFAULT_GRADING_SCALE, Institution  # noqa: PLC0415
    from app.people.models import Guardian, Student, StudentGuardian, User  # noqa: PLC0415

    slug = f"bench-announce-{uuid.uuid4().hex[:8]}"
    now, start = utcnow(), date.today() - timedelta(days=30)
    stamp = {"created_at": now, "updated_at": now}
    conn = db.session.connection()
    iid = conn.execute(
        insert(Institution).returning(Institution.id),
        [
            {
                "name": "Announcement Bench School",
                "slug": slug,
                "currency": "KES",
                "timezone": "Africa/Nairobi",
                "grading_scale": list(DEFAULT_GRADING_SCALE),
                "absence_threshold": 90,
                **stamp,
            }
        ],
    ).scalar()
    row = {"institution_id": iid, **stamp}
    admin = conn.execute(
        insert(User).returning(User.id),
        [
            {
                **row,
                "email": f"admin@{slug}.test",
                "password_hash": "x",
                "role": "admin",
                "first_name": "Bench",
                "last_name": "Admin",
                "is_active": True,
            }
        ],
    ).scalar()
    year = conn.execute(
        insert(AcademicYear).returning(AcademicYear.id),
        [
            {
                **row,
                "name": "Bench",
                "start_date": start,
                "end_date": start + timedelta(days=300),
                "is_current": True,
            }
        ],
    ).scalar()
    class_id = conn.execute(
        insert(SchoolClass).returning(SchoolClass.id),
        [{**row, "academic_year_id": year, "name": "Bench 1", "grade_level": 1, "section": "B"}],
    ).scalar()
    students = (
        conn.execute(
            insert(Student).returning(Student.id),
            [
                {
                    **row,
                    "admission_number": f"B-{i}",
                    "first_name": "Kid",
                    "last_name": f"No{i}",
                    "status": "active",
                }
                for i in range(n)
            ],
        )
        .scalars()
        .all()
    )
    channels = ("email", "sms", "both")
    guardians = (
        conn.execute(
            insert(Guardian).returning(Guardian.id),
            [
                {
                    **row,
                    "first_name": "Parent",
                    "last_name": f"No{i}",
                    "email": f"parent{i}@{slug}.test",
                    "phone": f"07{i:08d}",
                    "notify_by": channels[i % 3],
                }
                for i in range(n)
            ],
        )
        .scalars()
        .all()
    )
    conn.execute(
        insert(StudentGuardian),
        [{"institution_id": iid, "student_id": s, "guardian_id": g} for s, g in zip(students, guardians)],
    )
    conn.execute(
        insert(Enrolment),
        [{**row, "student_id": s, "class_id": class_id, "start_date": start} for s in students],
    )
    db.session.commit()
    if db.engine.dialect.name == "postgresql":
        # Fresh statistics, as autovacuum gathers after a bulk load this size: planned from stale ones,
        # the new class looks empty and the fan-out's INSERT ... SELECT took a nested loop past the
        # statement timeout (seen in make bench-quick).
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as ac:
            ac.execute(text("ANALYZE students, guardians, student_guardians, enrolments, classes"))
    return iid, slug, admin, class_id


def run(n=10_000, send=False, keep=False):
    with tempfile.TemporaryDirectory() as tmp:
        app = _app(Path(tmp))
        with app.app_context():
            from app.announcements import services  # noqa: PLC0415
            from app.announcements.models import Announcement  # noqa: PLC0415
            from app.core.models import utcnow  # noqa: PLC0415
            from app.extensions import db  # noqa: PLC0415
            from app.notifications import services as mail  # noqa: PLC0415
            from app.notifications import sms_services  # noqa: PLC0415
            from app.seed import _delete_institution  # noqa: PLC0415

            made = time.perf_counter()
            iid, slug, admin, class_id = _school(db, n)
            result = {"guardians": n, "setup_seconds": round(time.perf_counter() - made, 2)}
            try:
                posted = Announcement(
                    institution_id=iid,
                    author_id=admin,
                    title="Sports day",
                    body="Sports day is on Friday from 9am on the field. Bring water and a hat.",
                    audience="class",
                    class_id=class_id,
                    status="queued",
                    recipient_count=0,
                    email_count=0,
                    sms_count=0,
                    created_at=utcnow(),
                )
                db.session.add(posted)
                db.session.commit()
                aid = posted.id
                t0 = time.perf_counter()
                report = services.deliver(aid, dispatch=False)
                result["fanout_seconds"] = round(time.perf_counter() - t0, 2)
                result["fanout"] = report
                t0 = time.perf_counter()
                again = services.deliver(aid, dispatch=False)
                result["second_run_seconds"] = round(time.perf_counter() - t0, 2)
                result["second_run"] = again
                if send:
                    t0 = time.perf_counter()
                    sent = {"email": 0, "sms": 0}
                    while (r := mail.dispatch_outbox(max_batches=1000, max_seconds=3600))["sent"]:
                        sent["email"] += r["sent"]
                    while (r := sms_services.dispatch_sms_outbox(max_batches=1000, max_seconds=3600))["sent"]:
                        sent["sms"] += r["sent"]
                    result["send_seconds"] = round(time.perf_counter() - t0, 2)
                    result["sent"] = sent
                result["target_seconds"] = TARGET_SECONDS
                result["ok"] = result["fanout_seconds"] < TARGET_SECONDS and again["recipients"] == 0
            finally:
                if not keep:
                    db.session.rollback()
                    _delete_institution(slug)
                    db.session.commit()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--guardians", type=int, default=10_000)
    parser.add_argument("--send", action="store_true", help="also time sending through the file backends")
    parser.add_argument("--keep", action="store_true", help="keep the bench school afterwards")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.guardians, args.send, args.keep), indent=2))


if __name__ == "__main__":
    main()
