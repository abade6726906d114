"""Privacy (docs/PRIVACY.md): a subject-access export holds every table that mentions the person; erasure
leaves no trace of their name, e-mail or phone anywhere and the school's fee totals unchanged; retention
deletes old rows only; staff reads of sensitive records are listed for the admin."""

import io
import json
import textwrap
import zipfile
from datetime import timedelta

import pytest
from pypdf import PdfReader
from sqlalchemy import JSON, String, Text, cast, func, insert, or_, select, text

from app.core.models import utcnow
from app.core.security import hash_password
from app.extensions import db
from app.finance.models import C2bPayment, StkRequest
from app.jobs.models import Job, StoredFile
from app.notifications.models import OutboxEmail, OutboxSms
from app.people.models import Guardian, User
from app.privacy import services
from tests.conftest import PASSWORD, Api, assert_problem, login
from tests.embedded import run_embedded

FIRST, LAST = "Quillonia", "Vexmarrow"
EMAIL = "quillonia.vexmarrow@family.test"
PHONE = "+254711987654"
NEW_PHONE = "+254722135791"


@pytest.fixture(autouse=True)
def in_process(app, tmp_path):
    celery = app.extensions["celery"]
    saved = celery.conf.task_always_eager, app.config["EXPORT_DIR"]
    celery.conf.task_always_eager = True
    app.config["EXPORT_DIR"] = str(tmp_path / "exports")
    yield
    celery.conf.task_always_eager, app.config["EXPORT_DIR"] = saved


def ok(resp, status=200):
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_json()


def _download_zip(api, client, resp):
    job = ok(api.get(ok(resp, 202) and resp.headers["Location"]))
    assert job["status"] == "done", job
    data = client.get(job["download_url"])
    assert data.status_code == 200 and data.mimetype == "application/zip"
    return zipfile.ZipFile(io.BytesIO(data.data))


def _family(admin, client, demo):
    """A guardian with a login, linked to the demo student, mentioned in every kind of record."""
    iid = demo["demo_institution_id"]
    gid = ok(
        admin.post(
            "/guardians",
            json={
                "first_name": FIRST,
                "last_name": LAST,
                "email": EMAIL,
                "phone": PHONE,
                "notify_by": "both",
            },
        ),
        201,
    )["id"]
    sid = demo["demo_student_id"]
    assert admin.post(f"/students/{sid}/guardians", json={"guardian_id": gid}).status_code == 204
    ok(admin.patch(f"/guardians/{gid}", json={"phone": NEW_PHONE}))  # the old number stays in the audit diff
    user = User(
        institution_id=iid,
        email=EMAIL,
        password_hash=hash_password(PASSWORD),
        role="guardian",
        first_name=FIRST,
        last_name=LAST,
        is_active=True,
    )
    db.session.add(user)
    db.session.flush()
    db.session.get(Guardian, gid).user_id = user.id
    now = utcnow()
    db.session.add_all(
        [
            OutboxEmail(
                institution_id=iid,
                dedupe_key=f"test:{gid}",
                to_address=EMAIL,
                template="absence_alert",
                context={"guardian_name": f"{FIRST} {LAST}", "student": "someone"},
                subject=f"Dear {FIRST} {LAST}",
                status="sent",
                attempts=1,
                created_at=now,
            ),
            OutboxSms(
                institution_id=iid,
                dedupe_key=f"test:{gid}",
                to_number=PHONE,
                kind="absence_alert",
                body=f"Dear {FIRST}, your child was absent today.",
                encoding="gsm7",
                segments=1,
                status="sent",
                attempts=1,
                created_at=now,
            ),
            StkRequest(
                institution_id=iid,
                invoice_id=demo["demo_invoice_id"],
                student_id=sid,
                phone=PHONE.lstrip("+"),
                amount_minor=100,
                merchant_request_id="m-privacy-1",
                checkout_request_id="c-privacy-1",
                status="failed",
                created_at=now,
            ),
            C2bPayment(
                institution_id=iid,
                trans_id="PRIVACY001",
                amount_minor=100,
                bill_ref="NOSUCHREF",
                msisdn=PHONE.lstrip("+"),
                payer_name=f"{FIRST.upper()} {LAST.upper()}",
                status="suspense",
                created_at=now,
            ),
            Job(
                institution_id=iid,
                job_type="import",
                kind="guardians",
                format="csv",
                params={},
                status="done",
                result={"failed": [{"line": 3, "email": EMAIL, "first_name": FIRST, "errors": {"x": "y"}}]},
                created_at=now,
                updated_at=now,
            ),
        ]
    )
    db.session.commit()
    api = Api(client, login(client, EMAIL))  # a session (auth_sessions, refresh_tokens) and a login audit
    return gid, user.id, api


