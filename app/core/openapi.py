"""OpenAPI 3.0 document built from the route table and the same pydantic models that validate input.

Views declare what they take and give with `@doc(...)`; `build_spec` walks `app.url_map`.
"""

import re
from typing import Any, Protocol

from flask import current_app

from app.core.auth import declared_access
from app.core.schemas import Out

_CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["type", "title", "status", "detail"],
}


class QueryDeclaration(Protocol):
    """What an endpoint declares about its query parameters: app/core/queryargs.py's QueryArgs, or a
    list's app/core/pagination.py ListSpec (the same declarations parse and check the request)."""

    def parameters(self) -> list[dict]: ...


def doc(
    summary,
    *,
    body=None,
    out=None,
    many=False,
    status=200,
    query: QueryDeclaration | None = None,
    tags=None,
    description=None,
):
    def deco(view):
        view.openapi = {
            "summary": summary,
            "body": body,
            "out": out,
            "many": many,
            "status": status,
            "query": query,
            "tags": tags,
            "description": description,
        }
        return view

    return deco


def _ref(model, components):
    name = model.__name__
    if name not in components:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for sub_name, sub in schema.pop("$defs", {}).items():
            components.setdefault(sub_name, sub)
        components[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


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
    components = {"Problem": PROBLEM_SCHEMA}
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        meta = getattr(view, "openapi", None)
        if meta is None:
            continue
        path = _CONVERTER.sub(r"{\2}", rule.rule)
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer" if conv == "int" else "string"},
            }
            for conv, name in _CONVERTER.findall(rule.rule)
        ]
        if meta["query"] is not None:
            params += meta["query"].parameters()
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            op = {
                "summary": meta["summary"],
                "operationId": f"{rule.endpoint}_{method.lower()}",
                "tags": meta["tags"] or [rule.endpoint.split(".")[0]],
                "parameters": params,
                "responses": {},
            }
            if meta["description"]:
                op["description"] = meta["description"]
            _describe_access(op, declared_access(view))
            if meta["body"] is not None and method in ("POST", "PUT", "PATCH"):
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(meta["body"], components)}},
                }
            ok: dict[str, Any] = {"description": "OK"}
            if meta["out"] is not None:
                if isinstance(meta["out"], type) and issubclass(meta["out"], Out):
                    item = _ref(meta["out"], components)
                else:
                    item = meta["out"]
                schema = (
                    {
                        "type": "object",
                        "properties": {
                            "data": {"type": "array", "items": item},
                            "next_cursor": {"type": "string", "nullable": True},
                        },
                    }
                    if meta["many"]
                    else item
                )
                ok["content"] = {"application/json": {"schema": schema}}
            op["responses"][str(meta["status"])] = ok
            for code in ("401", "404", "414", "422", "429", "431", "503"):
                op["responses"][code] = {
                    "description": "Problem",
                    "content": {"application/problem+json": {"schema": PROBLEM_REF}},
                }
            if getattr(view, "is_public", False):
                op["security"] = []
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Schoolhouse API",
            "version": "1.0.0",
            "description": "Rosters, attendance, grades, fees and reports for one school or many.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }
