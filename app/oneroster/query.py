"""The OneRoster 1.2 REST binding's query behaviour, and its error shape.

`limit`/`offset` paging with X-Total-Count and Link (first, prev, next, last); `sort` + `orderBy`;
`fields` (a sparse selection); `filter`: one or more `field op 'value'` predicates joined by AND or by
OR, ops = != > >= < <= ~ (contains), values in single quotes (a quote inside doubled). Field names are
those of the collection; each maps to a column of the collection's statement (rostering.py,
gradebook.py), so a predicate is SQL, never a scan in Python. Errors answer the binding's
imsx_StatusInfo (imsx_codeMajor failure, severity error, a code minor naming the problem).
"""

import operator
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from flask import current_app, request
from sqlalchemy import CompoundSelect, and_, func, or_, select, union_all
from werkzeug.exceptions import HTTPException

from app.core.errors import ApiError
from app.extensions import db

TOMB = 9  # the `_t` of every collection's tombstone branch (app/oneroster/tombstones.py); live ones: 0..3
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # spec default page is 100; a client may ask for more, capped here

CODE_MINOR = {
    400: "invalid_data",
    401: "unauthorisedrequest",
    403: "forbidden",
    404: "unknownobject",
    405: "invalid_data",
    409: "invalid_data",
    413: "invalid_data",
    415: "invalid_data",
    422: "invalid_data",
    429: "server_busy",
    503: "server_busy",
}


class OneRosterError(ApiError):
    """An error with a code minor of the binding's vocabulary (e.g. invalid_filter_field)."""

    def __init__(self, status, detail, code_minor):
        super().__init__(status, detail)
        self.code_minor = code_minor


def status_info(status, description, code_minor=None, headers=None):
    body = {
        "imsx_codeMajor": "failure",
        "imsx_severity": "error",
        "imsx_description": description,
        "imsx_CodeMinor": {
            "imsx_codeMinorField": [
                {
                    "imsx_codeMinorFieldName": "TargetEndSystem",
                    "imsx_codeMinorFieldValue": code_minor or CODE_MINOR.get(status, "internal_server_error"),
                }
            ]
        },
    }
    resp = current_app.json.response(body)
    # The binding has no 422: invalid input is a 400 with code minor invalid_data.
    resp.status_code = 400 if status == 422 else status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def register_status_info(bp):
    """Errors raised while a OneRoster view is admitted or runs answer in the binding's shape."""

    @bp.errorhandler(ApiError)
    def _api_error(e: ApiError):
        detail = e.detail
        if e.errors:
            detail += " " + "; ".join(f"{k}: {v}" for k, v in sorted(e.errors.items()))
        return status_info(e.status, detail, getattr(e, "code_minor", None), e.headers)

    @bp.errorhandler(HTTPException)
    def _http_error(e: HTTPException):
        return status_info(e.code or 500, e.description or "Error")


# --- filter grammar -----------------------------------------------------------------------------------

_PREDICATE = re.compile(r"\s*([A-Za-z][\w.]*)\s*(!=|>=|<=|=|>|<|~)\s*'((?:[^']|'')*)'\s*")
_JOIN = re.compile(r"(AND|OR)\s", re.I)


@dataclass(frozen=True)
class Field:
    column: Any
    kind: str = "str"  # str, date, datetime, int, number, bool
    # a reference field ("user.sourcedId"): sourcedId prefix -> (the branches `_t` it names, the column
    # holding the integer id), so `= 'student-12'` is an id probe, not a comparison of computed text
    ids: dict | None = None
    kind_col: Any = None  # bound: the branch column `_t`


def _value(f: Field, raw: str, name: str):
    try:
        if f.kind == "datetime":
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        if f.kind == "date":
            return date.fromisoformat(raw[:10])
        if f.kind == "int":
            return int(raw)
        if f.kind == "number":
            number = Decimal(raw)
            if not number.is_finite():
                raise ValueError(raw)
            return number
        if f.kind == "bool":
            if raw not in ("true", "false"):
                raise ValueError(raw)
            return raw == "true"
    except (ValueError, InvalidOperation):
        raise OneRosterError(
            400, f"filter: {name} needs a {f.kind} value, not {raw!r}", "invalid_filter_field"
        ) from None
    return raw


def _id_of(raw: str, prefixes) -> tuple[str, int] | None:
    """("student", 12) for "student-12" when "student" is one of `prefixes` (a canonical integer only:
    "student-012" names no record, as no record shows it)."""
    prefix, _, rest = raw.rpartition("-")
    if prefix in prefixes and rest.isdigit() and len(rest) < 19 and str(int(rest)) == rest:
        return prefix, int(rest)
    return None


