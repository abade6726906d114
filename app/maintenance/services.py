"""Services behind the maintenance beat jobs: index maintenance (PostgreSQL) and cache warming (each
school in turn through app.core.warming). The expired-export clean-up is app/jobs/services.py's.

Index maintenance
-----------------
* ANALYZE every table of the schema whose `n_mod_since_analyze` (rows inserted, updated or deleted
  since its last analyse, from pg_stat_user_tables) exceeds MAINTENANCE_ANALYZE_FRACTION of its live
  rows (and a floor of `analyze_min_rows`, so tiny tables are left to autovacuum): the planner's row
  estimates stay right after bulk loads, imports and roll-calls between autovacuum's own runs.
* REINDEX INDEX CONCURRENTLY only B-tree indexes MEASURED as bloated: estimated wasted space above
  MAINTENANCE_BLOAT_RATIO of the index AND above MAINTENANCE_BLOAT_MIN_BYTES (default 30% and 10 MB),
  the most wasteful first, at most MAINTENANCE_MAX_REINDEX per run. Measurement:
    - with the pgstattuple extension installed: `pgstatindex()` reads the index and reports its leaf
      density; expected pages = leaf pages x density / fillfactor + internal pages + the meta page;
    - without it: the well-known statistical B-tree estimate (the method of ioguix's
      pgsql-bloat-estimation, rewritten here): from pg_stats, each index tuple's average width
      (sum of its columns' avg_width weighted by non-null fraction; expression columns use the stats
      PostgreSQL keeps under the index's name) plus the tuple header, MAXALIGN padding and a 4-byte
      line pointer gives tuples per page at the index's fillfactor, hence the pages the index needs
      for pg_class.reltuples; anything above that in pg_class.relpages is bloat. Indexes without
      statistics, or on `name` columns (no usable avg_width), are reported and left alone.
  CONCURRENTLY cannot run inside a transaction block, so everything runs on one connection in
  AUTOCOMMIT, with the app's 30 s statement timeout lifted for it (a cancelled REINDEX CONCURRENTLY
  would leave an invalid `_ccnew` index behind; one left by a failure is dropped again) and a short
  lock_timeout so maintenance never queues behind, and then blocks, normal traffic.
On SQLite (the embedded default) it does nothing.
"""

import logging
import time

from flask import current_app
from sqlalchemy import select, text

from app.core.warming import warm
from app.extensions import db
from app.institutions.models import Institution

log = logging.getLogger("schoolhouse.maintenance")

ANALYZE_CANDIDATES = text("""
    SELECT relname, n_live_tup, n_mod_since_analyze, last_analyze, last_autoanalyze
    FROM pg_stat_user_tables
    WHERE schemaname = current_schema()
      AND n_mod_since_analyze > GREATEST(:min_rows, :fraction * n_live_tup)
    ORDER BY n_mod_since_analyze DESC
""")

# Every B-tree index of the schema: size, validity and what we need for either measurement.
INDEXES = text("""
    SELECT ci.oid AS index_oid, ct.relname AS table_name, ci.relname AS index_name, i.indisvalid AS valid,
           ci.relpages, ci.reltuples, pg_relation_size(ci.oid) AS index_bytes,
           COALESCE(substring(array_to_string(ci.reloptions, ' ') FROM 'fillfactor=([0-9]+)')::int, 90) AS fillfactor
    FROM pg_index i
    JOIN pg_class ci ON ci.oid = i.indexrelid
    JOIN pg_class ct ON ct.oid = i.indrelid
    JOIN pg_namespace ns ON ns.oid = ci.relnamespace
    JOIN pg_am am ON am.oid = ci.relam
    WHERE am.amname = 'btree' AND ns.nspname = current_schema() AND ct.relkind = 'r'
    ORDER BY ct.relname, ci.relname
""")

