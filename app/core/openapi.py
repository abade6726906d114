"""The OpenAPI 3.1 document, built from the route table and the same pydantic models that validate input.

Views declare what they take and give with `@doc(...)`; `build_spec` walks `app.url_map`. 3.1 because
pydantic writes JSON Schema 2020-12, which is the schema dialect of OpenAPI 3.1 (3.0 has its own).

Every answer an operation can give is listed: its success status, 304 for a GET that carries an ETag,
and the problem+json answers (app/core/errors.py) derived from what the operation is: a JSON body
can be malformed (400), too large (413) or not JSON (415); a caller needs a token (401) and may lack
the role (403, with the roles in `x-roles`); a path names a record (404); a write can clash (409); a
declared input can be invalid (422); the API tier counts the request (429); the database can be away
(503); any request line or headers can be too long (414, 431). Views add what only they know with
`errors=` (a 410, a 403 from a record-level rule).
tests/test_openapi.py validates the document; tests/test_contract.py fuzzes the API against it.
"""

import re
from typing import Any, Protocol

from flask import current_app
from pydantic import BaseModel

from app.core.auth import ROLES, declared_access
from app.core.schemas import DATE_PATTERN, DATETIME_PATTERN, INT_MAX, INT_MIN, Body

_CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details; `errors` names each invalid field or parameter.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "request_id": {"type": ["string", "null"]},
        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["type", "title", "status", "detail", "request_id"],
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Resending the same key with the same body replays the first answer "
    "(Idempotent-Replayed: true); with another body it is a 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}

