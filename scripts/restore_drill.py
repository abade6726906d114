#!/usr/bin/env python3
"""Backups that are known to restore: `make restore-drill` (docs/DEPLOY.md, "Backups").

    restore_drill.py                      dump DATABASE_URL now, restore it into a scratch database,
                                          compare every table's row count, drop the scratch database
    restore_drill.py --backup FILE        only the dump: FILE (pg_dump custom format) and FILE.counts.json,
                                          the row counts of the same snapshot (the nightly backup)
    restore_drill.py --dump FILE          the drill for a dump taken earlier: restore FILE and compare with
                                          FILE.counts.json (written by --backup), or, without one, with
                                          DATABASE_URL as it is now (exact only if nothing was written since)

The counts and the dump come from ONE snapshot: a REPEATABLE READ transaction exports its snapshot
(pg_export_snapshot) and pg_dump reads through it (`--snapshot`), so a database in use still compares
exactly. The scratch database (`<name>_drill_<pid>`, on the same server; the role needs CREATEDB) is
always dropped, unless --keep. Exit 0: every table restored with its rows; 1: a mismatch or a failed
step, said loudly on stderr. pg_dump/pg_restore come from PG_BINDIR, PATH, or /usr/lib/postgresql/*/bin
(newest), and must be at least the server's version.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import make_url

COUNTS_SUFFIX = ".counts.json"


class DrillFailed(Exception):
    pass


def say(msg):
    print(f"restore-drill: {msg}", file=sys.stderr, flush=True)


def libpq_url(url, database=None):
    """postgresql+psycopg2://... (SQLAlchemy's spelling, also accepted in DATABASE_URL) -> postgresql://..."""
    u = make_url(url)
    if not u.drivername.startswith("postgres"):
        raise DrillFailed(f"DATABASE_URL must be a PostgreSQL database, not {u.drivername}")
    u = u.set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def tool(name):
    bindir = os.environ.get("PG_BINDIR")
    if bindir and os.access(os.path.join(bindir, name), os.X_OK):
        return os.path.join(bindir, name)
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    raise DrillFailed(
        f"{name} not found (PG_BINDIR, PATH, /usr/lib/postgresql/*/bin): apt-get install postgresql-client"
    )


def run(cmd, url):
    """Run a PostgreSQL client tool on `url`, its password in PGPASSWORD (not on the command line, where
    `ps` would show it)."""
    u = make_url(url)
    env = dict(os.environ)
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    dbname = u.set(password=None).render_as_string(hide_password=False)
    proc = subprocess.run([*cmd, f"--dbname={dbname}"], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise DrillFailed(f"{Path(cmd[0]).name} failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return proc


def tables(cur):
    cur.execute(
        "SELECT schemaname, tablename FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND schemaname NOT LIKE 'pg_temp%' "
        "ORDER BY 1, 2"
    )
    return cur.fetchall()


def row_counts(cur):
    """{"schema.table": exact row count} of every user table, in the cursor's transaction."""
    counts = {}
    for schema, table in tables(cur):
        cur.execute(
            sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        )
        counts[f"{schema}.{table}"] = cur.fetchone()[0]
    return counts


def dump_with_counts(url, path):
    """pg_dump (custom format) to `path` and the row counts, both of one snapshot."""
    conn = psycopg2.connect(url)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            cur.execute("SELECT pg_export_snapshot()")
            snapshot = cur.fetchone()[0]
            counts = row_counts(cur)
            # the exporting transaction stays open until pg_dump has imported its snapshot and finished
            run([tool("pg_dump"), "--format=custom", f"--snapshot={snapshot}", f"--file={path}"], url)
        conn.rollback()
    finally:
        conn.close()
    Path(str(path) + COUNTS_SUFFIX).write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n")
    return counts


def counts_of(url):
    conn = psycopg2.connect(url)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            return row_counts(cur)
    finally:
        conn.close()


def admin(url, statement):
    conn = psycopg2.connect(url)
    conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def compare(expected, restored):
    """Lines naming each table whose count differs, or that is missing on one side."""
    problems = []
    for name in sorted(set(expected) | set(restored)):
        if name not in restored:
            problems.append(
                f"{name}: missing from the restored database ({expected[name]} rows in the source)"
            )
        elif name not in expected:
            problems.append(f"{name}: in the restored database only ({restored[name]} rows)")
        elif expected[name] != restored[name]:
            problems.append(f"{name}: {expected[name]} rows in the source, {restored[name]} restored")
    return problems


def drill(url, dump=None, keep=False):
    source = libpq_url(url)
    source_name = make_url(source).database
    scratch = f"{source_name}_drill_{os.getpid()}"[:63]
    scratch_url = libpq_url(url, scratch)
    with tempfile.TemporaryDirectory(prefix="restore-drill-") as tmp:
        if dump is None:
            dump = Path(tmp) / f"{source_name}.dump"
            say(f"dumping {source_name} (one snapshot for the dump and the counts)")
            expected = dump_with_counts(source, dump)
        else:
            manifest = Path(str(dump) + COUNTS_SUFFIX)
            if manifest.exists():
                say(f"restoring {dump}; comparing with the counts taken with it ({manifest.name})")
                expected = json.loads(manifest.read_text())
            else:
                say(f"restoring {dump}; no {manifest.name}: comparing with {source_name} as it is now")
                expected = counts_of(source)
        admin(source, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
        try:
            run(
                [tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", str(dump)],
                scratch_url,
            )
            restored = counts_of(scratch_url)
        finally:
            if keep:
                say(f"kept the scratch database {scratch}")
            else:
                admin(
                    source, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch))
                )
    problems = compare(expected, restored)
    if not expected:
        problems.append("the source has no tables: nothing was proven")
    return expected, restored, problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL"), help="default: DATABASE_URL"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--dump", type=Path, help="restore this pg_dump file (custom format) instead of dumping now"
    )
    mode.add_argument("--backup", type=Path, help="only write a dump and its counts (FILE, FILE.counts.json)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database to look at")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("set DATABASE_URL (postgresql://user:password@host/db) or pass --database-url")
    try:
        if args.backup:
            counts = dump_with_counts(libpq_url(args.database_url), args.backup)
            say(
                f"wrote {args.backup} and {args.backup}{COUNTS_SUFFIX}: {len(counts)} tables, {sum(counts.values())} rows"
            )
            return 0
        if args.dump is not None and not args.dump.is_file():
            raise DrillFailed(f"{args.dump}: no such file")
        expected, restored, problems = drill(args.database_url, args.dump, args.keep)
    except (DrillFailed, psycopg2.Error) as exc:
        say(f"FAILED: {exc}")
        return 1
    if problems:
        say("FAILED: the restored database does not match:")
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    say(f"OK: {len(restored)} tables, {sum(restored.values())} rows restored and counted, all equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