# Statistical estimate of the pages each B-tree index needs (see the module docstring).
BTREE_EXPECTED_PAGES = text("""
    WITH idx AS (
        SELECT ci.oid AS index_oid, ns.nspname AS schema_name, ct.relname AS table_name,
               ci.relname AS index_name, ci.reltuples,
               COALESCE(substring(array_to_string(ci.reloptions, ' ') FROM 'fillfactor=([0-9]+)')::int, 90) AS fillfactor,
               current_setting('block_size')::numeric AS bs
        FROM pg_index i
        JOIN pg_class ci ON ci.oid = i.indexrelid
        JOIN pg_class ct ON ct.oid = i.indrelid
        JOIN pg_namespace ns ON ns.oid = ci.relnamespace
        JOIN pg_am am ON am.oid = ci.relam
        WHERE am.amname = 'btree' AND ns.nspname = current_schema() AND ct.relkind = 'r' AND ci.relpages > 0
    ),
    cols AS (  -- one row per index column with the statistics of what it stores
        SELECT idx.index_oid, s.null_frac, s.avg_width,
               a.atttypid = 'pg_catalog.name'::regtype AS is_name
        FROM idx
        JOIN pg_attribute a ON a.attrelid = idx.index_oid AND a.attnum > 0
        LEFT JOIN pg_stats s ON s.schemaname = idx.schema_name
             AND ((s.tablename = idx.table_name AND s.attname = pg_get_indexdef(idx.index_oid, a.attnum, true))
               OR (s.tablename = idx.index_name AND s.attname = a.attname))
    ),
    widths AS (
        SELECT index_oid,
               bool_or(avg_width IS NULL) OR bool_or(is_name) AS unreliable,
               max(COALESCE(null_frac, 0)) > 0 AS has_nulls,
               sum((1 - COALESCE(null_frac, 0)) * COALESCE(avg_width, 1024)) AS data_width
        FROM cols GROUP BY index_oid
    ),
    tuples AS (
        -- IndexTupleData is 8 bytes (+ a 4-byte null bitmap when a column can be NULL), MAXALIGNed
        -- (8 on 64-bit builds); the data is MAXALIGNed too; each tuple also takes a 4-byte line pointer.
        SELECT idx.*, w.unreliable OR idx.reltuples < 0 AS unreliable,  -- reltuples -1: never analysed
               ceil((8 + CASE WHEN w.has_nulls THEN 4 ELSE 0 END) / 8.0) * 8 + ceil(w.data_width / 8.0) * 8 AS tuple_bytes
        FROM idx JOIN widths w USING (index_oid)
    )
    SELECT index_oid, unreliable,
           -- usable page = block - page header (24) - B-tree special space (16), filled to fillfactor; + meta page
           1 + ceil(reltuples / GREATEST(1, floor((bs - 24 - 16) * fillfactor / (100 * (4 + tuple_bytes))))) AS expected_pages,
           bs AS block_size
    FROM tuples
""")

LEFTOVERS = text("""
    SELECT ci.relname
    FROM pg_index i
    JOIN pg_class ci ON ci.oid = i.indexrelid
    JOIN pg_class ct ON ct.oid = i.indrelid
    JOIN pg_namespace ns ON ns.oid = ct.relnamespace
    WHERE ns.nspname = current_schema() AND NOT i.indisvalid AND ci.relname ~ '_ccnew[0-9]*$'
      AND (CAST(:table AS text) IS NULL OR ct.relname = :table)
      AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.relid = ct.oid)
""")

PGSTATINDEX = text("""
    SELECT index_size, internal_pages, leaf_pages, empty_pages, deleted_pages, avg_leaf_density
    FROM pgstatindex(CAST(:oid AS regclass))
""")


def _cfg():
    return current_app.config


def reindex_decision(
    *, index_name, index_bytes, expected_bytes, ratio_threshold, min_bytes, valid=True, unreliable=False
):
    """Whether to REINDEX an index from its measured size and the size it should have.
    Returns {"index", "reindex": bool, "reason", "bloat_bytes", "bloat_ratio"}."""
    bloat_bytes = max(0, int(index_bytes) - int(expected_bytes))
    ratio = (bloat_bytes / index_bytes) if index_bytes else 0.0
    out = {
        "index": index_name,
        "index_bytes": int(index_bytes),
        "bloat_bytes": bloat_bytes,
        "bloat_ratio": round(ratio, 4),
        "reindex": False,
    }
    if not valid:
        out["reason"] = "invalid index (an interrupted concurrent build?): left for an operator"
    elif unreliable:
        out["reason"] = "no usable statistics to estimate bloat"
    elif ratio <= ratio_threshold:
        out["reason"] = f"bloat {ratio:.1%} is not above {ratio_threshold:.0%}"
    elif bloat_bytes <= min_bytes:
        out["reason"] = f"bloat {bloat_bytes} bytes is not above {min_bytes} bytes"
    else:
        out["reindex"] = True
        out["reason"] = (
            f"bloat {ratio:.1%} ({bloat_bytes} of {int(index_bytes)} bytes) is above "
            f"{ratio_threshold:.0%} and {min_bytes} bytes"
        )
    return out


def plan_reindex(decisions, max_reindex):
    """The indexes to rebuild this run: those decided for, most wasted bytes first, at most max_reindex."""
    chosen = sorted((d for d in decisions if d["reindex"]), key=lambda d: d["bloat_bytes"], reverse=True)
    return chosen[:max_reindex]