def _metadata_tables(gid, uid):
    """Independently of the service: the tables whose foreign keys name this guardian or their login
    and that hold such a row."""
    found = set()
    for table in db.metadata.sorted_tables:
        for col in table.columns:
            for fk in col.foreign_keys:
                target = {"guardians": gid, "users": uid}.get(fk.column.table.name)
                if (
                    target is not None
                    and db.session.execute(
                        select(func.count()).select_from(table).where(col == target)
                    ).scalar_one()
                ):
                    found.add(table.name)
    return found


def _holding(*values):
    """(table, column) pairs of the whole database whose text holds any of the values (any case)."""
    hits = []
    for table in db.metadata.sorted_tables:
        for col in table.columns:
            if not isinstance(col.type, String | Text | JSON):
                continue
            body = func.lower(cast(col, Text))
            forms = {f for v in values for f in (v.lower(), json.dumps(v.lower())[1:-1])}
            n = db.session.execute(
                select(func.count())
                .select_from(table)
                .where(or_(*(body.contains(f, autoescape=True) for f in forms)))
            ).scalar_one()
            if n:
                hits.append((table.name, col.name))
    return hits


def _fee_totals(iid):
    return db.session.execute(
        text(
            "SELECT (SELECT coalesce(sum(total_minor), 0) FROM invoices WHERE institution_id = :i),"
            " (SELECT coalesce(sum(amount_minor), 0) FROM payments WHERE institution_id = :i),"
            " (SELECT count(*) FROM invoices WHERE institution_id = :i),"
            " (SELECT count(*) FROM payments WHERE institution_id = :i)"
        ),
        {"i": iid},
    ).one()


def test_a_guardians_subject_access_zip_holds_every_table_that_mentions_them(admin, client, demo):
    gid, uid, _ = _family(admin, client, demo)
    zf = _download_zip(admin, client, admin.post(f"/guardians/{gid}/subject-access"))
    names = set(zf.namelist())
    expected = _metadata_tables(gid, uid) | {"guardians", "users", "audit_log"}
    expected |= {t for t, _ in _holding(EMAIL, PHONE.lstrip("+"))} - {"erasures"}
    assert {f"{t}.json" for t in expected} <= names, expected - {n[:-5] for n in names}
    assert {"email_outbox", "sms_outbox", "mpesa_stk_requests", "mpesa_c2b_payments", "jobs"} <= expected
    guardian = json.loads(zf.read("guardians.json"))
    assert guardian[0]["email"] == EMAIL and guardian[0]["phone"] == NEW_PHONE
    users = json.loads(zf.read("users.json"))
    assert "password_hash" not in users[0]  # credentials are never exported
    audit_rows = json.loads(zf.read("audit_log.json"))
    assert any(r["entity_type"] == "guardian" and r["entity_id"] == str(gid) for r in audit_rows)
    manifest = json.loads(zf.read("manifest.json"))
    assert manifest["subject"] == "guardian" and manifest["tables"]["guardians"] == 1


def test_erasure_leaves_no_name_email_or_phone_and_keeps_fee_totals(admin, client, demo):
    iid = demo["demo_institution_id"]
    gid, uid, guardian_api = _family(admin, client, demo)
    assert _holding(FIRST, LAST, EMAIL, PHONE.lstrip("+"), NEW_PHONE.lstrip("+"))  # the setup put them there
    before = _fee_totals(iid)

    statement = ok(admin.post(f"/guardians/{gid}/erasure", json={"confirm": True}))
    assert statement["already_erased"] is False and statement["access_ended"]["login"] is True
    assert statement["access_ended"]["sessions_ended"] >= 1
    assert {"guardians", "email_outbox", "sms_outbox", "mpesa_c2b_payments", "audit_log", "jobs"} <= set(
        statement["anonymised"]
    )
    assert all(k["why"] for k in statement["kept"])
    assert FIRST not in json.dumps(statement) and EMAIL not in json.dumps(statement)

    assert _holding(FIRST, LAST, EMAIL, PHONE.lstrip("+"), NEW_PHONE.lstrip("+")) == []
    assert _fee_totals(iid) == before
    assert guardian_api.get("/auth/me").status_code == 401  # their session ended
    resp = client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert resp.status_code == 401
    # the erasure's own audit entry, without the erased data
    entry = db.session.execute(
        text(
            "SELECT changes FROM audit_log WHERE action = 'erase' AND entity_type = 'guardian' AND entity_id = :g"
        ),
        {"g": str(gid)},
    ).scalar_one()
    assert entry is None

    again = ok(admin.post(f"/guardians/{gid}/erasure", json={"confirm": True}))
    assert again["already_erased"] is True and again["anonymised"] == statement["anonymised"]
    assert ok(admin.get(f"/guardians/{gid}"))["first_name"] == "Erased"


