"""Export benchmark on the scale data (`flask seed scale --students 40000 --attendance-days 50` gives
2,000,000 attendance rows). Prints one JSON document.

    DATABASE_URL=postgresql://... .venv/bin/python bench/export_bench.py [--out results.json]

Cases, each in a fresh child process so its peak RSS (getrusage ru_maxrss) is its own:
  copy         reference: psql's COPY (the attendance_records export query) TO STDOUT into /dev/null
  csv          our CSV export of the same rows into a file (COPY with formula neutralising in SQL)
  xlsxwriter   reference: XlsxWriter constant_memory, write() per cell, the same rows (server-side cursor)
  xlsx         our XLSX export of the same rows
  report_cards report cards (PDF, one page per student) for a class of --students-per-class students,
               graded in 8 subjects x 3 assessments (made inside a transaction that is rolled back)

XLSX cases take the first --xlsx-rows rows (default 1,000,000: one worksheet, the most XlsxWriter can
put in one) so both write exactly the same rows. Targets: csv >= 50% of copy's rows/s; xlsx >= 3x
xlsxwriter's; report cards for 1,000 students < 60 s; every case's peak RSS < 150 MB.
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGETS = {"csv_vs_copy": 0.5, "xlsx_vs_xlsxwriter": 3.0, "report_cards_seconds": 60, "peak_rss_mb": 150}


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _app():
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.pop("REDIS_URL", None)  # in-process tasks; nothing here needs Redis
    from app import create_app

    return create_app()


def _scale_school(db):
    from sqlalchemy import text

    row = db.session.execute(
        text(
            "SELECT i.id, min(a.date), max(a.date), count(*) FROM institutions i "
            "JOIN attendance_records a ON a.institution_id = i.id WHERE i.slug = 'scale-school' GROUP BY i.id"
        )
    ).first()
    if row is None:
        raise SystemExit(
            "no Scale School with attendance: run `flask --app wsgi seed scale` on DATABASE_URL first"
        )
    return row


def _source(start, end, limit=None):
    from app.jobs.exporters import attendance_records
    from app.jobs.schemas import RangeClassParams

    table = attendance_records(
        RangeClassParams.model_validate({"from": start.isoformat(), "to": end.isoformat()})
    )
    if limit:
        table.base = table.base.limit(limit)
    return table


def case(name, xlsx_rows, class_size):
    app = _app()
    from app.core.tenancy import set_current_institution
    from app.extensions import db

    out = {"case": name}
    with app.app_context():
        iid, start, end, total = _scale_school(db)
        set_current_institution(iid)
        from app.jobs.services import _read_transaction

        _read_transaction()  # the export task's own statement timeout, not the request-sized one
        out["rss_before_mb"] = round(rss_mb(), 1)
        tmp = Path(tempfile.mkdtemp(prefix="export-bench-"))
        started = time.perf_counter()
        if name == "copy":
            table = _source(start, end)
            conn = db.session.connection()
            compiled = table.copy_sql(conn.dialect)  # the very statement our CSV export runs
            raw = conn.connection.driver_connection
            with raw.cursor() as cur:
                sql = cur.mogrify(str(compiled), compiled.params).decode()
                cur.execute(f"SELECT count(*) FROM ({sql}) AS q")
                rows = cur.fetchone()[0]
            db.session.rollback()
            # The reference the issue names: psql's COPY of the same query to /dev/null (no Python per row).
            url = os.environ["DATABASE_URL"].replace("postgresql+psycopg2://", "postgresql://")
            started = time.perf_counter()
            subprocess.run(
                ["psql", url, "-q", "-c", f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true)"],
                stdout=subprocess.DEVNULL,
                check=True,
            )
        elif name == "csv":
            from app.jobs.exporters import write_csv

            rows = write_csv(_source(start, end), tmp / "out.csv")
            out["bytes"] = (tmp / "out.csv").stat().st_size
        elif name == "xlsxwriter":
            import xlsxwriter

            table = _source(start, end, xlsx_rows)
            book = xlsxwriter.Workbook(str(tmp / "plain.xlsx"), {"constant_memory": True})
            sheet = book.add_worksheet()
            for c, header in enumerate(table.headers):
                sheet.write(0, c, header)
            rows = 0
            for r, row in enumerate(table.rows(), start=1):
                for c, value in enumerate(row):
                    sheet.write(r, c, value)
                rows = r
            book.close()
            out["bytes"] = (tmp / "plain.xlsx").stat().st_size
        elif name == "xlsx":
            from app.jobs.exporters import write_xlsx

            rows = write_xlsx(_source(start, end, xlsx_rows), tmp / "out.xlsx")
            out["bytes"] = (tmp / "out.xlsx").stat().st_size
        elif name == "report_cards":
            class_id, term_id = _graded_class(db, iid, class_size)
            started = time.perf_counter()
            from app.jobs import pdf
            from app.jobs.schemas import ClassTermParams

            rows = pdf.report_cards(ClassTermParams(class_id=class_id, term_id=term_id), tmp / "cards.pdf")
            out["bytes"] = (tmp / "cards.pdf").stat().st_size
            out["pages"] = len(re.findall(rb"/Type /Page(?!s)", (tmp / "cards.pdf").read_bytes()))
            db.session.rollback()
        else:
            raise SystemExit(f"unknown case {name}")
        seconds = time.perf_counter() - started
        db.session.rollback()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    out.update(
        rows=rows,
        seconds=round(seconds, 2),
        rows_per_s=round(rows / seconds) if seconds else None,
        peak_rss_mb=round(rss_mb(), 1),
    )
    print(json.dumps(out))


def _graded_class(db, iid, size):
    """Inside the caller's transaction (rolled back): one class of `size` students with grades."""
    from sqlalchemy import text

    conn = db.session.connection()
    conn.execute(text("SET LOCAL statement_timeout = 0"))
    p = {"iid": iid, "n": size}
    class_id, year_id = conn.execute(
        text("SELECT id, academic_year_id FROM classes WHERE institution_id = :iid ORDER BY id LIMIT 1"), p
    ).one()
    term_id, term_start = conn.execute(
        text("SELECT id, start_date FROM terms WHERE institution_id = :iid ORDER BY id LIMIT 1"), p
    ).one()
    p.update(cid=class_id, tid=term_id, ts=term_start)
    # the class gets `size` students: others move in from the start of the term
    conn.execute(
        text("""
        WITH pick AS (SELECT student_id FROM enrolments WHERE institution_id = :iid AND end_date IS NULL
                      AND class_id <> :cid ORDER BY student_id LIMIT :n - (SELECT count(*) FROM enrolments
                      WHERE class_id = :cid AND end_date IS NULL))
        DELETE FROM enrolments e USING pick WHERE e.student_id = pick.student_id"""),
        p,
    )
    conn.execute(
        text("""
        INSERT INTO enrolments (institution_id, student_id, class_id, start_date, end_date, reason, created_at, updated_at)
        SELECT :iid, s.id, :cid, :ts, NULL, 'bench', now(), now() FROM students s
        WHERE s.institution_id = :iid AND NOT EXISTS (SELECT 1 FROM enrolments e WHERE e.student_id = s.id)"""),
        p,
    )
    conn.execute(
        text("""
        INSERT INTO class_subjects (institution_id, class_id, subject_id, teacher_id, created_at, updated_at)
        SELECT :iid, :cid, s.id, NULL, now(), now() FROM subjects s WHERE s.institution_id = :iid
        ON CONFLICT DO NOTHING"""),
        p,
    )
    conn.execute(
        text("""
        INSERT INTO assessment_types (institution_id, name, weight, created_at, updated_at)
        VALUES (:iid, 'Bench homework', 20, now(), now()), (:iid, 'Bench test', 30, now(), now()),
               (:iid, 'Bench exam', 50, now(), now())"""),
        p,
    )
    conn.execute(
        text("""
        INSERT INTO assessments (institution_id, class_subject_id, term_id, assessment_type_id, title, max_score,
                                 date, created_at, updated_at)
        SELECT :iid, cs.id, :tid, t.id, t.name, 100, :ts, now(), now()
        FROM class_subjects cs CROSS JOIN assessment_types t
        WHERE cs.class_id = :cid AND t.institution_id = :iid AND t.name LIKE 'Bench %'"""),
        p,
    )
    conn.execute(
        text("""
        INSERT INTO grades (institution_id, assessment_id, student_id, score, comment, graded_by_id, created_at, updated_at)
        SELECT :iid, a.id, e.student_id, 40 + mod(abs(hashint8(e.student_id * 1000 + a.id)), 60), NULL, NULL, now(), now()
        FROM assessments a JOIN class_subjects cs ON cs.id = a.class_subject_id
        JOIN enrolments e ON e.class_id = cs.class_id AND e.end_date IS NULL
        WHERE cs.class_id = :cid AND a.term_id = :tid"""),
        p,
    )
    conn.execute(text("ANALYZE enrolments, grades, assessments"))
    return class_id, term_id


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case")
    parser.add_argument("--cases", default="copy,csv,xlsxwriter,xlsx,report_cards")
    parser.add_argument("--xlsx-rows", type=int, default=1_000_000)
    parser.add_argument("--students-per-class", type=int, default=1000)
    parser.add_argument("--out")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("set DATABASE_URL to the PostgreSQL database holding the scale data")
    if args.case:
        return case(args.case, args.xlsx_rows, args.students_per_class)
    results = {}
    for name in args.cases.split(","):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--case",
                name,
                "--xlsx-rows",
                str(args.xlsx_rows),
                "--students-per-class",
                str(args.students_per_class),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith('{"case"')), None)
        if proc.returncode or line is None:
            raise SystemExit(f"case {name} failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(line)
        print(f"{name}: {results[name]}", file=sys.stderr)
    ratios, checks = {}, {}
    if {"copy", "csv"} <= results.keys():
        ratios["csv_vs_copy"] = round(results["csv"]["rows_per_s"] / results["copy"]["rows_per_s"], 2)
        checks["csv >= 50% of COPY"] = ratios["csv_vs_copy"] >= TARGETS["csv_vs_copy"]
    if {"xlsx", "xlsxwriter"} <= results.keys():
        ratios["xlsx_vs_xlsxwriter"] = round(
            results["xlsx"]["rows_per_s"] / results["xlsxwriter"]["rows_per_s"], 2
        )
        checks["xlsx >= 3x XlsxWriter constant_memory"] = (
            ratios["xlsx_vs_xlsxwriter"] >= TARGETS["xlsx_vs_xlsxwriter"]
        )
    if "report_cards" in results:
        checks["report cards < 60 s"] = results["report_cards"]["seconds"] < TARGETS["report_cards_seconds"]
    checks["peak RSS < 150 MB"] = all(r["peak_rss_mb"] < TARGETS["peak_rss_mb"] for r in results.values())
    report = {
        "command": " ".join(["bench/export_bench.py", *sys.argv[1:]]),
        "cases": results,
        "ratios": ratios,
        "targets": TARGETS,
        "checks": checks,
        "passed": all(checks.values()),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
