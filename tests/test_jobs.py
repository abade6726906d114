"""Exports and imports through the API.

Most tests run the tasks in-process (Celery's task_always_eager: the job is done when POST returns),
inside the test's rolled-back transaction. The last test runs a REAL worker process on its own Redis
against rows it commits (in a separate school), so the whole path is crossed: API -> broker -> worker
-> job row -> signed download.
"""

import csv
import io
import re
import zipfile
from datetime import date, timedelta

import openpyxl
import pytest
from sqlalchemy import func, select

from app.academics.models import Enrolment
from app.audit.models import AuditEntry
from app.extensions import db
from app.jobs import services
from app.jobs.models import Job, StoredFile
from app.people.models import Student
from tests.conftest import assert_problem, demo_today
from tests.embedded import run_embedded
from tests.worker_support import Worker, poll

FORMULA = '=HYPERLINK("x")'


@pytest.fixture(autouse=True)
def in_process(app, tmp_path):
    """Tasks run in-process; export files go to a per-test directory."""
    celery = app.extensions["celery"]
    saved = celery.conf.task_always_eager, app.config["EXPORT_DIR"], app.config["EXPORT_MAX_ROWS"]
    celery.conf.task_always_eager = True
    app.config["EXPORT_DIR"] = str(tmp_path / "exports")
    yield
    celery.conf.task_always_eager, app.config["EXPORT_DIR"], app.config["EXPORT_MAX_ROWS"] = saved


def export(api, kind, fmt, expect=202, **params):
    resp = api.post("/exports", json={"kind": kind, "format": fmt, "params": params})
    assert resp.status_code == expect, resp.get_data(as_text=True)
    return resp


def finished(api, resp):
    """The job as the API shows it now (in-process: already finished)."""
    job = api.get(resp.headers["Location"]).get_json()
    assert job["status"] == "done", job
    return job


def download(client, job):
    resp = client.get(job["download_url"])  # no Authorization: the signed token is the credential
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp


def csv_rows(resp):
    return list(csv.reader(io.StringIO(resp.data.decode("utf-8-sig"))))


def add_student(demo, first, last="Tester", class_id=None):
    """Straight into the database: the API trims names, and a leading tab must survive to be tested."""
    student = Student(
        institution_id=demo["demo_institution_id"],
        admission_number=f"T-{abs(hash(first)) % 10**8}",
        first_name=first,
        last_name=last,
        status="active",
    )
    db.session.add(student)
    db.session.flush()
    db.session.add(
        Enrolment(
            institution_id=demo["demo_institution_id"],
            student_id=student.id,
            class_id=class_id or demo["demo_class_id"],
            start_date=date.today() - timedelta(days=40),
        )
    )
    db.session.commit()
    return student


# --- lifecycle and formats ----------------------------------------------------------------------------


def test_csv_export_lifecycle(admin, client, demo):
    resp = export(admin, "class_roster", "csv", class_id=demo["demo_class_id"])
    body = resp.get_json()
    assert resp.headers["Location"] == f"/api/v1/exports/{body['id']}"
    assert set(body) >= {
        "id",
        "kind",
        "format",
        "status",
        "progress",
        "row_count",
        "size_bytes",
        "error",
        "created_at",
        "finished_at",
        "expires_at",
        "download_url",
    }
    job = finished(admin, resp)
    assert job["progress"] == {"percent": 100, "rows_done": job["row_count"]} and job["attempts"] == 1
    assert job["size_bytes"] > 0 and job["expires_at"] > job["finished_at"] and job["error"] is None
    file = download(client, job)
    assert file.mimetype == "text/csv" and "attachment" in file.headers["Content-Disposition"]
    assert file.headers["Content-Type"] == "text/csv; charset=utf-8"  # the charset said once
    assert file.headers["Cache-Control"] == "private, no-store"
    rows = csv_rows(file)
    assert rows[0][:3] == ["Admission no.", "Last name", "First name"]
    enrolled = db.session.scalar(
        select(func.count())
        .select_from(Enrolment)
        .where(Enrolment.class_id == demo["demo_class_id"], Enrolment.end_date.is_(None))
    )
    assert len(rows) - 1 == enrolled == job["row_count"]
    assert len(file.data) == job["size_bytes"]
    listed = admin.get("/exports?status=done").get_json()["data"]
    assert job["id"] in [j["id"] for j in listed]


@pytest.mark.parametrize("name", [FORMULA, "+SUM(1,2)", "-2+3", "@cmd", "\tx=1", "\rx=1"])
def test_formula_cells_read_back_as_text_in_csv(admin, client, demo, name):
    add_student(demo, name)
    # class_roster's CSV is written by PostgreSQL COPY (neutralised in SQL); the register's in Python
    roster = csv_rows(
        download(
            client, finished(admin, export(admin, "class_roster", "csv", class_id=demo["demo_class_id"]))
        )
    )
    register = csv_rows(
        download(
            client,
            finished(
                admin,
                export(
                    admin,
                    "attendance_register",
                    "csv",
                    class_id=demo["demo_class_id"],
                    month=date.today().strftime("%Y-%m"),
                ),
            ),
        )
    )
    for rows in (roster, register):
        firsts = [r[2] for r in rows[1:]]
        assert "'" + name in firsts and name not in firsts


# Both CSV paths: class_roster's rows are written by PostgreSQL COPY, the register's by Python.
def _both_csv_exports(admin, client, demo):
    month = date.today().strftime("%Y-%m")
    for kind, params in (
        ("class_roster", {"class_id": demo["demo_class_id"]}),
        ("attendance_register", {"class_id": demo["demo_class_id"], "month": month}),
    ):
        yield download(client, finished(admin, export(admin, kind, "csv", **params))).data.decode("utf-8-sig")


PLAIN = ["+254 700 111222", "-5", "+1 (555) 123-4567", "-12.50"]
SEPARATED = [";=1+1", "a;b", 'say "hi"', "x,=2+2"]


def test_csv_leaves_numbers_and_phone_numbers_as_written_and_quotes_separators(admin, client, demo):
    for n, name in enumerate(PLAIN + SEPARATED + ["=1+1", "+SUM(A1)", "-1+1"]):
        add_student(demo, name, last=f"Zz{n:02d}")
    for text in _both_csv_exports(admin, client, demo):
        rows = {r[1]: r[2] for r in csv.reader(io.StringIO(text))}
        for n, name in enumerate(PLAIN + SEPARATED):
            assert rows[f"Zz{n:02d}"] == name  # no visible apostrophe
        for n, name in enumerate(["=1+1", "+SUM(A1)", "-1+1"], start=len(PLAIN + SEPARATED)):
            assert rows[f"Zz{n:02d}"] == "'" + name
        # quoted in the file itself, so a ; (a separator in many locales) cannot start a new cell
        assert '";=1+1"' in text and '"a;b"' in text and '"say ""hi"""' in text


def test_xlsx_keeps_phone_numbers_and_formula_looking_text_exactly(admin, client, demo):
    names = [*PLAIN, *SEPARATED, "=1+1", "@cmd"]
    for n, name in enumerate(names):
        add_student(demo, name, last=f"Zz{n:02d}")
    data = download(
        client, finished(admin, export(admin, "class_roster", "xlsx", class_id=demo["demo_class_id"]))
    ).data
    rows = {
        r[1]: r[2]
        for r in openpyxl.load_workbook(io.BytesIO(data)).active.iter_rows(min_row=2, values_only=True)
    }
    for n, name in enumerate(names):
        assert rows[f"Zz{n:02d}"] == name


def test_xlsx_opens_with_the_right_rows_and_formula_as_string(admin, client, demo):
    add_student(demo, FORMULA)
    job = finished(admin, export(admin, "class_roster", "xlsx", class_id=demo["demo_class_id"]))
    data = download(client, job).data
    sheet = zipfile.ZipFile(io.BytesIO(data)).read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in sheet and "HYPERLINK" in sheet  # never a formula element
    book = openpyxl.load_workbook(io.BytesIO(data))
    ws = book.active
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0][:3] == ("Admission no.", "Last name", "First name")
    assert len(rows) - 1 == job["row_count"]
    cell = next(c for row in ws.iter_rows(min_row=2) for c in row if c.value == FORMULA)
    assert cell.data_type == "s"  # an inline string: kept exactly, never evaluated
    born = [r[4] for r in rows[1:] if r[4] is not None]
    assert born and all(hasattr(b, "year") for b in born)  # dates are real date cells


def test_report_cards_pdf_has_one_page_per_student(admin, client, demo):
    job = finished(
        admin,
        export(
            admin, "report_cards", "pdf", class_id=demo["demo_class_id"], term_id=demo["demo_current_term_id"]
        ),
    )
    pdf = download(client, job)
    assert pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type /Page(?!s)", pdf.data))
    assert pages == job["row_count"] == 30


@pytest.mark.parametrize(
    "kind,fmt,params",
    [
        ("attendance_register", "xlsx", {"month": "current"}),
        ("attendance_summary", "csv", {"from": "term", "to": "today"}),
        ("attendance_records", "xlsx", {"from": "term", "to": "today"}),
        ("gradebook", "csv", {"term_id": "current"}),
        ("gradebook", "xlsx", {"term_id": "current"}),
        ("class_roster", "pdf", {}),
        ("fee_statement", "pdf", {"student_id": "demo"}),
        ("fee_statement", "csv", {"student_id": "demo"}),
        ("fee_collection", "xlsx", {"from": "term", "to": "today"}),
        ("fee_collection", "csv", {"from": "term", "to": "today"}),
        ("audit_log", "csv", {"from": "today", "to": "today"}),
    ],
)
def test_every_kind_produces_its_file(admin, client, demo, kind, fmt, params):
    start = demo["current_term"]["start"] - timedelta(days=14)
    today = demo_today(demo)  # an export's dates are the school's local days
    values = {
        "current": date.today().strftime("%Y-%m")
        if kind == "attendance_register"
        else demo["demo_current_term_id"],
        "term": start.isoformat(),
        "today": today.isoformat(),
        "demo": demo["demo_student_id"],
    }
    params = {k: values.get(v, v) for k, v in params.items()}
    if kind not in ("fee_statement", "fee_collection", "audit_log") and "class_id" not in params:
        params["class_id"] = demo["demo_class_id"]
    admin.patch(f"/students/{demo['demo_student_id']}", json={"gender": "female"})  # an audit row for today
    job = finished(admin, export(admin, kind, fmt, **params))
    assert job["row_count"] > 0, job
    data = download(client, job).data
    if fmt == "csv":
        rows = csv_rows(download(client, job))
        assert len(rows) - 1 == job["row_count"]
    elif fmt == "xlsx":
        rows = list(
            openpyxl.load_workbook(io.BytesIO(data), read_only=True).active.iter_rows(values_only=True)
        )
        assert len(rows) - 1 == job["row_count"]
    else:
        assert data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF")


def test_fee_statement_csv_matches_the_ledger(admin, client, demo):
    statement = admin.get(f"/students/{demo['demo_student_id']}/statement").get_json()
    rows = csv_rows(
        download(
            client, finished(admin, export(admin, "fee_statement", "csv", student_id=demo["demo_student_id"]))
        )
    )
    assert rows[0] == ["Date (UTC)", "Type", "Reference", "Description", "Debit", "Credit", "Balance"]
    assert [r[6] for r in rows[1:]] == [e["balance"] for e in statement["entries"]]
    assert rows[-1][6] == statement["closing_balance"]


def test_attendance_register_is_a_class_by_day_grid(admin, client, demo):
    month = date.today().strftime("%Y-%m")
    rows = csv_rows(
        download(
            client,
            finished(
                admin,
                export(admin, "attendance_register", "csv", class_id=demo["demo_class_id"], month=month),
            ),
        )
    )
    header = rows[0]
    assert header[3].startswith("01 ") and header[-5:] == ["Present", "Late", "Absent", "Excused", "Rate %"]
    days = len(header) - 8
    for row in rows[1:]:
        marks = row[3 : 3 + days]
        assert set(marks) <= {"P", "L", "A", "E", ""}
        assert int(row[-5]) == marks.count("P") and int(row[-2]) == marks.count("E")


# --- signed links ------------------------------------------------------------------------------------


def test_download_link_is_bound_signed_and_short_lived(app, admin, client, demo):
    one = finished(admin, export(admin, "class_roster", "csv", class_id=demo["demo_class_id"]))
    two = finished(admin, export(admin, "class_roster", "xlsx", class_id=demo["demo_class_id"]))
    token = one["download_url"].split("token=")[1]
    assert_problem(client.get(f"/api/v1/exports/{one['id']}/download?token={token[:-2]}xx"), 403)
    assert_problem(client.get(f"/api/v1/exports/{two['id']}/download?token={token}"), 403)  # another job
    assert_problem(client.get(f"/api/v1/exports/{one['id']}/download"), 404)
    app.config["EXPORT_LINK_TTL"], saved = -1, app.config["EXPORT_LINK_TTL"]
    try:
        body = assert_problem(client.get(one["download_url"]), 410)
        assert "expired" in body["detail"]
    finally:
        app.config["EXPORT_LINK_TTL"] = saved
    assert download(client, one).data  # still valid within its lifetime
    downloads = db.session.scalar(
        select(func.count())
        .select_from(AuditEntry)
        .where(AuditEntry.action == "download", AuditEntry.entity_id == str(one["id"]))
    )
    assert downloads == 1


def test_expired_exports_are_removed(app, admin, client, demo):
    job = finished(admin, export(admin, "class_roster", "csv", class_id=demo["demo_class_id"]))
    row = db.session.get(Job, job["id"])
    path = services.storage.resolve(db.session.get(StoredFile, row.output_file_id).path)
    assert path.exists()
    assert services.remove_expired_exports(now=row.expires_at + timedelta(seconds=1))["exports"] >= 1
    assert not path.exists()
    again = admin.get(f"/exports/{job['id']}").get_json()
    assert again["status"] == "expired" and again["download_url"] is None
    assert_problem(client.get(job["download_url"]), 410)


# --- limits and bad requests -----------------------------------------------------------------------


def test_third_concurrent_export_is_rejected(app, admin, hillside_admin, demo):
    app.extensions["celery"].conf.task_always_eager = False  # nobody consumes: the jobs stay queued
    first = export(admin, "class_roster", "csv", class_id=demo["demo_class_id"]).get_json()
    export(admin, "class_roster", "xlsx", class_id=demo["demo_class_id"])
    assert first["status"] == "queued" and first["download_url"] is None
    body = assert_problem(
        export(admin, "class_roster", "pdf", expect=429, class_id=demo["demo_class_id"]), 429
    )
    assert "2 exports queued or running" in body["detail"]
    assert db.session.scalar(select(func.count()).select_from(Job).where(Job.job_type == "export")) == 2
    db.session.get(Job, first["id"]).status = "done"
    db.session.commit()
    export(admin, "class_roster", "pdf", class_id=demo["demo_class_id"])  # a slot is free again
    export(hillside_admin, "class_roster", "csv", class_id=demo["hillside_class_id"])  # its own budget


def test_export_over_the_row_cap_is_refused(app, admin, demo):
    app.config["EXPORT_MAX_ROWS"] = 10
    body = assert_problem(
        export(admin, "class_roster", "csv", expect=422, class_id=demo["demo_class_id"]), 422, "params"
    )
    assert "EXPORT_MAX_ROWS" in body["errors"]["params"] and "30" in body["errors"]["params"]
    assert db.session.scalar(select(func.count()).select_from(Job)) == 0


@pytest.mark.parametrize(
    "body,field",
    [
        ({"kind": "everything", "format": "csv"}, "kind"),
        ({"kind": "report_cards", "format": "csv", "params": {"class_id": 1, "term_id": 1}}, "format"),
        (
            {"kind": "class_roster", "format": "csv", "params": {"class_id": 1, "colour": "red"}},
            "params.colour",
        ),
        ({"kind": "class_roster", "format": "csv", "params": {}}, "params.class_id"),
        (
            {"kind": "attendance_register", "format": "csv", "params": {"class_id": 1, "month": "2026-13"}},
            "params.month",
        ),
        (
            {"kind": "fee_collection", "format": "csv", "params": {"from": "2026-02-01", "to": "2026-01-01"}},
            "params.to",
        ),
        (
            {"kind": "audit_log", "format": "csv", "params": {"from": "yesterday", "to": "2026-01-01"}},
            "params.from",
        ),
        (
            {"kind": "class_roster", "format": "csv", "params": {"class_id": 1}, "priority": "high"},
            "priority",
        ),
    ],
)
def test_bad_export_requests_name_the_field(admin, body, field):
    assert_problem(admin.post("/exports", json=body), 422, field)
    assert db.session.scalar(select(func.count()).select_from(Job)) == 0


def test_unknown_term_is_a_422(admin, demo):
    assert_problem(
        export(admin, "gradebook", "csv", expect=422, class_id=demo["demo_class_id"], term_id=999999),
        422,
        "params.term_id",
    )


def test_who_may_export_what(admin, teacher, accountant, guardian, student, demo):
    other = demo["other_class_id"]
    assert_problem(export(teacher, "class_roster", "csv", expect=404, class_id=other), 404)
    assert_problem(
        export(teacher, "gradebook", "csv", expect=404, class_id=other, term_id=demo["demo_current_term_id"]),
        404,
    )
    assert_problem(
        export(teacher, "fee_collection", "csv", expect=403, **{"from": "2026-01-01", "to": "2026-01-31"}),
        403,
    )
    assert_problem(
        export(accountant, "audit_log", "csv", expect=403, **{"from": "2026-01-01", "to": "2026-01-31"}), 403
    )
    assert_problem(
        export(
            accountant,
            "gradebook",
            "csv",
            expect=403,
            class_id=demo["demo_class_id"],
            term_id=demo["demo_current_term_id"],
        ),
        403,
    )
    for api in (guardian, student):
        assert_problem(export(api, "class_roster", "csv", expect=403, class_id=demo["demo_class_id"]), 403)
    export(teacher, "class_roster", "csv", class_id=demo["demo_class_id"])
    export(accountant, "class_roster", "csv", class_id=other)  # read-only rosters: any class
    export(accountant, "fee_statement", "pdf", student_id=demo["demo_student_id"])
    assert_problem(
        export(accountant, "fee_statement", "pdf", expect=404, student_id=demo["hillside_student_id"]), 404
    )


def test_teacher_summary_without_a_class_covers_only_their_classes(teacher, client, demo):
    start = (demo["current_term"]["start"]).isoformat()
    job = finished(
        teacher,
        export(teacher, "attendance_summary", "csv", **{"from": start, "to": date.today().isoformat()}),
    )
    assert "_scope_class_ids" not in job["params"]
    classes = {r[3] for r in csv_rows(download(client, job))[1:]}
    assert classes and "Grade 1A" not in classes  # other_class_id is Grade 1A, not theirs


def test_jobs_are_visible_to_their_requester_and_admins(admin, teacher, accountant, demo):
    job = export(teacher, "class_roster", "csv", class_id=demo["demo_class_id"]).get_json()
    assert admin.get(f"/exports/{job['id']}").status_code == 200
    assert_problem(accountant.get(f"/exports/{job['id']}"), 404)
    assert job["id"] not in [j["id"] for j in accountant.get("/exports").get_json()["data"]]


def test_export_list_pages_with_a_cursor(admin, demo):
    ids = [
        export(admin, "class_roster", f, class_id=demo["demo_class_id"]).get_json()["id"]
        for f in ("csv", "xlsx", "pdf")
    ]
    page = admin.get("/exports?limit=2").get_json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2] and page["next_cursor"]
    rest = admin.get(f"/exports?limit=2&cursor={page['next_cursor']}").get_json()
    assert [j["id"] for j in rest["data"]] == [ids[0]]
    assert_problem(admin.get("/exports?colour=red"), 422, "colour")


def test_export_request_is_audited(admin, demo):
    job = export(admin, "class_roster", "csv", class_id=demo["demo_class_id"]).get_json()
    entry = db.session.execute(
        select(AuditEntry).where(AuditEntry.entity_type == "export", AuditEntry.entity_id == str(job["id"]))
    ).scalar_one()
    assert entry.action == "create" and entry.changes["kind"] == [None, "class_roster"]


def test_a_task_is_not_sent_when_its_transaction_rolls_back(app, demo):
    from app.core.background import enqueue_after_commit

    job = Job(
        institution_id=demo["demo_institution_id"],
        job_type="export",
        kind="class_roster",
        format="csv",
        params={"class_id": demo["demo_class_id"]},
        status="queued",
        attempts=0,
        progress_percent=0,
        rows_done=0,
    )
    db.session.add(job)
    db.session.flush()
    enqueue_after_commit("tasks.exports.run_export", job.id)
    db.session.rollback()
    db.session.add(
        Job(
            institution_id=demo["demo_institution_id"],
            job_type="export",
            kind="class_roster",
            format="csv",
            params={"class_id": demo["demo_class_id"]},
            status="queued",
            attempts=0,
            progress_percent=0,
            rows_done=0,
        )
    )
    db.session.commit()  # a later commit does not send the rolled-back job's task
    assert db.session.scalar(select(func.count()).select_from(Job).where(Job.status != "queued")) == 0


def test_stale_queued_jobs_are_sent_again(app, admin, demo):
    app.extensions["celery"].conf.task_always_eager = False
    job = export(admin, "class_roster", "csv", class_id=demo["demo_class_id"]).get_json()
    assert services.requeue_stale_jobs() == []  # young: left alone
    app.extensions["celery"].conf.task_always_eager = True
    assert services.requeue_stale_jobs(older_than=0) == [job["id"]]
    assert admin.get(f"/exports/{job['id']}").get_json()["status"] == "done"


# --- student import ----------------------------------------------------------------------------------


def upload(api, text, dry_run=None, name="students.csv"):
    data = {"file": (io.BytesIO(text.encode() if isinstance(text, str) else text), name)}
    url = "/imports/students" + ("" if dry_run is None else f"?dry_run={dry_run}")
    return api.post(url, data=data, content_type="multipart/form-data")


def student_count(demo):
    return db.session.scalar(
        select(func.count())
        .select_from(Student)
        .where(Student.institution_id == demo["demo_institution_id"], Student.deleted_at.is_(None))
    )


