"""Year-end rollover of the scale school (`flask seed scale`, as bench/run.py load() makes it: 10,000+
students). Prints one JSON document: the preview's seconds and the apply's seconds, and what it did.

    DATABASE_URL=postgresql://... .venv/bin/python bench/rollover_bench.py [--commit] [--out results.json]

The apply is the job's own work (app/rollover/services.py apply), run in one transaction like the job;
the transaction is rolled back afterwards unless --commit, so the scale data can be rolled over again.
Each student of the scale school gets an unpaid invoice first (--owing, default all of them), so the
carried balances are part of what is timed. Target: under 60 s for 10,000 students (issue 12).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_SECONDS = 60


def _app():
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.pop("REDIS_URL", None)  # in-process tasks and cache; the rollover needs no Redis
    from app import create_app

    return create_app()


def _owing(db, iid, year_id, share):
    """An unpaid invoice (one fee line) in the year's first term for `share` of the enrolled students."""
    from sqlalchemy import text

    term = db.session.execute(
        text("SELECT id FROM terms WHERE academic_year_id = :y ORDER BY start_date LIMIT 1"), {"y": year_id}
    ).scalar()
    cat = db.session.execute(
        text(
            "INSERT INTO fee_categories (institution_id, term_id, name, amount_minor, carried_balance, "
            "created_at, updated_at) VALUES (:i, :t, 'Bench tuition', 1000000, false, now(), now()) RETURNING id"
        ),
        {"i": iid, "t": term},
    ).scalar()
    db.session.execute(
        text(
            "INSERT INTO invoices (institution_id, student_id, term_id, number, status, total_minor, paid_minor, "
            "created_at, updated_at) "
            "SELECT :i, e.student_id, :t, 'BENCH-' || e.student_id, 'partially_paid', 1000000, 250000, now(), now() "
            "FROM enrolments e JOIN classes c ON c.id = e.class_id "
            "WHERE c.academic_year_id = :y AND e.end_date IS NULL AND e.student_id % 100 < :pct "
            "ON CONFLICT DO NOTHING"
        ),
        {"i": iid, "t": term, "y": year_id, "pct": int(share * 100)},
    )
    db.session.execute(
        text(
            "INSERT INTO invoice_lines (institution_id, invoice_id, fee_category_id, description, amount_minor) "
            "SELECT :i, id, :c, 'Bench tuition', 1000000 FROM invoices WHERE term_id = :t AND number LIKE 'BENCH-%'"
        ),
        {"i": iid, "c": cat, "t": term},
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", action="store_true", help="keep the rollover (default: roll back)")
    parser.add_argument("--owing", type=float, default=1.0, help="share of students with an unpaid invoice")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)

    app = _app()
    from sqlalchemy import text

    from app.core.models import utcnow
    from app.core.tenancy import set_current_institution
    from app.extensions import db
    from app.rollover import services
    from app.rollover.models import Rollover

    with app.app_context():
        row = db.session.execute(
            text(
                "SELECT i.id, y.id FROM institutions i JOIN academic_years y ON y.institution_id = i.id "
                "WHERE i.slug = 'scale-school' ORDER BY y.start_date DESC LIMIT 1"
            )
        ).first()
        if row is None:
            raise SystemExit("no Scale School: run `flask --app wsgi seed scale` on DATABASE_URL first")
        iid, year_id = row
        set_current_institution(iid)
        if args.owing > 0:
            _owing(db, iid, year_id, args.owing)
        source = services.year_or_404(year_id)
        body = {"new_year": {"name": f"{source.name} (rolled over)"[:40]}}

        t0 = time.perf_counter()
        preview = services.preview(services.make_plan(source, body))
        preview_s = time.perf_counter() - t0

        now = utcnow()
        ro = Rollover(
            source_year_id=year_id,
            status="queued",
            request=services._plain(body),
            created_at=now,
            updated_at=now,
        )
        db.session.add(ro)
        db.session.flush()
        t0 = time.perf_counter()
        summary = services.apply(ro)
        db.session.flush()
        apply_s = time.perf_counter() - t0
        if args.commit:
            db.session.commit()
        else:
            db.session.rollback()

    result = {
        "students": preview["students"],
        "preview_seconds": round(preview_s, 2),
        "apply_seconds": round(apply_s, 2),
        "target_seconds": TARGET_SECONDS,
        "ok": apply_s < TARGET_SECONDS,
        "committed": args.commit,
        "summary": {k: v for k, v in summary.items() if k not in ("source_year", "new_year")},
    }
    text_out = json.dumps(result, indent=2)
    print(text_out)
    if args.out:
        Path(args.out).write_text(text_out + "\n")
    print(f"rollover of {result['students']:,} students: {apply_s:.2f} s", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
