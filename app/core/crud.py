"""Plain resources in a few lines: list, read, create, update, delete with the shared rules.

A `Resource` says which model, which body schemas, which roles may read and write, how rows are
scoped to the caller (row-level rules on top of the tenant scope) and that rule's name (its reach,
app/core/auth.py), and which referenced ids must exist in the caller's institution. Domains with real business rules write their own services instead.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from flask import Blueprint, current_app, g, jsonify
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.core.admission import cached
from app.core.auth import ROLES, SCHOOL, Reach, roles
from app.core.caching import MEDIUM
from app.core.conflicts import CONFLICTS as CONFLICTS  # re-exported: domains register their messages here
from app.core.conflicts import clash_message
from app.core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from app.core.models import SoftDeleteMixin, utcnow
from app.core.openapi import doc
from app.core.pagination import ListSpec, apply_list, list_response, page_response, prepared_list
from app.core.schemas import dump, fields_of, parse_body
from app.core.tenancy import execute_reusable
from app.extensions import db


class AuditTrail(Protocol):
    """What the audit package hands to core at start-up (app/audit/routes.py): every write is recorded."""

    def record(self, action, entity_type, entity_id, changes=None): ...

    def snapshot(self, obj, fields) -> dict: ...

    def apply_update(self, obj, values: dict, entity_type: str) -> dict: ...


def audit_trail() -> AuditTrail:
    return current_app.extensions["audit_trail"]


ALL_ROLES = ROLES


def _or_conflict(step):
    try:
        step()
    except IntegrityError as exc:
        db.session.rollback()
        message = clash_message(exc)
        if message is None:
            raise
        raise Conflict(message) from None


def commit_or_conflict():
    _or_conflict(db.session.commit)


def flush_or_conflict():
    _or_conflict(db.session.flush)


def check_refs(values: dict, refs: dict):
    """Every referenced id must name a row the caller's institution owns (else 422, never a leak)."""
    errors = {}
    for name, model in refs.items():
        ident = values.get(name)
        if ident is None:
            continue
        found = db.session.execute(select(model.id).where(model.id == ident)).scalar_one_or_none()
        if found is None:
            errors[name] = f"no such {model.__tablename__.rstrip('s').replace('_', ' ')} ({ident})"
    if errors:
        raise ValidationFailed(errors)


def live(stmt, model):
    if issubclass(model, SoftDeleteMixin):
        stmt = stmt.where(model.deleted_at.is_(None))
    return stmt