def test_a_students_subject_access_zip_holds_their_report_card_pdf(admin, client, demo):
    sid = demo["demo_student_id"]
    student = ok(admin.get(f"/students/{sid}"))
    zf = _download_zip(admin, client, admin.post(f"/students/{sid}/subject-access"))
    names = set(zf.namelist())
    assert {
        "students.json",
        "enrolments.json",
        "attendance_records.json",
        "grades.json",
        "invoices.json",
    } <= names
    cards = [n for n in names if n.startswith("documents/report-card-term-")]
    assert cards, names
    pdf = zf.read(cards[-1])
    assert pdf.startswith(b"%PDF")
    page_text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert student["last_name"] in page_text
    assert "documents/fee-statement.pdf" in names


def test_retention_deletes_old_rows_and_keeps_recent_ones(app, demo):
    iid = demo["demo_institution_id"]
    now = utcnow()
    old, recent = now - timedelta(days=4000), now - timedelta(days=1)

    def audit(at, marker):
        db.session.execute(
            insert(db.metadata.tables["audit_log"]).values(
                institution_id=iid, action="retention-test", entity_type=marker, created_at=at
            )
        )

    audit(old, "old")
    audit(recent, "recent")
    for at, key in ((old, "old"), (recent, "recent")):
        db.session.add(
            OutboxEmail(
                institution_id=iid,
                dedupe_key=f"ret:{key}",
                to_address="x@example.test",
                template="t",
                context={},
                subject=key,
                status="sent",
                attempts=1,
                created_at=at,
            )
        )
        db.session.add(
            OutboxSms(
                institution_id=iid,
                dedupe_key=f"ret:{key}",
                to_number="+254700000000",
                kind="t",
                body=key,
                encoding="gsm7",
                segments=1,
                status="sent",
                attempts=1,
                created_at=at,
            )
        )
        db.session.add(
            Job(
                institution_id=iid,
                job_type="export",
                kind="fee_collection",
                format="csv",
                params={"marker": key},
                status="failed",
                created_at=at,
                updated_at=at,
                finished_at=at,
            )
        )
        db.session.execute(
            insert(db.metadata.tables["idempotency_keys"]).values(
                institution_id=iid,
                user_id=demo["demo_user_ids"]["admin"],
                key=f"ret-{key}",
                endpoint="test",
                request_hash="0" * 64,
                response_status=200,
                response_body={},
                created_at=at,
            )
        )
        db.session.add(
            StoredFile(
                institution_id=iid,
                path=f"{iid}/uploads/ret-{key}.csv",
                filename=f"ret-{key}.csv",
                content_type="text/csv",
                size_bytes=0,
                created_at=at,
            )
        )
    db.session.commit()

    counts = services.apply_retention()
    assert all(
        counts[k] >= 1 for k in ("audit_log", "email_outbox", "sms_outbox", "jobs", "idempotency_keys")
    )

    def markers(sql):
        return set(db.session.execute(text(sql), {"i": iid}).scalars())

    assert markers(
        "SELECT entity_type FROM audit_log WHERE action = 'retention-test' AND institution_id = :i"
    ) == {"recent"}
    assert markers(
        "SELECT subject FROM email_outbox WHERE dedupe_key LIKE 'ret:%' AND institution_id = :i"
    ) == {"recent"}
    assert markers("SELECT body FROM sms_outbox WHERE dedupe_key LIKE 'ret:%' AND institution_id = :i") == {
        "recent"
    }
    assert markers("SELECT key FROM idempotency_keys WHERE key LIKE 'ret-%' AND institution_id = :i") == {
        "ret-recent"
    }
    assert markers("SELECT filename FROM files WHERE filename LIKE 'ret-%' AND institution_id = :i") == {
        "ret-recent.csv"
    }
    jobs = db.session.execute(
        select(Job.params).where(
            Job.kind == "fee_collection", Job.status == "failed", Job.institution_id == iid
        )
    ).scalars()
    assert [p.get("marker") for p in jobs if p.get("marker")] == ["recent"]


