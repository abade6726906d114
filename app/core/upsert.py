"""INSERT ... ON CONFLICT on whichever database the app runs on.

SQLAlchemy's generic `insert()` has no ON CONFLICT; PostgreSQL (production) and SQLite (the embedded
default) each have their own `insert` that does, with the same `on_conflict_do_nothing`,
`on_conflict_do_update` and `excluded`.
"""

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.extensions import db


def insert_for(table, session: Session | None = None) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into `table` (a Table or a mapped class) in the dialect of the session's database."""
    bind = (session if session is not None else db.session).get_bind()
    return (postgresql if bind.dialect.name == "postgresql" else sqlite).insert(table)