def test_import_template_lists_the_columns(admin):
    resp = admin.get("/imports/students/template.csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert resp.data.decode().strip().split(",")[:3] == ["admission_number", "first_name", "last_name"]


BAD_FILE = """admission_number,first_name,last_name,date_of_birth,grade_level,status,class_id,email
NEW-001,Wanjiru,Kamau,2015-03-04,5,active,{class_id},
{existing},Changed,Name,,,,,
NEW-002,Bad,Date,04/03/2015,5,,,
NEW-003,,Nofirst,,,,,
NEW-004,Bad,Class,,,,999999,
NEW-001,Again,Duplicate,,,,,
NEW-005,Bad,Grade,,eleven,retired,,not-an-email
"""


def test_import_dry_run_reports_row_errors_and_writes_nothing(admin, demo):
    existing = db.session.get(Student, demo["demo_student_id"])
    # Counted for the demo school: other schools' committed rows (tests/worker_support.py) are not its.
    demo_audit = (
        select(func.count())
        .select_from(AuditEntry)
        .where(AuditEntry.institution_id == demo["demo_institution_id"])
    )
    before, audit_before = student_count(demo), db.session.scalar(demo_audit)
    resp = upload(
        admin,
        BAD_FILE.format(class_id=demo["demo_class_id"], existing=existing.admission_number),
        dry_run="true",
    )
    assert resp.status_code == 202 and resp.headers["Location"].startswith("/api/v1/imports/")
    job = admin.get(resp.headers["Location"]).get_json()
    assert job["status"] == "done" and job["dry_run"] is True
    result = job["result"]
    assert (result["rows"], result["created"], result["updated"], result["failed"]) == (7, 1, 1, 5)
    errors = {e["row"]: e["errors"] for e in result["errors"]}
    assert errors[4] == {"date_of_birth": "must be a date, YYYY-MM-DD"}
    assert errors[5] == {"first_name": "is required"}
    assert errors[6] == {"class_id": "no such class (999999)"}
    assert "appears more than once" in errors[7]["admission_number"]
    assert set(errors[8]) == {"grade_level", "status", "email"}
    assert (
        student_count(demo) == before
        and db.session.get(Student, existing.id).first_name == existing.first_name
    )
    audit_after = db.session.scalar(demo_audit)
    assert audit_after == audit_before + 1  # only the import request itself


def test_import_creates_and_updates_by_admission_number(admin, client, demo):
    existing = db.session.get(Student, demo["demo_student_id"])
    born, old_last, old_first = existing.date_of_birth, existing.last_name, existing.first_name
    text = (
        "admission_number,first_name,last_name,class_id,grade_level\n"
        f"IMP-1,Achieng,Otieno,{demo['demo_class_id']},7\n"
        'IMP-2,"=HYPERLINK(""x"")",Formula,,\n'
        f"{existing.admission_number},Renamed,{existing.last_name},,\n"
        "IMP-3,,Broken,,\n"
    )
    before = student_count(demo)
    job = admin.get(upload(admin, text).headers["Location"]).get_json()
    result = job["result"]
    assert job["status"] == "done" and job["dry_run"] is False
    assert (result["created"], result["updated"], result["failed"], result["enrolled"]) == (2, 1, 1, 1)
    assert result["errors"] == [
        {"row": 5, "admission_number": "IMP-3", "errors": {"first_name": "is required"}}
    ]
    assert student_count(demo) == before + 2
    new = db.session.execute(select(Student).where(Student.admission_number == "IMP-1")).scalar_one()
    assert (new.first_name, new.grade_level, new.status) == ("Achieng", 7, "active")
    assert (
        db.session.execute(
            select(Enrolment.class_id).where(Enrolment.student_id == new.id, Enrolment.end_date.is_(None))
        ).scalar()
        == demo["demo_class_id"]
    )
    formula = db.session.execute(
        select(Student.first_name).where(Student.admission_number == "IMP-2")
    ).scalar()
    assert formula == FORMULA  # stored as given; escaped only on export
    db.session.expire_all()
    changed = db.session.get(Student, existing.id)
    assert (changed.first_name, changed.last_name, changed.date_of_birth) == ("Renamed", old_last, born)
    entry = db.session.execute(
        select(AuditEntry)
        .where(
            AuditEntry.entity_type == "student",
            AuditEntry.entity_id == str(existing.id),
            AuditEntry.action == "update",
        )
        .order_by(AuditEntry.id.desc())
        .limit(1)
    ).scalar_one()
    assert entry.changes == {"first_name": [old_first, "Renamed"]} and entry.actor_id == admin.user["id"]
    again = admin.get(upload(admin, text).headers["Location"]).get_json()["result"]
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 3)  # idempotent