def _has_pgstattuple(conn):
    return bool(conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'pgstattuple'")).scalar())


def measure_indexes(conn, *, min_bytes, only_tables=None):
    """[(index row, expected_bytes, unreliable)] for every B-tree index of the schema, and the method."""
    indexes = [
        ix
        for ix in conn.execute(INDEXES).mappings().all()
        if only_tables is None or ix["table_name"] in only_tables
    ]
    block = int(conn.execute(text("SELECT current_setting('block_size')::int")).scalar())
    out = []
    if _has_pgstattuple(conn):
        for ix in indexes:
            if ix["index_bytes"] <= min_bytes or not ix["valid"]:
                # cannot be bloated by more than min_bytes (or is invalid): do not read it
                out.append((ix, ix["index_bytes"], False))
                continue
            s = conn.execute(PGSTATINDEX, {"oid": ix["index_oid"]}).mappings().one()
            useful_leaf = s["leaf_pages"] * float(s["avg_leaf_density"] or 0) / ix["fillfactor"]
            expected = (useful_leaf + s["internal_pages"] + 1) * block
            out.append((ix, expected, False))
        return out, "pgstatindex"
    estimates = {r["index_oid"]: r for r in conn.execute(BTREE_EXPECTED_PAGES).mappings().all()}
    for ix in indexes:
        est = estimates.get(ix["index_oid"])
        if est is None:  # relpages = 0: never analysed or empty
            out.append((ix, ix["index_bytes"], ix["index_bytes"] > 0))
            continue
        out.append((ix, int(est["expected_pages"]) * int(est["block_size"]), bool(est["unreliable"])))
    return out, "estimate"


def run_index_maintenance(
    *,
    analyze_fraction=None,
    analyze_min_rows=50,
    bloat_ratio=None,
    bloat_min_bytes=None,
    max_reindex=None,
    dry_run=False,
    only_tables=None,
):
    """ANALYZE what changed a lot, REINDEX CONCURRENTLY what is bloated; log each action and why and
    return a report. `dry_run` measures and decides without changing anything; `only_tables` limits
    both steps to those tables (an operator's targeted run)."""
    cfg = _cfg()
    if db.engine.dialect.name != "postgresql":
        log.info("index maintenance skipped: %s is not PostgreSQL", db.engine.dialect.name)
        return {"skipped": f"{db.engine.dialect.name} database: nothing to maintain"}
    analyze_fraction = cfg["MAINTENANCE_ANALYZE_FRACTION"] if analyze_fraction is None else analyze_fraction
    bloat_ratio = cfg["MAINTENANCE_BLOAT_RATIO"] if bloat_ratio is None else bloat_ratio
    bloat_min_bytes = cfg["MAINTENANCE_BLOAT_MIN_BYTES"] if bloat_min_bytes is None else bloat_min_bytes
    max_reindex = cfg["MAINTENANCE_MAX_REINDEX"] if max_reindex is None else max_reindex
    report = {
        "dry_run": dry_run,
        "analyzed": [],
        "reindexed": [],
        "reindex_failed": [],
        "invalid_indexes": [],
        "thresholds": {
            "analyze_fraction": analyze_fraction,
            "analyze_min_rows": analyze_min_rows,
            "bloat_ratio": bloat_ratio,
            "bloat_min_bytes": bloat_min_bytes,
            "max_reindex": max_reindex,
        },
    }
    started = time.monotonic()
    with db.engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        quote = conn.dialect.identifier_preparer.quote
        conn.exec_driver_sql(f"SET statement_timeout = {int(cfg['MAINTENANCE_STATEMENT_TIMEOUT_MS'])}")
        conn.exec_driver_sql("SET lock_timeout = '10s'")
        try:
            schema = conn.execute(text("SELECT current_schema()")).scalar()
            report["schema"] = schema
            if not dry_run:
                report["dropped_leftovers"] = _drop_leftovers(conn, quote, schema)

            # -- ANALYZE ------------------------------------------------------------------------
            for t in (
                conn.execute(ANALYZE_CANDIDATES, {"fraction": analyze_fraction, "min_rows": analyze_min_rows})
                .mappings()
                .all()
            ):
                if only_tables is not None and t["relname"] not in only_tables:
                    continue
                why = (
                    f"{t['n_mod_since_analyze']} rows changed since the last analyse, "
                    f"{t['n_live_tup']} live rows (threshold {analyze_fraction:.0%})"
                )
                entry = {
                    "table": t["relname"],
                    "n_mod_since_analyze": int(t["n_mod_since_analyze"]),
                    "n_live_tup": int(t["n_live_tup"]),
                    "reason": why,
                }
                if not dry_run:
                    try:
                        conn.exec_driver_sql(f"ANALYZE {quote(schema)}.{quote(t['relname'])}")
                    except Exception as exc:  # e.g. lock_timeout behind a long DDL: next run
                        entry["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                        log.warning("ANALYZE %s failed: %s", t["relname"], entry["error"])
                        report["analyzed"].append(entry)
                        continue
                log.info("%sANALYZE %s: %s", "(dry run) " if dry_run else "", t["relname"], why)
                report["analyzed"].append(entry)

            # -- REINDEX CONCURRENTLY what is bloated ---------------------------------------------
            measured, method = measure_indexes(conn, min_bytes=bloat_min_bytes, only_tables=only_tables)
            report["bloat_method"] = method
            decisions = []
            for ix, expected, unreliable in measured:
                if only_tables is not None and ix["table_name"] not in only_tables:
                    continue
                d = reindex_decision(
                    index_name=ix["index_name"],
                    index_bytes=ix["index_bytes"],
                    expected_bytes=expected,
                    ratio_threshold=bloat_ratio,
                    min_bytes=bloat_min_bytes,
                    valid=ix["valid"],
                    unreliable=unreliable,
                )
                d["table"] = ix["table_name"]
                decisions.append(d)
                if not ix["valid"]:
                    report["invalid_indexes"].append(ix["index_name"])
            report["indexes_measured"] = len(decisions)
            # the most bloated ones, chosen or not, with the reason: what an operator wants to see
            report["most_bloated"] = sorted(decisions, key=lambda d: d["bloat_bytes"], reverse=True)[:5]
            for d in plan_reindex(decisions, max_reindex):
                name = d["index"]
                log.info(
                    "%sREINDEX INDEX CONCURRENTLY %s: %s", "(dry run) " if dry_run else "", name, d["reason"]
                )
                if dry_run:
                    report["reindexed"].append({**d, "size_after": None})
                    continue
                qualified = f"{quote(schema)}.{quote(name)}"
                try:
                    conn.exec_driver_sql(f"REINDEX INDEX CONCURRENTLY {qualified}")
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    log.error("REINDEX CONCURRENTLY %s failed: %s", name, error)
                    report["reindex_failed"].append(
                        {**d, "error": error, "dropped": _drop_leftovers(conn, quote, schema, d["table"])}
                    )
                    continue
                after = conn.execute(
                    text("SELECT pg_relation_size(CAST(:q AS regclass))"), {"q": qualified}
                ).scalar()
                report["reindexed"].append({**d, "size_after": int(after)})
                log.info("REINDEX %s done: %s -> %s bytes", name, d["index_bytes"], after)
        finally:
            conn.exec_driver_sql("RESET lock_timeout")
            conn.exec_driver_sql("RESET statement_timeout")
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def _drop_leftovers(conn, quote, schema, table=None):
    """A REINDEX CONCURRENTLY that failed or was killed leaves an invalid `<index>_ccnew` copy that
    every write still maintains: drop such copies (the original index is intact), unless an index
    build is running on that table right now (then the copy is someone's work in progress)."""
    names = conn.execute(LEFTOVERS, {"table": table}).scalars().all()
    dropped = []
    for name in names:
        try:
            conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {quote(schema)}.{quote(name)}")
        except Exception as exc:
            log.error("could not drop leftover index %s: %s", name, exc)
        else:
            log.warning("dropped %s, an invalid leftover of an interrupted REINDEX CONCURRENTLY", name)
            dropped.append(name)
    return dropped


# --------------------------------------------------------------------------------------------------
# Cache warming
# --------------------------------------------------------------------------------------------------


def _institution_ids():
    return db.session.execute(select(Institution.id).order_by(Institution.id)).scalars().all()


def warm_caches(institution_ids=None):
    """Fill each institution's hot cached reads (app.core.warming.warm); one school's failure does not
    stop the others. Returns {"warmed": [ids], "errors": {id: message}}."""
    ids = list(institution_ids) if institution_ids is not None else _institution_ids()
    report = {"warmed": [], "errors": {}}
    for iid in ids:
        try:
            warm(iid)
        except Exception as exc:  # one school's failure must not stop the others
            log.exception("cache warming failed for institution %s", iid)
            report["errors"][str(iid)] = f"{type(exc).__name__}: {exc}"
        else:
            report["warmed"].append(iid)
    log.info(
        "cache warming: %d institution(s) warmed, %d failed", len(report["warmed"]), len(report["errors"])
    )
    return report
