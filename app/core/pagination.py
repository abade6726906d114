"""Lists in one place: `limit` + keyset `cursor`, allow-listed filters and sorts, name search.

Answer: {"data": [...], "next_cursor": "..."} plus `Link: <...>; rel="next"`. The cursor holds the
last row's sort value and id, so pages stay stable while rows are inserted.
"""

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlencode

import orjson
from flask import current_app, jsonify, request
from sqlalchemy import Boolean, Date, Integer, bindparam, func, or_, tuple_

from app.core.errors import ValidationFailed
from app.core.schemas import parse_date
from app.core.tenancy import reusable


def _bool(v, name):
    if v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise ValidationFailed({name: "must be true or false"})


def _int(v, name):
    try:
        return int(v)
    except ValueError:
        raise ValidationFailed({name: "must be an integer"}) from None


def coerce(column, value, name):
    t = column.type
    if isinstance(t, Boolean):
        return _bool(value, name)
    if isinstance(t, Integer):
        return _int(value, name)
    if isinstance(t, Date):
        return parse_date(value, name)
    return value


@dataclass
class ListSpec:
    id_column: Any
    filters: dict = field(default_factory=dict)  # name -> column, or callable(stmt, raw_value) -> stmt
    sorts: dict = field(default_factory=dict)  # name -> column (NOT NULL columns only)
    default_sort: str = "id"
    search: tuple = ()  # columns searched by `q` (case-insensitive prefix)
    extra_params: tuple = ()  # other query parameters the view itself reads


PAGING_PARAMS = {"limit", "cursor", "sort", "offset", "q"}


def _encode_cursor(sort, value, ident):
    if isinstance(value, date):
        value = value.isoformat()
    return base64.urlsafe_b64encode(orjson.dumps([sort, value, ident])).decode().rstrip("=")


def _decode_cursor(raw):
    try:
        sort, value, ident = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return sort, value, int(ident)
    except Exception:  # noqa: BLE001 - any garbage is the same client error
        raise ValidationFailed({"cursor": "is not a cursor this API issued"}) from None


def page_size():
    cfg = current_app.config
    raw = request.args.get("limit")
    if raw is None:
        return cfg["PAGE_SIZE_DEFAULT"]
    n = _int(raw, "limit")
    if not 1 <= n <= cfg["PAGE_SIZE_MAX"]:
        raise ValidationFailed({"limit": f"must be between 1 and {cfg['PAGE_SIZE_MAX']}"})
    return n


@dataclass
class ListArgs:
    """The validated list parameters of one request."""

    filters: dict  # name -> coerced value (column filters) or raw value (callable filters)
    term: str | None  # search prefix, escaped for LIKE
    sort: str
    desc: bool
    col: Any
    limit: int
    cursor: tuple | None  # (sort value, id)
    offset: int | None


def parse_list_args(spec: ListSpec) -> ListArgs:
    args = request.args
    unknown = set(args) - PAGING_PARAMS - set(spec.filters) - set(spec.extra_params)
    if unknown:
        raise ValidationFailed({k: "is not a known query parameter" for k in sorted(unknown)})
    filters = {}
    for name, target in spec.filters.items():
        raw = args.get(name)
        if raw is not None:
            filters[name] = raw if _custom(target) else coerce(target, raw, name)
    term = None
    q = args.get("q")
    if q is not None:
        if not spec.search:
            raise ValidationFailed({"q": "search is not available on this list"})
        term = q.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        if not term:
            raise ValidationFailed({"q": "must not be empty"})

    sort = args.get("sort", spec.default_sort)
    desc = sort.startswith("-")
    name = sort.lstrip("-")
    if name != "id" and name not in spec.sorts:
        allowed = ", ".join(["id", *spec.sorts])
        raise ValidationFailed({"sort": f"must be one of {allowed} (prefix - for descending)"})
    col = spec.id_column if name == "id" else spec.sorts[name]
    limit = page_size()

    cursor = offset = None
    raw_cursor = args.get("cursor")
    if raw_cursor:
        csort, value, ident = _decode_cursor(raw_cursor)
        if csort != sort:
            raise ValidationFailed({"cursor": "belongs to another sort order"})
        if col is not spec.id_column and isinstance(value, str):
            value = coerce(col, value, "cursor")
        cursor = (value, ident)
    elif "offset" in args:
        offset = _int(args["offset"], "offset")
        if not 0 <= offset <= 10_000:
            raise ValidationFailed({"offset": "must be between 0 and 10000; use the cursor for deeper pages"})
    return ListArgs(filters, term, sort, desc, col, limit, cursor, offset)


def _custom(target):
    return callable(target) and not hasattr(target, "type")


def _build(stmt, spec: ListSpec, la: ListArgs):
    """stmt with the filters, search, keyset position, order and limit; every value is a named bind
    parameter (list_params gives them), so one built statement serves every request of its shape."""
    for name, value in la.filters.items():
        target = spec.filters[name]
        stmt = (
            target(stmt, value)
            if _custom(target)
            else stmt.where(target == bindparam(f"filter_{name}", value, type_=target.type))
        )
    if la.term is not None:
        pattern = bindparam("search_prefix", la.term + "%")
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


def apply_list(stmt, spec: ListSpec):
    """Filters, search, sort and keyset position; returns (stmt, limit, sort_name, sort_column)."""
    la = parse_list_args(spec)
    return _build(stmt, spec, la), la.limit, la.sort, la.col


_PREPARED: dict = {}


def prepared_list(key, build_base: Callable, spec: ListSpec):
    """apply_list for a hot list whose base statement takes bind parameters instead of values: the
    statement of each shape (base key, filters used, search or not, sort, keyset or offset) is built
    once per process and reused, and the tenancy scope is then also applied once per institution
    (tenancy.reusable): for the lists read most, where building and scoping the select was a large
    share of the request (docs/BENCHMARKS.md). Returns (stmt, params, limit, sort_name, sort_column); execute with
    params plus the base's own."""
    la = parse_list_args(spec)
    if any(_custom(spec.filters[n]) for n in la.filters):  # custom filters put values in the SQL itself
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
        next_cursor = _encode_cursor(sort, value, last.id)
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