def _predicate(f: Field, op: str, value, name):
    col = f.column
    if f.ids and op == "=":
        hit = _id_of(value, f.ids)
        if hit is not None:
            kinds, id_col = f.ids[hit[0]]
            # a tombstone names what it referred to as text (it has no live row to probe)
            return or_(and_(f.kind_col.in_(kinds), id_col == hit[1]), and_(f.kind_col == TOMB, col == value))
    if op == "~":
        if f.kind != "str":
            raise OneRosterError(400, f"filter: ~ applies to text fields, not {name}", "invalid_filter_field")
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return func.lower(col).like(f"%{escaped.lower()}%", escape="\\")
    if f.kind == "datetime":
        # Records carry dateLastModified to the millisecond (common.stamp); compare as they are shown,
        # so the record a delta client saw last is not sent again: truncated(col) > v <=> col >= v + 1 ms.
        nxt = value + timedelta(milliseconds=1)
        return {
            "=": and_(col >= value, col < nxt),
            "!=": or_(col < value, col >= nxt),
            ">": col >= nxt,
            ">=": col >= value,
            "<": col < value,
            "<=": col < nxt,
        }[op]
    if f.kind == "bool" and op not in ("=", "!="):
        # true/false have no order (and SQL's comparison of a boolean with > is refused outright)
        raise OneRosterError(400, f"filter: {name} takes = or != only", "invalid_filter_field")
    # built for the one operator asked: comparing a boolean column with < raises at construction
    return {
        "=": operator.eq,
        "!=": operator.ne,
        ">": operator.gt,
        ">=": operator.ge,
        "<": operator.lt,
        "<=": operator.le,
    }[op](col, value)


def equals(coll, view, name: str, value: str):
    """`name = 'value'` on `view` (a subquery of `coll`, or one branch), as the filter grammar builds it:
    a reference field's id probe where the value is one (for the nested collections)."""
    return _predicate(coll.bound_fields(view)[name], "=", value, name)


def parse_filter(text: str, fields: dict[str, Field]):
    """`text` -> a SQL condition; 400 invalid_filter_field naming what is wrong."""
    pos, preds, joins = 0, [], set()
    while True:
        m = _PREDICATE.match(text, pos)
        if not m:
            raise OneRosterError(
                400,
                f"filter: expected field op 'value' at position {pos} (ops: = != > >= < <= ~; values in single quotes)",
                "invalid_filter_field",
            )
        name, op, raw = m.group(1), m.group(2), m.group(3).replace("''", "'")
        f = fields.get(name)
        if f is None:
            raise OneRosterError(
                400,
                f"filter: {name!r} is not a filterable field (fields: {', '.join(sorted(fields))})",
                "invalid_filter_field",
            )
        preds.append(_predicate(f, op, _value(f, raw, name), name))
        pos = m.end()
        if pos >= len(text):
            break
        j = _JOIN.match(text, pos)
        if not j:
            raise OneRosterError(400, f"filter: expected AND or OR at position {pos}", "invalid_filter_field")
        joins.add(j.group(1).upper())
        pos = j.end()
    if len(joins) > 1:
        raise OneRosterError(400, "filter: use AND or OR, not both", "invalid_filter_field")
    return or_(*preds) if joins == {"OR"} else and_(*preds)


# --- a list request -----------------------------------------------------------------------------------


@dataclass
class Collection:
    """One OneRoster collection over a statement: `stmt()` selects labelled columns (at least
    sourcedId, status, dateLastModified, and `_t`, `_k`, the stable order); `fields` are the filterable
    and sortable ones; `out(row, extra)` the record; `enrich(rows)` fetches what a page's records list
    (terms of classes, agents of users) in one query."""

    name: str  # plural: the envelope of a list
    singular: str
    stmt: Any
    fields: dict[str, Field]
    out: Any
    enrich: Any = None
    record_fields: tuple = field(default_factory=tuple)  # what `fields=` may name
    kinds: dict = field(default_factory=dict)  # sourcedId prefix -> its branch's `_t`
    order: tuple = ("_t", "_k")  # the stable order under any sort (unique per record)

    def rows(self, where=()):
        sub = self.stmt().subquery()
        return sub, select(sub).where(*[w(sub) for w in where])

    def bound_fields(self, view) -> dict[str, Field]:
        """The filterable fields as columns of `view` (a subquery, or one branch of the union); the
        sourcedId and the reference fields with the id columns that answer `= 'prefix-N'`."""
        out = {}
        for n, f in self.fields.items():
            ids = dict(f.ids or {})
            if n == "sourcedId":
                ids = {p: ((t,), "_k") for p, t in self.kinds.items()}
            out[n] = Field(
                view.c[f.column], f.kind,
                {p: (ts, view.c[col]) for p, (ts, col) in ids.items()} or None,
                view.c._t if ids else None,
            )  # fmt: skip
        return out


def _branches(stmt) -> list:
    """The SELECTs of a collection's statement (one, or the members of its UNION ALL)."""
    return list(stmt.selects) if isinstance(stmt, CompoundSelect) else [stmt]


class _Branch:
    """A branch SELECT seen as the collection's subquery is: `.c.<label>` is its labelled expression
    (SQLAlchemy renders a label's expression in WHERE, its name in ORDER BY)."""

    def __init__(self, stmt):
        self.c = stmt.selected_columns