@dataclass
class Resource:
    name: str  # singular, for messages and audit ("student")
    path: str  # "/students"
    model: Any  # a mapped class
    out: type  # Out schema
    spec: ListSpec
    create: Any = None  # Body schema (a pydantic model class), or None: no create
    update: Any = None
    read_roles: tuple = ALL_ROLES
    write_roles: tuple = ("admin",)
    scope: Callable | None = None  # (stmt, principal) -> stmt: row-level visibility
    reach: Reach = SCHOOL  # the rule `scope` applies, by name (app/access/rules.py), for the declaration
    refs: dict = field(default_factory=dict)
    deletable: bool = True
    on_delete: Callable | None = None  # (obj) -> None: more of the delete, in its transaction
    serialize: Any = None  # (obj) -> dict; by default the Out schema's fields
    # (ident) -> dict or None: the single-record answer (None: 404), instead of get_or_404 + serialize;
    # for a hot read that builds its answer from plain rows (app/people/services.py student_detail).
    read: Callable | None = None
    detail_out: type | None = None  # the single-record answer's schema, when it is not `out`
    cache_tables: tuple = ()  # extra tables the reads depend on (row scoping, detail)
    cache_ttl: int = MEDIUM
    # The out schema's fields as columns, in its order: the list then reads plain rows, not objects, and
    # answers them as they are; when the caller's row scope narrows nothing (it hands the statement back
    # unchanged), each shape of the list's statement is built once (pagination.prepared_list) and run
    # alone in autocommit (tenancy.execute_reusable). For a hot list (app/people/routes.py students).
    list_columns: tuple = ()

    def __post_init__(self):
        if (self.scope is None) != (self.reach is SCHOOL):
            raise ValueError(f"{self.name}: a row scope and its reach (other than SCHOOL) go together")
        self.fields = fields_of(self.out)
        if self.list_columns and (
            self.serialize
            or tuple(c.key for c in self.list_columns) != self.fields
            or not {c.key for c in self.spec.sorts.values()} <= set(self.fields)
        ):
            raise ValueError(f"{self.name}: list_columns are the out schema's fields (sorts among them)")
        self.serialize = self.serialize or (lambda obj: dump(obj, self.fields))
        self._list_base = None

    def narrowed(self, stmt):
        """stmt over the live rows the caller reaches (the row scope hands it back when it narrows nothing)."""
        return stmt if self.scope is None else self.scope(stmt, g.principal)

    def base(self):
        """The list's statement over what the caller reaches: the model's objects, or plain rows of
        list_columns from a select built once."""
        if not self.list_columns:
            return self.narrowed(live(select(self.model), self.model))
        if self._list_base is None:
            self._list_base = live(select(*self.list_columns), self.model)
        return self.narrowed(self._list_base)

    def list_rows(self, stmt):
        """The list answer from plain rows of list_columns; stmt: base()."""
        if stmt is not self._list_base:  # narrowed to what this caller reaches: built for this request
            stmt, limit, sort, col = apply_list(stmt, self.spec)
            rows = db.session.execute(stmt).all()
        else:
            base = stmt
            stmt, params, limit, sort, col = prepared_list(self.path, lambda: base, self.spec)
            rows = execute_reusable(db.session, stmt, params)
        return page_response(rows, limit, sort, col, None)

    def get_or_404(self, ident):
        stmt = self.narrowed(live(select(self.model), self.model))
        obj = db.session.execute(stmt.where(self.model.id == ident)).scalar_one_or_none()
        if obj is None:
            raise NotFound(self.name)
        return obj

    def register(self, bp: Blueprint):
        res = self
        ep = self.path.strip("/").replace("/", "_").replace("-", "_")
        tag = [self.path.strip("/").split("/")[0]]

        tables = (self.model.__table__.name, *self.cache_tables)

        @roles(*res.read_roles, reach=res.reach)
        @cached(*tables, ttl=res.cache_ttl, namespace=ep)
        @doc(
            f"List {res.path.strip('/')}",
            out=res.out,
            many=True,
            tags=tag,
            query=res.spec,
        )
        def list_view():
            if res.list_columns:
                return res.list_rows(res.base())
            return list_response(db.session, res.base(), res.spec, res.serialize)

        @roles(*res.read_roles, reach=res.reach)
        @cached(*tables, ttl=res.cache_ttl, namespace=ep)
        @doc(f"Get one {res.name}", out=res.detail_out or res.out, tags=tag)
        def get_view(ident):
            if res.read is None:
                return jsonify(res.serialize(res.get_or_404(ident)))
            data = res.read(ident)
            if data is None:
                raise NotFound(res.name)
            return jsonify(data)

        bp.add_url_rule(self.path, f"list_{ep}", _named(list_view, f"list_{ep}"), methods=["GET"])
        bp.add_url_rule(
            f"{self.path}/<int:ident>", f"get_{ep}", _named(get_view, f"get_{ep}"), methods=["GET"]
        )

        if self.create is not None:

            @roles(*res.write_roles, reach=res.reach)
            @doc(f"Create a {res.name}", body=res.create, out=res.out, status=201, tags=tag)
            def create_view():
                body = parse_body(res.create)
                values = body.model_dump()
                check_refs(values, res.refs)
                obj = res.model(**values)
                db.session.add(obj)
                flush_or_conflict()
                audit_trail().record("create", res.name, obj.id, audit_trail().snapshot(obj, values))
                commit_or_conflict()
                return jsonify(res.serialize(obj)), 201

            bp.add_url_rule(self.path, f"create_{ep}", _named(create_view, f"create_{ep}"), methods=["POST"])

        if self.update is not None:

            @roles(*res.write_roles, reach=res.reach)
            @doc(f"Change a {res.name}", body=res.update, out=res.out, tags=tag)
            def update_view(ident):
                obj = res.get_or_404(ident)
                body = parse_body(res.update)
                values = body.model_dump(exclude_unset=True)
                check_refs(values, res.refs)
                audit_trail().apply_update(obj, values, res.name)
                commit_or_conflict()
                return jsonify(res.serialize(obj))

            bp.add_url_rule(
                f"{self.path}/<int:ident>",
                f"update_{ep}",
                _named(update_view, f"update_{ep}"),
                methods=["PATCH"],
            )

        if self.deletable and self.create is not None:

            @roles(*res.write_roles, reach=res.reach)
            @doc(f"Delete a {res.name}", status=204, tags=tag)
            def delete_view(ident):
                obj = res.get_or_404(ident)
                if isinstance(obj, SoftDeleteMixin):
                    obj.deleted_at = utcnow()  # soft: the record keeps its history
                else:
                    db.session.delete(obj)
                try:
                    db.session.flush()  # before the audit insert: a row still referenced fails here
                except IntegrityError:
                    db.session.rollback()
                    raise Conflict(f"This {res.name} is still referenced by other records.") from None
                if res.on_delete is not None:  # after the flush: a refused delete ends nothing
                    res.on_delete(obj)
                audit_trail().record("delete", res.name, ident)
                commit_or_conflict()
                return "", 204

            bp.add_url_rule(
                f"{self.path}/<int:ident>",
                f"delete_{ep}",
                _named(delete_view, f"delete_{ep}"),
                methods=["DELETE"],
            )
        return self


def _named(view, name):
    # Generated views get their own names: rate limits and logs tell them apart by name.
    view.__name__ = view.__qualname__ = name
    return view


def not_allowed():
    raise Forbidden()


def count(stmt):
    return db.session.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
