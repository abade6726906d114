"""Lists in one place: `limit` + keyset `cursor`, allow-listed filters and sorts, name search.

Answer: {"data": [...], "next_cursor": "..."} plus `Link: <...>; rel="next"`. The cursor holds the
last row's sort value and id, so pages stay stable while rows are inserted.

A list's `ListSpec` is its whole query declaration: the parsing, the unknown-parameter check and the
OpenAPI parameters (`sort` as an enum, typed filters, `q` only where the list searches) come from it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from types import NoneType
from typing import Any
from urllib.parse import urlencode

from flask import current_app, jsonify, request
from sqlalchemy import Integer, bindparam, func, or_, tuple_

from app.core.cursor import BAD_CURSOR, decode_cursor, encode_cursor
from app.core.errors import ValidationFailed
from app.core.queryargs import INTEGER, TEXT, Kind, Param, QueryArgs, integer, kind_of, one_of, reject_unknown
from app.core.tenancy import reusable


def _page_size(raw: str, name: str) -> int:
    n = INTEGER.parse(raw, name)
    top = current_app.config["PAGE_SIZE_MAX"]
    if not 1 <= n <= top:
        raise ValidationFailed({name: f"must be between 1 and {top}"})
    return n


def _page_size_schema() -> dict:
    cfg = current_app.config
    return {
        "type": "integer",
        "minimum": 1,
        "maximum": cfg["PAGE_SIZE_MAX"],
        "default": cfg["PAGE_SIZE_DEFAULT"],
    }


LIMIT = Param(
    "limit",
    Kind(_page_size_schema, _page_size),
    default=lambda: current_app.config["PAGE_SIZE_DEFAULT"],
    description="Rows per page.",
)
CURSOR = Param(
    "cursor",
    TEXT,
    description="The previous page's next_cursor.",
    rule="a next_cursor this list gave, same sort",
)
OFFSET = Param(
    "offset",
    integer(0, 10_000, "must be between 0 and 10000; use the cursor for deeper pages"),
    description="Rows to skip (ignored with a cursor); the cursor is the way to deeper pages.",
)
# Search text: something besides spaces (a blank `q` is a 422).
SEARCH = Kind({"type": "string", "pattern": "\\S"}, TEXT.parse)
# A cursor is [sort, last row's sort value (null when sorted by id), last row's id].
_CURSOR_KINDS = (str, (str, int, NoneType), int)


@dataclass(frozen=True)
class Filter:
    """A list filter other than `column == value`: apply(stmt, value), the value parsed by `kind`."""

    kind: Kind
    apply: Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Choice:
    """A `column == value` filter whose values are a fixed set: an enum in the document, others a 422."""

    column: Any
    values: tuple[str, ...]


@dataclass
class ListSpec:
    id_column: Any
    filters: dict = field(default_factory=dict)  # name -> column (`column == value`), Choice or Filter
    sorts: dict = field(default_factory=dict)  # name -> column (NOT NULL columns only)
    default_sort: str = "id"  # "-name": descending
    search: tuple = ()  # columns searched by `q` (case-insensitive prefix)
    extra_params: tuple[Param, ...] = ()  # the view's own parameters (ListArgs.extra)

    def __post_init__(self):
        # sort value -> (descending, column, kind of its cursor values); "id" and "-id" always exist.
        self._sorts = {}
        for name, col in {"id": self.id_column, **self.sorts}.items():
            kind = None if col is self.id_column else kind_of(col)
            self._sorts[name], self._sorts["-" + name] = (False, col, kind), (True, col, kind)
        if self.default_sort not in self._sorts:
            raise ValueError(f"default_sort {self.default_sort!r} is not one of the sorts")
        sort_error = f"must be one of {', '.join(['id', *self.sorts])} (prefix - for descending)"

        def parse_sort(raw: str, name: str) -> str:
            if raw not in self._sorts:
                raise ValidationFailed({name: sort_error})
            return raw

        sort_schema = {"type": "string", "enum": list(self._sorts), "default": self.default_sort}
        self._sort = Param(
            "sort",
            Kind(sort_schema, parse_sort),
            default=self.default_sort,
            description="A leading - sorts descending.",
        )
        self._filters = tuple(Param(name, _filter_kind(target)) for name, target in self.filters.items())
        searched = " or ".join(c.key for c in self.search)
        q = (
            (Param("q", SEARCH, description=f"Case-insensitive prefix of {searched}."),)
            if self.search
            else ()
        )
        self.query = QueryArgs(LIMIT, CURSOR, OFFSET, self._sort, *q, *self._filters, *self.extra_params)
        # `q` passes the unknown-parameter check everywhere: a list without search says so by name.
        self._accepted = self.query.names | {"q"}

    def parameters(self) -> list[dict]:
        """The OpenAPI parameters (app/core/openapi.py's doc(query=...))."""
        return self.query.parameters()

    def parse(self, args=None) -> "ListArgs":
        """The request's list parameters, validated (422 naming the first bad one)."""
        args = request.args if args is None else args
        reject_unknown(args, self._accepted)
        filters = {}
        for param in self._filters:
            raw = args.get(param.name)
            if raw is not None:
                filters[param.name] = param.kind.parse(raw, param.name)
        extra = {p.name: p.value(args) for p in self.extra_params}
        term = None
        q = args.get("q")
        if q is not None:
            if not self.search:
                raise ValidationFailed({"q": "search is not available on this list"})
            term = q.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            if not term:
                raise ValidationFailed({"q": "must not be empty"})
        sort = self._sort.value(args)
        desc, col, kind = self._sorts[sort]
        limit = LIMIT.value(args)

        cursor = offset = None
        raw_cursor = args.get("cursor")
        if raw_cursor:
            csort, value, ident = decode_cursor(raw_cursor, *_CURSOR_KINDS)
            if csort != sort:
                raise ValidationFailed({"cursor": "belongs to another sort order"})
            if kind is not None:
                if isinstance(value, str):
                    try:
                        value = kind.parse(value, "cursor")
                    except ValidationFailed:
                        raise ValidationFailed({"cursor": BAD_CURSOR}) from None
                elif kind is not INTEGER or type(value) is not int:  # e.g. a number for a name
                    raise ValidationFailed({"cursor": BAD_CURSOR})
            cursor = (value, ident)
        elif "offset" in args:
            offset = OFFSET.value(args)
        return ListArgs(filters, term, sort, desc, col, limit, cursor, offset, extra)


def _filter_kind(target) -> Kind:
    if isinstance(target, Filter):
        return target.kind
    if isinstance(target, Choice):
        return one_of(*target.values)
    return kind_of(target)


@dataclass(slots=True)
class ListArgs:
    """The validated list parameters of one request."""

    filters: dict  # name -> parsed value
    term: str | None  # search prefix, escaped for LIKE
    sort: str
    desc: bool
    col: Any
    limit: int
    cursor: tuple | None  # (sort value, id)
    offset: int | None
    extra: dict  # the spec's extra_params: name -> parsed value


def _build(stmt, spec: ListSpec, la: ListArgs):
    """stmt with the filters, search, keyset position, order and limit; every value is a named bind
    parameter (list_params gives them), so one built statement serves every request of its shape."""
    for name, value in la.filters.items():
        target = spec.filters[name]
        if isinstance(target, Filter):
            stmt = target.apply(stmt, value)
            continue
        column = target.column if isinstance(target, Choice) else target
        stmt = stmt.where(column == bindparam(f"filter_{name}", value, type_=column.type))
    if la.term is not None:
        pattern: Any = bindparam("search_prefix", la.term + "%")
        stmt = stmt.where(or_(*(func.lower(c).like(pattern, escape="\\") for c in spec.search)))
    col, desc = la.col, la.desc
    if la.cursor is not None:
        value, ident = la.cursor
        last_id = bindparam("cursor_id", ident, type_=spec.id_column.type)
        if col is spec.id_column:
            stmt = stmt.where(col < last_id if desc else col > last_id)
        else:
            key, pos = (
                tuple_(col, spec.id_column),
                tuple_(bindparam("cursor_value", value, type_=col.type), last_id),
            )
            stmt = stmt.where(key < pos if desc else key > pos)
    elif la.offset is not None:
        stmt = stmt.offset(bindparam("page_offset", la.offset, type_=Integer))
    if col is spec.id_column:
        order = [col.desc() if desc else col.asc()]
    else:
        order = [col.desc(), spec.id_column.desc()] if desc else [col.asc(), spec.id_column.asc()]
    return stmt.order_by(*order).limit(bindparam("page_limit", la.limit + 1, type_=Integer))


def list_params(la: ListArgs) -> dict:
    params = {f"filter_{name}": value for name, value in la.filters.items()}
    params["page_limit"] = la.limit + 1
    if la.term is not None:
        params["search_prefix"] = la.term + "%"
    if la.cursor is not None:
        params["cursor_value"], params["cursor_id"] = la.cursor
    elif la.offset is not None:
        params["page_offset"] = la.offset
    return params


def apply_list(stmt, spec: ListSpec, la: ListArgs | None = None):
    """Filters, search, sort and keyset position; returns (stmt, limit, sort_name, sort_column).
    la: the request's arguments when the view parsed them already (spec.parse(), for its extra_params)."""
    if la is None:
        la = spec.parse()
    return _build(stmt, spec, la), la.limit, la.sort, la.col


_PREPARED: dict = {}


def prepared_list(key, build_base: Callable, spec: ListSpec, la: ListArgs | None = None):
    """apply_list for a hot list whose base statement takes bind parameters instead of values: the
    statement of each shape (base key, filters used, search or not, sort, keyset or offset) is built
    once per process and reused, and the tenancy scope is then also applied once per institution
    (tenancy.reusable): for the lists read most, where building and scoping the select was a large
    share of the request (docs/BENCHMARKS.md). Returns (stmt, params, limit, sort_name, sort_column); execute with
    params plus the base's own. la: the request's arguments when the view parsed them already."""
    if la is None:
        la = spec.parse()
    if any(isinstance(spec.filters[n], Filter) for n in la.filters):  # their values go in the SQL itself
        return _build(build_base(), spec, la), {}, la.limit, la.sort, la.col
    shape = (
        key,
        tuple(sorted(la.filters)),
        la.term is not None,
        la.sort,
        la.cursor is not None,
        la.offset is not None,
    )
    stmt = _PREPARED.get(shape)
    if stmt is None:
        stmt = _PREPARED[shape] = reusable(_build(build_base(), spec, la))
    return stmt, list_params(la), la.limit, la.sort, la.col


def row_dicts(rows):
    """Plain result rows as dicts: one zip per row (cheaper than Row._asdict(); docs/BENCHMARKS.md)."""
    if not rows:
        return []
    keys = rows[0]._fields
    return [dict(zip(keys, r)) for r in rows]


def page_body(rows, limit, sort, col, serialize: Callable | None, keyed: Callable = lambda row: row):
    """({"data": [...], "next_cursor": ...}, Link header or None) for limit+1 fetched rows; serialize:
    row -> dict (None: rows are plain result rows, see row_dicts); keyed: row -> the object holding id
    and sort value."""
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = keyed(rows[-1])
        value = None if sort.lstrip("-") == "id" else getattr(last, col.key)
        next_cursor = encode_cursor([sort, value, last.id])
    data = row_dicts(rows) if serialize is None else [serialize(r) for r in rows]
    link = None
    if next_cursor:
        args = request.args.to_dict()
        args.pop("offset", None)
        args["cursor"] = next_cursor
        link = f'<{request.base_url}?{urlencode(args)}>; rel="next"'
    return {"data": data, "next_cursor": next_cursor}, link


def page_response(
    rows, limit, sort, col, serialize: Callable | None, keyed: Callable = lambda row: row, **extra
):
    """page_body as the answer; `extra` fields join the body."""
    body, link = page_body(rows, limit, sort, col, serialize, keyed)
    resp = jsonify({**body, **extra} if extra else body)
    if link:
        resp.headers["Link"] = link
    return resp


def list_response(session, stmt, spec: ListSpec, serialize: Callable):
    stmt, limit, sort, col = apply_list(stmt, spec)
    rows = session.execute(stmt).scalars().all()
    return page_response(rows, limit, sort, col, serialize)