def _int_arg(name, default, lo, hi):
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise OneRosterError(400, f"{name} must be a whole number", "invalid_data") from None
    if not lo <= value <= hi:
        raise OneRosterError(400, f"{name} must be between {lo} and {hi}", "invalid_data")
    return value


def _selection(coll: Collection):
    raw = request.args.get("fields")
    if not raw:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in coll.record_fields]
    if unknown:
        raise OneRosterError(400, f"fields: unknown field(s) {', '.join(unknown)}", "invalid_selection_field")
    return names


def _select(record: dict, names):
    return record if names is None else {n: record[n] for n in names if n in record}


def list_answer(coll: Collection, where=()):
    """The page of `coll` this request asks for, with X-Total-Count and Link.

    The filter, the conditions `where` and the order go into every branch of the collection's UNION ALL,
    and each branch keeps only its first offset + limit rows in that order: a branch is a subquery with
    its own WHERE, so PostgreSQL plans it alone, and only an ORDER BY ... LIMIT of its own lets it read
    a (per-school) index in order instead of reading the whole branch to sort it. The union of the
    branches' first offset + limit rows holds the page, so the answer is the one the whole union sorted
    would give. docs/BENCHMARKS.md shows the plans."""
    limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_arg("offset", 0, 0, 10**9)
    names = _selection(coll)
    text = request.args.get("filter")
    sort = request.args.get("sort")
    order_by = (request.args.get("orderBy") or "asc").lower()
    if order_by not in ("asc", "desc"):
        raise OneRosterError(400, "orderBy must be asc or desc", "invalid_data")
    if sort and sort not in coll.fields:
        raise OneRosterError(400, f"sort: {sort!r} is not a sortable field", "invalid_sort_field")

    def order_of(view):
        # The stable order after a sort goes the sort's way, so one index on (school, field, stable
        # order) read backwards serves a descending sort whole, however many records share a value.
        keys = [view.c[coll.fields[sort].column]] if sort else []
        keys += [view.c[c] for c in coll.order]
        return [k.desc() for k in keys] if sort and order_by == "desc" else keys

    counted, paged = [], []
    for branch in _branches(coll.stmt()):
        view = _Branch(branch)
        conds = [w(view) for w in where]
        if text:
            conds.append(parse_filter(text, coll.bound_fields(view)))
        counted.append(branch.where(*conds))
        # a SELECT of its own around each (SQLite takes no ORDER BY/LIMIT on a member of a UNION)
        paged.append(select(branch.where(*conds).order_by(*order_of(view)).limit(offset + limit).subquery()))
    whole = union_all(*counted) if len(counted) > 1 else counted[0]
    page = (union_all(*paged) if len(paged) > 1 else paged[0]).subquery()
    session = db.session
    total = session.execute(select(func.count()).select_from(whole.subquery())).scalar_one()
    rows = (
        session.execute(select(page).order_by(*order_of(page)).limit(limit).offset(offset)).mappings().all()
    )
    extra = coll.enrich(rows) if coll.enrich else None
    body = {coll.name: [_select(coll.out(r, extra), names) for r in rows]}
    resp = current_app.json.response(body)
    resp.headers["X-Total-Count"] = str(total)
    link = _links(limit, offset, total)
    if link:
        resp.headers["Link"] = link
    return resp


def _links(limit, offset, total):
    def url(off):
        args = {k: v for k, v in request.args.items() if k not in ("limit", "offset")}
        args.update(limit=limit, offset=off)
        return f"<{request.base_url}?{urlencode(args)}>"

    last = max(0, (total - 1) // limit * limit)
    parts = [f'{url(0)}; rel="first"', f'{url(last)}; rel="last"']
    if offset + limit < total:
        parts.append(f'{url(offset + limit)}; rel="next"')
    if offset > 0:
        parts.append(f'{url(max(0, offset - limit))}; rel="prev"')
    return ", ".join(parts)


def by_sourced_id(sub, sourced_id: str, kinds: dict[str, int]):
    """The condition naming one record: "student-12" is branch `_t` of prefix "student" and `_k` 12, so
    the lookup is a primary-key probe in one branch of the collection's union (sourcedIds of other
    shapes are compared as text); or the record's tombstone, once it was deleted (a unique-index probe)."""
    hit = _id_of(sourced_id, kinds)
    if hit is not None:
        live = and_(sub.c._t == kinds[hit[0]], sub.c._k == hit[1])
        return or_(live, and_(sub.c._t == TOMB, sub.c.sourcedId == sourced_id))
    return sub.c.sourcedId == sourced_id


def one_answer(coll: Collection, sourced_id: str, where=()):
    names = _selection(coll)
    sub, stmt = coll.rows(where)
    row = db.session.execute(stmt.where(by_sourced_id(sub, sourced_id, coll.kinds))).mappings().first()
    if row is None:
        raise OneRosterError(404, f"No {coll.singular} with sourcedId {sourced_id!r}.", "unknownobject")
    extra = coll.enrich([row]) if coll.enrich else None
    return current_app.json.response({coll.singular: _select(coll.out(row, extra), names)})
