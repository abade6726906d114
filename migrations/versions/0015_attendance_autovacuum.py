"""attendance_records: autovacuum analyses it after 0.5% of it changed and vacuums it after 2%, not 10% and
20%.

A school morning writes a few thousand marks into a table of millions. At PostgreSQL's defaults
(autovacuum_analyze_scale_factor 0.1, autovacuum_vacuum_scale_factor 0.2) the table is analysed only
after 10% of it changed, so all morning the planner holds statistics from before the day's marks, and
the dead versions of changed marks (status is indexed, so a changed mark is not a HOT update) pile up
until 20% of the table is dead. In the 60-minute `make soak` of 2026-11-30 19:58 (docs/BENCHMARKS.md,
"Soak") PostgreSQL's CPU per request grew by half until autovacuum's first ANALYZE of the table in
minute 48, then fell back; in the soak after this migration it stayed flat all hour.

At 0.5% (plus 2,000 rows) a morning's first marks get the day its statistics within minutes (the soak's
school: about 4,500 changed marks; a scale school of 5,000,000 marks: 27,000); an ANALYZE samples 30,000
rows whatever the table's size, and autovacuum looks at a table at most once a minute. Vacuum stays
coarser (2%), because each vacuum also reads the table's indexes. The settings are per table (ALTER
TABLE ... SET), so they move with a dump and restore.
PostgreSQL only: SQLite has no autovacuum.

Revision ID: 0015_attendance_autovacuum
Revises: 0014_oneroster_indexes
Create Date: 2026-11-30 23:30:00

"""

from alembic import op

revision = "0015_attendance_autovacuum"
down_revision = "0014_oneroster_indexes"
branch_labels = None
depends_on = None

SETTINGS = {
    "autovacuum_analyze_scale_factor": "0.005",
    "autovacuum_analyze_threshold": "2000",
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_threshold": "2000",
}


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        pairs = ", ".join(f"{name} = {value}" for name, value in SETTINGS.items())
        op.execute(f"ALTER TABLE attendance_records SET ({pairs})")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE attendance_records RESET ({', '.join(SETTINGS)})")