@pytest.mark.parametrize(
    "text,field,status",
    [
        ("first_name,last_name\nA,B\n", "file", 422),
        ("admission_number,first_name,last_name,shoe_size\nA,B,C,9\n", "file", 422),
        ("admission_number,first_name,last_name\n", "file", 422),
        (b"\xff\xfeadmission_number", "file", 422),
    ],
)
def test_bad_import_files_are_refused(admin, text, field, status):
    assert_problem(upload(admin, text), status, field)
    assert db.session.scalar(select(func.count()).select_from(Job)) == 0


def test_import_size_cap_and_flag(app, admin):
    app.config["IMPORT_MAX_BYTES"], saved = 100, app.config["IMPORT_MAX_BYTES"]
    try:
        body = assert_problem(
            upload(admin, "admission_number,first_name,last_name\n" + "A,B,C\n" * 40), 413, "file"
        )
        assert "100" in body["errors"]["file"]
    finally:
        app.config["IMPORT_MAX_BYTES"] = saved
    assert_problem(
        upload(admin, "admission_number,first_name,last_name\nA,B,C\n", dry_run="maybe"), 422, "dry_run"
    )
    assert_problem(admin.post("/imports/students", data={}, content_type="multipart/form-data"), 422, "file")


def test_only_admins_import(teacher, accountant):
    for api in (teacher, accountant):
        assert_problem(upload(api, "admission_number,first_name,last_name\nA,B,C\n"), 403)


# --- a real worker -----------------------------------------------------------------------------------


def test_export_through_a_real_worker(committed_school, worker_app, committing, broker, tmp_path):
    """API -> Redis -> a separate `celery worker` process -> job row -> signed download."""
    app2, client = worker_app
    api = committed_school["login"](client)
    with Worker(broker, app2.config["EXPORT_DIR"], tmp_path) as worker:
        resp = api.post(
            "/exports",
            json={
                "kind": "class_roster",
                "format": "csv",
                "params": {"class_id": committed_school["class_id"]},
            },
        )
        assert resp.status_code == 202 and resp.get_json()["status"] == "queued"
        job = poll(
            lambda: api.get(resp.headers["Location"]).get_json(),
            lambda j: j["status"] == "done",
            timeout=30,
            what="the worker to finish the export",
            worker=worker,
        )
        rows = csv_rows(download(client, job))
        assert len(rows) - 1 == job["row_count"] == 3
        assert "'" + FORMULA in [r[2] for r in rows]
        assert job["attempts"] == 1


def test_another_schools_jobs_are_not_found(admin, hillside_admin, demo):
    exported = export(admin, "class_roster", "csv", class_id=demo["demo_class_id"]).get_json()
    imported = upload(admin, "admission_number,first_name,last_name\nX-1,A,B\n", dry_run="true").get_json()
    assert_problem(hillside_admin.get(f"/exports/{exported['id']}"), 404)
    assert_problem(hillside_admin.get(f"/imports/{imported['id']}"), 404)
    assert_problem(admin.get(f"/imports/{exported['id']}"), 404)  # an export is not an import
    assert exported["id"] not in [j["id"] for j in hillside_admin.get("/exports").get_json()["data"]]
    assert_problem(
        export(hillside_admin, "class_roster", "csv", expect=404, class_id=demo["demo_class_id"]), 404
    )


