"""What the database is doing: sizes, index use, connections, cache hit ratio (PostgreSQL)."""

from sqlalchemy import text

from app.extensions import db

QUERIES = {
    "largest_tables": """
        SELECT relname AS table, n_live_tup AS rows,
               pg_total_relation_size(relid) AS total_bytes, pg_indexes_size(relid) AS index_bytes
        FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC LIMIT 10""",
    "most_used_indexes": """
        SELECT relname AS table, indexrelname AS index, idx_scan AS scans,
               pg_relation_size(indexrelid) AS bytes
        FROM pg_stat_user_indexes ORDER BY idx_scan DESC LIMIT 10""",
    "least_used_indexes": """
        SELECT relname AS table, indexrelname AS index, idx_scan AS scans,
               pg_relation_size(indexrelid) AS bytes
        FROM pg_stat_user_indexes ORDER BY idx_scan ASC, pg_relation_size(indexrelid) DESC LIMIT 10""",
    "connections": """
        SELECT coalesce(state, 'background') AS state, count(*) AS count
        FROM pg_stat_activity WHERE datname = current_database() GROUP BY 1 ORDER BY 2 DESC""",
}


def database_report():
    conn = db.session.connection()
    if conn.dialect.name != "postgresql":
        return {"dialect": conn.dialect.name, "note": "detailed statistics need PostgreSQL"}
    out = {"dialect": "postgresql", "server_version": conn.execute(text("SHOW server_version")).scalar()}
    for name, sql in QUERIES.items():
        out[name] = [dict(r._mapping) for r in conn.execute(text(sql))]
    hit = conn.execute(
        text("""
        SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()""")
    ).one()
    total = (hit.blks_hit or 0) + (hit.blks_read or 0)
    out["cache_hit_ratio_percent"] = round(100 * hit.blks_hit / total, 2) if total else None
    out["size_bytes"] = conn.execute(text("SELECT pg_database_size(current_database())")).scalar()
    return out
