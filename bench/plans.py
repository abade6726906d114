"""EXPLAIN ANALYZE of the SQL behind every list and filter endpoint, on the loaded scale data.

Runs the real app in-process as the Scale School admin, captures the statements each request runs,
and prints their plans as Markdown (bench/run.py puts them in docs/BENCHMARKS.md). `--roster-sql`
prints the roster statement instead, for the psycopg2 reference app; `--replay-sql FILE` runs the
requests FILE lists and prints the statements each ran, for the reference app's /replay.
"""

import json
import sys
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import event, text

from app import create_app
from app.extensions import db

BIG_TABLES = (
    "students",
    "attendance_records",
    "enrolments",
    "guardians",
    "student_guardians",
    "users",
    "grades",
    "invoices",
    "payments",
    "audit_log",
    "teachers",
    "classes",
    "class_subjects",
)
SMALL_TABLE_ROWS = 10_000
SKIP = ("SAVEPOINT", "RELEASE", "ROLLBACK", "SELECT 1", "UPDATE users SET last_login_at")


def capture(client, token, path, method="GET", body=None):
    """(status, the literal statements the request ran), sessions and savepoints left out."""
    statements = []

    def on_exec(conn, cursor, statement, params, context, executemany):
        if not statement.lstrip().upper().startswith(SKIP) and "auth_sessions" not in statement:
            # insertmanyvalues hands over one batched statement and its dict even when executemany
            many = (
                executemany
                and isinstance(params, list | tuple)
                and isinstance(params[0], dict | list | tuple)
            )
            for one in params if many else [params]:
                statements.append(cursor.mogrify(statement, one).decode())

    engines = list(db.engines.values())  # the main engine and the reads engine (config.py binds)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", on_exec)
    try:
        resp = client.open(path, method=method, json=body, headers={"Authorization": f"Bearer {token}"})
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", on_exec)
    return resp.status_code, statements


def replay_sql(client, token, requests_file):
    """{set: [[method, path, body], ...]} -> {set: [[statement, ...], ...]}: what each request ran, for
    bench/refapps.py's /replay. Write requests run for real (and commit), as the benchmark's own would."""
    out = {}
    for name, requests in json.loads(Path(requests_file).read_text()).items():
        out[name] = []
        for method, path, body in requests:
            status, statements = capture(client, token, path, method, body)
            if status >= 400:
                raise SystemExit(f"{method} {path} answered {status}: no statements to replay")
            out[name].append(statements)
    return out


def capture_plans(
    client, token, paths, big_tables=BIG_TABLES, small_rows=SMALL_TABLE_ROWS, split_counts=False
) -> str:
    """EXPLAIN ANALYZE of every statement each GET runs, as Markdown, led by a line naming any sequential
    scan of a large table (also used by bench/oneroster_plans.py). `split_counts`: name the scans of
    `SELECT count(*)` statements (a list's total) apart from those of the statements that read a page."""
    out = []
    seq_scans = []
    count_scans = []
    for path in paths:
        status, statements = capture(client, token, path)
        out.append(f"#### `GET {path}` → {status}\n")
        for sql in statements:
            plan = "\n".join(r[0] for r in db.session.execute(text("EXPLAIN (ANALYZE, COSTS OFF) " + sql)))
            db.session.rollback()
            is_count = split_counts and sql.lstrip().lower().startswith("select count(")
            for t in big_tables:
                if f"Seq Scan on {t} " in plan + " ":
                    (count_scans if is_count else seq_scans).append((path, t))
            out.append("```\n" + plan + "\n```\n")
    sizes = dict(db.session.execute(text("SELECT relname, n_live_tup FROM pg_stat_user_tables")).all())
    big = [(p, t) for p, t in seq_scans if sizes.get(t, 0) >= small_rows]
    small = sorted(
        {
            f"{t} ({sizes.get(t, 0):,} rows)"
            for p, t in seq_scans + count_scans
            if sizes.get(t, 0) < small_rows
        }
    )
    what = "page query" if split_counts else "plan"
    summary = (
        f"No sequential scan on a table of {small_rows:,} rows or more in any {what} below."
        if not big
        else f"**Sequential scans on large tables{' (page queries)' if split_counts else ''}:** "
        + ", ".join(f"{t} ({p})" for p, t in big)
    )
    big_counts = [(p, t) for p, t in count_scans if sizes.get(t, 0) >= small_rows]
    if big_counts:
        summary += (
            "\n\n**Sequential scans on large tables (X-Total-Count, `SELECT count(*)`):** "
            + ", ".join(f"{t} ({p})" for p, t in big_counts)
        )
    if small:
        summary += (
            " The planner scans these small tables whole, which is cheaper than an index at their "
            "size: " + ", ".join(small) + "."
        )
    return f"{summary}\n\n" + "\n".join(out)


def main():
    app = create_app()
    app.config["RESPONSE_CACHE_ENABLED"] = False
    app.extensions["response_cache"].enabled = False
    client = app.test_client()
    password = app.config["DEMO_PASSWORD"]
    with app.app_context():
        token = client.post(
            "/api/v1/auth/login", json={"email": "admin@scale-school.test", "password": password}
        ).get_json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        cls = client.get("/api/v1/classes?limit=1", headers=auth).get_json()["data"][0]
        stu = client.get("/api/v1/students?limit=1", headers=auth).get_json()["data"][0]
        term = client.get("/api/v1/terms?limit=1", headers=auth).get_json()["data"][0]
        if "--replay-sql" in sys.argv:
            print(json.dumps(replay_sql(client, token, sys.argv[sys.argv.index("--replay-sql") + 1])))
            return
        if "--roster-sql" in sys.argv:
            _, sql = capture(client, token, f"/api/v1/classes/{cls['id']}/students?limit=50")
            print(next(s for s in sql if "enrolments" in s and "JOIN" in s.upper()))
            return
        day = (date.today() - timedelta(days=1)).isoformat()
        paths = [
            "/api/v1/students?limit=50",
            "/api/v1/students?limit=50&sort=last_name",
            "/api/v1/students?q=smi&limit=50",
            "/api/v1/students?status=active&grade_level=3&limit=50",
            f"/api/v1/students?class_id={cls['id']}&limit=50",
            f"/api/v1/students?admission_number={stu['admission_number']}",
            f"/api/v1/students/{stu['id']}",
            f"/api/v1/classes/{cls['id']}/students?limit=50",
            "/api/v1/classes?grade_level=3&limit=50",
            f"/api/v1/class-subjects?class_id={cls['id']}",
            f"/api/v1/enrolments?student_id={stu['id']}",
            f"/api/v1/enrolments?class_id={cls['id']}&current=true",
            "/api/v1/teachers?q=a&limit=50",
            "/api/v1/guardians?q=a&limit=50",
            "/api/v1/users?role=teacher&limit=50",
            f"/api/v1/terms?academic_year_id={term['academic_year_id']}",
            "/api/v1/audit-log?entity_type=student&limit=50",
            f"/api/v1/classes/{cls['id']}/attendance/{day}",
            f"/api/v1/students/{stu['id']}/attendance?from={term['start_date']}&to={day}",
            f"/api/v1/attendance/summary?date={day}",
            f"/api/v1/invoices?term_id={term['id']}&limit=50",
            f"/api/v1/payments?student_id={stu['id']}",
            f"/api/v1/assessments?term_id={term['id']}&limit=50",
        ]
        print(capture_plans(client, token, paths))


if __name__ == "__main__":
    main()