EMBEDDED = """
import io, json
from datetime import date, timedelta
from flask_migrate import upgrade
from app import create_app
from app.seed import seed_demo
app = create_app()
with app.app_context():
    upgrade()
    ids = seed_demo("embedded-pass-1")
c = app.test_client()
h = {"Authorization": "Bearer " + c.post("/api/v1/auth/login", json={"email": "admin@demo-academy.test",
                                                                     "password": "embedded-pass-1"}).get_json()["access_token"]}
since = (date.today() - timedelta(days=200)).isoformat()
out = {"eager": app.extensions["celery"].conf.task_always_eager}
for kind, fmt, params in [("class_roster", "csv", {"class_id": ids["demo_class_id"]}),
                          ("attendance_records", "xlsx", {"from": since, "to": date.today().isoformat()}),
                          ("report_cards", "pdf", {"class_id": ids["demo_class_id"], "term_id": ids["demo_current_term_id"]})]:
    r = c.post("/api/v1/exports", json={"kind": kind, "format": fmt, "params": params}, headers=h)
    job = c.get(r.headers["Location"], headers=h).get_json()
    out[kind] = [job["status"], job["row_count"], c.get(job["download_url"]).status_code if job["download_url"] else None]
r = c.post("/api/v1/imports/students", headers=h, content_type="multipart/form-data",
           data={"file": (io.BytesIO(b"admission_number,first_name,last_name\\nE-1,Eve,Embedded\\n"), "s.csv")})
out["import"] = c.get(r.headers["Location"], headers=h).get_json()["result"]["created"]
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow  # starts a subprocess
def test_exports_and_imports_work_in_the_embedded_default(tmp_path):
    """No DATABASE_URL, no REDIS_URL (SQLite, tasks in-process): the same API produces the same files."""
    out = run_embedded(EMBEDDED, tmp_path)
    assert out["eager"] is True
    for kind in ("class_roster", "attendance_records", "report_cards"):
        status, rows, download = out[kind]
        assert status == "done" and rows > 0 and download == 200, (kind, out[kind])
    assert out["import"] == 1


TRICKY = [
    'A&B <x> "q" \'s',
    "back\\slash",
    "line\nbreak",
    "tab\tinside",
    " leading",
    "trailing ",
    "_x0041_ literal",
    "bell\x07char",
    "=1+1",
    "Zoë Łukasz 山田",
]


def test_xlsx_text_is_exact_whichever_path_writes_it(admin, client, demo):
    """class_roster's sheet rows are rendered by PostgreSQL (COPY), the register's in Python: the same
    names must read back identically, formula-looking ones too (inline strings are never formulas)."""
    for n, name in enumerate(TRICKY):
        add_student(demo, name, last=f"Zz{n:02d}")
    month = date.today().strftime("%Y-%m")
    books = [
        openpyxl.load_workbook(
            io.BytesIO(download(client, finished(admin, export(admin, kind, "xlsx", **params))).data)
        )
        for kind, params in (
            ("class_roster", {"class_id": demo["demo_class_id"]}),
            ("attendance_register", {"class_id": demo["demo_class_id"], "month": month}),
        )
    ]
    from openpyxl.utils.escape import unescape  # Excel decodes _xHHHH_ in strings; openpyxl leaves it to us

    for book in books:
        rows = {r[1]: unescape(r[2]) for r in book.active.iter_rows(min_row=2, values_only=True)}
        for n, name in enumerate(TRICKY):
            assert rows[f"Zz{n:02d}"] == name, (n, rows[f"Zz{n:02d}"])


def test_xlsx_and_csv_agree_on_amounts_and_times(admin, client, demo):
    start = (demo["current_term"]["start"] - timedelta(days=14)).isoformat()
    params = {"from": start, "to": date.today().isoformat()}
    text = csv_rows(download(client, finished(admin, export(admin, "fee_collection", "csv", **params))))[1:]
    sheet = list(
        openpyxl.load_workbook(
            io.BytesIO(
                download(client, finished(admin, export(admin, "fee_collection", "xlsx", **params))).data
            )
        ).active.iter_rows(min_row=2, values_only=True)
    )
    assert len(sheet) == len(text) > 0
    from decimal import Decimal

    for x, t in zip(sheet, text):
        assert x[0].strftime("%Y-%m-%dT%H:%M:%SZ") == t[0]  # UTC date-time cells
        assert Decimal(str(x[4])).quantize(Decimal("0.01")) == Decimal(t[4])  # amounts with two decimals
        assert x[1] == t[1]


def test_xlsx_rows_past_a_sheets_limit_continue_on_new_sheets(admin, client, demo, monkeypatch):
    from app.jobs import xlsx

    monkeypatch.setattr(xlsx, "MAX_ROWS", 11)  # 10 rows under the header per sheet instead of 1,048,575
    month = date.today().strftime("%Y-%m")
    for kind, params in (
        ("class_roster", {"class_id": demo["demo_class_id"]}),  # rows rendered by PostgreSQL
        ("attendance_register", {"class_id": demo["demo_class_id"], "month": month}),
    ):  # Python
        job = finished(admin, export(admin, kind, "xlsx", **params))
        book = openpyxl.load_workbook(io.BytesIO(download(client, job).data))
        assert len(book.worksheets) == 3, kind
        sizes = [ws.max_row - 1 for ws in book.worksheets]
        assert sizes == [10, 10, 10] and sum(sizes) == job["row_count"]
        assert {ws.cell(1, 1).value for ws in book.worksheets} == {"Admission no."}