def test_a_teachers_reads_of_guardian_contacts_are_listed_for_the_admin(admin, teacher, demo):
    sid, gid = demo["demo_student_id"], demo["demo_guardian_id"]
    first = teacher.get(f"/students/{sid}")
    assert first.status_code == 200 and first.get_json()["guardians"]
    second = teacher.get(f"/students/{sid}")
    assert second.status_code == 200 and second.headers.get("X-Cache", "").startswith(
        "hit"
    )  # cached, still recorded
    assert teacher.get(f"/guardians/{gid}").status_code == 200
    admin.get(f"/students/{sid}")  # the admin's own read is recorded too

    rows = ok(admin.get(f"/students/{sid}/disclosures"))["data"]
    by_teacher = [r for r in rows if r["actor_id"] == demo["demo_user_ids"]["teacher"]]
    assert sorted(r["record"] for r in by_teacher) == [
        "guardian_contacts",
        "student_guardians",
        "student_guardians",
    ]
    assert all(r["actor_role"] == "teacher" for r in by_teacher)
    assert any(r["guardian_id"] == gid for r in by_teacher)


def test_privacy_operations_are_for_the_schools_admin_only(
    admin, teacher, accountant, guardian, hillside_admin, demo
):
    sid, gid = demo["demo_student_id"], demo["demo_guardian_id"]
    for api in (teacher, accountant, guardian):
        assert_problem(api.get(f"/students/{sid}/disclosures"), 403)
        assert_problem(api.post(f"/students/{sid}/erasure", json={"confirm": True}), 403)
        assert_problem(api.post(f"/guardians/{gid}/subject-access"), 403)
    assert_problem(hillside_admin.get(f"/students/{sid}/disclosures"), 404)
    assert_problem(hillside_admin.post(f"/students/{sid}/erasure", json={"confirm": True}), 404)
    assert_problem(hillside_admin.post(f"/guardians/{gid}/erasure", json={"confirm": True}), 404)
    assert_problem(hillside_admin.post(f"/students/{sid}/subject-access"), 404)
    assert_problem(admin.post(f"/guardians/{gid}/erasure", json={}), 422, "confirm")
    assert ok(admin.get(f"/guardians/{gid}"))["first_name"] != "Erased"  # nothing half-done


EMBEDDED = textwrap.dedent("""
    import io, json, zipfile
    from flask_migrate import upgrade
    from app import create_app
    from app.seed import seed_demo
    from app.privacy import services

    app = create_app()
    with app.app_context():
        upgrade()
        demo = seed_demo("embedded-pass-1")
    c = app.test_client()
    tokens = c.post("/api/v1/auth/login", json={"email": "admin@demo-academy.test",
                                                "password": "embedded-pass-1"}).get_json()
    h = {"Authorization": "Bearer " + tokens["access_token"]}
    sid, gid = demo["demo_student_id"], demo["demo_guardian_id"]
    out = {}
    job = c.post(f"/api/v1/students/{sid}/subject-access", headers=h)
    job = c.get(job.headers["Location"], headers=h).get_json()
    out["job"] = job["status"]
    names = zipfile.ZipFile(io.BytesIO(c.get(job["download_url"]).data)).namelist()
    out["pdfs"] = len([n for n in names if n.endswith(".pdf")])
    out["read"] = c.get(f"/api/v1/guardians/{gid}", headers=h).status_code
    out["disclosures"] = len(c.get(f"/api/v1/students/{sid}/disclosures", headers=h).get_json()["data"])
    first = c.post(f"/api/v1/guardians/{gid}/erasure", json={"confirm": True}, headers=h).get_json()
    again = c.post(f"/api/v1/guardians/{gid}/erasure", json={"confirm": True}, headers=h).get_json()
    out["erased"] = [first["already_erased"], again["already_erased"]]
    with app.app_context():
        out["retention"] = sorted(services.apply_retention())
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_privacy_works_on_the_embedded_default(tmp_path):
    out = run_embedded(EMBEDDED, tmp_path)
    assert out["job"] == "done" and out["pdfs"] >= 1
    assert out["read"] == 200 and out["disclosures"] >= 1
    assert out["erased"] == [False, True]
    assert "audit_log" in out["retention"]
