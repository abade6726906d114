"""INSERT ... ON CONFLICT on whichever database the app runs on.

SQLAlchemy's generic `insert()` has no ON CONFLICT; PostgreSQL (production) and SQLite (the embedded
default) each have their own `insert` that does, with the same `on_conflict_do_nothing`,
`on_conflict_do_update` and `excluded`.

A hot upsert is built once per dialect (`insert_in`) and executed over its list of rows: SQLAlchemy sends
them as one multi-VALUES statement ("insertmanyvalues") from a compiled form it caches, where
`.values(rows)` is compiled again on every call, its cost growing with rows x columns.

On PostgreSQL the hottest batches (a roll's marks and their audit rows) go further: the rows travel as
one JSON array, one bound value (`json_rows`, `rows_json`), because insertmanyvalues still prepares each
row's parameters in Python (docs/BENCHMARKS.md, "Roll call: one command to invalidate").
"""

from collections.abc import Iterator, Sequence
from typing import TypeVar

from sqlalchemy import JSON, String, bindparam, cast, column, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import TableValuedAlias

from app.core.schemas import dumps
from app.extensions import db

T = TypeVar("T")


def dialect_of(session: Session | None = None) -> str:
    return (session if session is not None else db.session).get_bind().dialect.name


def insert_in(dialect_name: str, table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into `table` (a Table or a mapped class) in that dialect ("postgresql" or "sqlite")."""
    return (postgresql if dialect_name == "postgresql" else sqlite).insert(table)


def insert_for(table, session: Session | None = None) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into `table` (a Table or a mapped class) in the dialect of the session's database."""
    return insert_in(dialect_of(session), table)


def in_chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in slices of `size`, for statements that must stay bounded (bound values per statement,
    rows a trigger recomputes per statement)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def json_rows(table, columns: Sequence[str], name: str = "r") -> TableValuedAlias:
    """`json_to_recordset(CAST(:rows AS JSON)) AS name(column type, ...)` for `columns` of `table`
    (PostgreSQL): a FROM to select a batch of rows from, bound as one value with `rows_json`."""
    return (
        func.json_to_recordset(cast(bindparam("rows", type_=String), JSON))
        .table_valued(*(column(c, table.c[c].type) for c in columns))
        .render_derived(name, with_types=True)
    )


def rows_json(rows) -> str:
    """The value of json_rows' :rows: one orjson call, dates and datetimes as every answer writes them."""
    return dumps(rows).decode()