TITLES = {
    304: "Not modified (the ETag sent in If-None-Match still matches)",
    400: "The body is not valid JSON",
    401: "No valid access token, or the session has ended",
    403: "The caller's role may not do this, or a rule about this record refuses it",
    404: "No such record (or not one the caller may see)",
    409: "The change clashes with stored data (a unique value, the record's state, an Idempotency-Key)",
    410: "Gone: the link or code has expired",
    413: "The body is too large",
    414: "The request line (path and query) is too long",
    415: "The body is not application/json",
    422: "Invalid input: `errors` names each field or parameter",
    429: "Rate limit exceeded; Retry-After says when to try again",
    431: "The request's headers are too large",
    503: "A service the API needs is unavailable; retry later",
}
_HEADER = {"schema": {"type": "string"}}
_RATE_HEADERS = {
    "Retry-After": {**_HEADER, "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "X-RateLimit-Limit": _HEADER,
    "X-RateLimit-Remaining": _HEADER,
    "X-RateLimit-Reset": _HEADER,
}


class QueryDeclaration(Protocol):
    """What an endpoint declares about its query parameters: app/core/queryargs.py's QueryArgs, or a
    list's app/core/pagination.py ListSpec (the same declarations parse and check the request)."""

    def parameters(self) -> list[dict]: ...


def doc(
    summary,
    *,
    body=None,
    body_required=True,
    media=JSON,
    out=None,
    many=False,
    status=200,
    polled=None,
    query: QueryDeclaration | None = None,
    idempotent=False,
    errors=(),
    rules=None,
    path=None,
    tags=None,
    description=None,
):
    """body: the pydantic model of the request body, sent as `media` (JSON, or multipart/form-data for
    an upload); out: the answer's model, or a JSON schema (a dict), or {media type: schema} for an answer
    that is not JSON; polled: the answer's Location names a job to poll (default: a 202 does);
    idempotent: the view honours Idempotency-Key (app/core/idempotency.py); errors:
    statuses only this view can answer (e.g. 410), beyond those the document derives; rules: {name in a
    422's `errors`: the rule} for what neither a field nor a parameter carries (`x-rules`); path: {path
    parameter: schema} for those that are not integers."""

    def deco(view):
        view.openapi = {
            "summary": summary,
            "body": body,
            "body_required": body_required,
            "media": media,
            "out": out,
            "many": many,
            "status": status,
            "polled": status == 202 if polled is None else polled,
            "query": query,
            "idempotent": idempotent,
            "errors": tuple(errors),
            "rules": rules,
            "path": path or {},
            "tags": tags,
            "description": description,
        }
        return view

    return deco


def _bounded_dates(schema):
    """Every date and date-time in a request body gets the pattern of what the API reads: the years a
    record can hold, and for a date-time the ISO 8601 forms pydantic reads, which are more than RFC
    3339's `date-time` format (seconds and the offset may be left out), so that format is not claimed
    (app/core/schemas.py; the query parameters' kinds say the same, app/core/queryargs.py)."""
    if isinstance(schema, dict):
        fmt = schema.get("format")
        if schema.get("type") == "string" and fmt in ("date", "date-time") and "pattern" not in schema:
            schema["pattern"] = DATE_PATTERN if fmt == "date" else DATETIME_PATTERN
            if fmt == "date-time":
                del schema["format"]
        for value in schema.values():
            _bounded_dates(value)
    elif isinstance(schema, list):
        for value in schema:
            _bounded_dates(value)
    return schema


REFERENCE_RULE = "names a record of the caller's school that the caller may use"


def _references(schema):
    """An integer body field named `…_id` names a record: that it exists, in the caller's school and
    reach, is a rule JSON Schema cannot state (x-rule)."""
    if isinstance(schema, dict):
        for name, prop in (schema.get("properties") or {}).items():
            kinds = [prop, *prop.get("anyOf", ())]
            if (
                name.endswith("_id")
                and "x-rule" not in prop
                and any(k.get("type") == "integer" for k in kinds)
            ):
                prop["x-rule"] = REFERENCE_RULE
        for value in schema.values():
            _references(value)
    elif isinstance(schema, list):
        for value in schema:
            _references(value)
    return schema


def _bigint(schema):
    """Every integer of a request body without bounds of its own gets BIGINT's (app/core/schemas.py)."""
    if isinstance(schema, dict):
        if schema.get("type") == "integer":
            schema.setdefault("minimum", INT_MIN)
            schema.setdefault("maximum", INT_MAX)
        for value in schema.values():
            _bigint(value)
    elif isinstance(schema, list):
        for value in schema:
            _bigint(value)
    return schema


def _no_null_defaults(schema):
    """`field: str = None` is how a PATCH body says "may be left out, never null": its null default is
    not a value the field accepts, so the document does not offer it."""
    if isinstance(schema, dict):
        props = schema.get("properties")
        if isinstance(props, dict):
            for prop in props.values():
                if isinstance(prop, dict) and prop.get("default", ...) is None and not _accepts_null(prop):
                    del prop["default"]
        for value in schema.values():
            _no_null_defaults(value)
    elif isinstance(schema, list):
        for value in schema:
            _no_null_defaults(value)
    return schema


def _accepts_null(schema) -> bool:
    kinds = schema.get("type")
    if kinds == "null" or (isinstance(kinds, list) and "null" in kinds):
        return True
    return any(_accepts_null(s) for s in [*schema.get("anyOf", ()), *schema.get("oneOf", ())])


def _ref(model: type[BaseModel], components: dict) -> dict:
    name = model.__name__
    if name not in components:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        defs = schema.pop("$defs", {})
        if issubclass(model, Body):
            _bounded_dates(schema)
            _bounded_dates(defs)
            _references(schema)
            _references(defs)
            _bigint(schema)
            _bigint(defs)
        _no_null_defaults(schema)
        _no_null_defaults(defs)
        for sub_name, sub in defs.items():
            components.setdefault(sub_name, sub)
        components[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def _problem(code: int) -> dict:
    answer: dict[str, Any] = {
        "description": TITLES.get(code, "Problem"),
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
    }
    if code == 401:
        answer["headers"] = {"WWW-Authenticate": _HEADER}
    elif code == 429:
        answer["headers"] = _RATE_HEADERS
    elif code == 503:
        answer["headers"] = {"Retry-After": _HEADER}
    return answer


def _success(meta, components, method, is_public) -> dict:
    answer: dict[str, Any] = {"description": "OK"}
    out = meta["out"]
    status = meta["status"]
    if status == 204:
        answer["description"] = "Done; no content"
        return answer
    if status == 201:
        answer["description"] = "Created"
    elif status == 202:
        answer["description"] = "Accepted"
    if meta["polled"]:
        answer["description"] = "Accepted: the job to poll (its address in Location)"
        answer["headers"] = {"Location": {**_HEADER, "required": True}}
    if isinstance(out, dict) and all("/" in key for key in out):  # {media type: schema}: not JSON
        answer["content"] = {media: {"schema": schema} for media, schema in out.items()}
        return answer
    if out is None:
        item: dict = {"type": "object"}
    elif isinstance(out, type) and issubclass(out, BaseModel):
        item = _ref(out, components)
    else:
        item = out
    schema = (
        {
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": item},
                "next_cursor": {"type": ["string", "null"]},
            },
            "required": ["data", "next_cursor"],
        }
        if meta["many"]
        else item
    )
    answer["content"] = {JSON: {"schema": schema}}
    if method == "GET" and not is_public:
        answer["headers"] = {"ETag": _HEADER}
    return answer


def _statuses(meta, view, method, params, is_public) -> set[int]:
    """The problem answers this operation can give (see the module docstring)."""
    codes = {414, 431, 503, *meta["errors"]}  # 414/431: the request line or headers too long
    has_body = meta["body"] is not None and method in ("POST", "PUT", "PATCH")
    if has_body:
        codes |= {413, 422}
        if meta["media"] == JSON:
            codes |= {400, 415}
    if not is_public:
        codes.add(401)
        allowed = getattr(view, "allowed_roles", None)
        if allowed is not None and set(allowed) != set(ROLES):
            codes.add(403)
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            codes.add(409)
    # The API tier, or a route limit of its own (app/core/ratelimit.py); the login's windows are
    # its own (app/core/loginlimit.py), so it lists 429 in errors=.
    if not getattr(view, "rate_limit_exempt", False) or bool(getattr(view, "rate_limits", None)):
        codes.add(429)
    if any(p["in"] == "path" for p in params):
        codes.add(404)
    if (
        meta["query"] is not None
        or meta["idempotent"]
        or any(p["in"] == "path" and p["schema"].get("type") != "integer" for p in params)
    ):
        codes.add(422)
    return codes


def _describe_access(op, access):
    """The roles that may call the operation (x-roles) and the rule reaching its records (x-reach),
    from the view's declaration (app/core/auth.py `roles`); docs/ACCESS.md shows the same matrix."""
    if access is None or access.get("public"):
        return
    reach = access["reach"]
    op["x-roles"] = list(access["roles"])
    op["x-reach"] = reach.name
    line = "Roles: " + ", ".join(f"{r} ({reach.by_role[r]})" for r in access["roles"]) + "."
    op["description"] = f"{op['description']}\n\n{line}" if "description" in op else line


def build_spec(app=None):
    app = app or current_app
    components: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        meta = getattr(view, "openapi", None)
        if meta is None:
            continue
        path = _CONVERTER.sub(r"{\2}", rule.rule)
        params: list[dict] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer"}
                if conv == "int"
                else meta["path"].get(name, {"type": "string"}),
            }
            for conv, name in _CONVERTER.findall(rule.rule)
        ]
        if meta["query"] is not None:
            params += meta["query"].parameters()
        if meta["idempotent"]:
            params.append(IDEMPOTENCY_KEY)
        is_public = getattr(view, "is_public", False)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {
                "summary": meta["summary"],
                "operationId": f"{rule.endpoint}_{method.lower()}",
                "tags": meta["tags"] or [rule.endpoint.split(".")[0]],
                "parameters": params,
            }
            if meta["description"]:
                op["description"] = meta["description"]
            if meta["rules"]:
                op["x-rules"] = meta["rules"]
            _describe_access(op, declared_access(view))
            if meta["body"] is not None and method in ("POST", "PUT", "PATCH"):
                op["requestBody"] = {
                    "required": meta["body_required"],
                    "content": {meta["media"]: {"schema": _ref(meta["body"], components)}},
                }
            responses = {str(meta["status"]): _success(meta, components, method, is_public)}
            if method == "GET" and not is_public and "headers" in responses[str(meta["status"])]:
                responses["304"] = {"description": TITLES[304]}
            for code in sorted(_statuses(meta, view, method, params, is_public)):
                responses[str(code)] = _problem(code)
            op["responses"] = responses
            if is_public:
                op["security"] = []
            else:
                op["security"] = [{"bearer": []}]
                op.setdefault("x-roles", list(ROLES))  # no @roles: every signed-in role
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Schoolhouse API",
            "version": "1.0.0",
            "description": "Rosters, attendance, grades, fees and reports for one school or many. "
            "Operations other than login, refresh and the signed export download need a bearer "
            "token; `x-roles` lists the roles that may call each one. Errors are "
            "application/problem+json (RFC 9457). Text holding NUL characters is refused (422): "
            "the database cannot store it.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }
