"""The access declaration of every operation in the OpenAPI document, and docs/ACCESS.md made from it.

Each view declares who may call it and the rule that reaches its records (`@roles(..., reach=...)`, or
`@public`, app/core/auth.py). `operations(app)` pairs every operation of the document with that
declaration; `render(app)` writes the matrix (scripts/access_matrix.py prints it; a test fails when
docs/ACCESS.md differs), and tests/test_access_walk.py walks the same list.
"""

import re
from dataclasses import dataclass

from app.core.auth import OPERATOR, ROLES, WHOLE_SCHOOL, Reach, declared_access
from app.core.openapi import build_spec

COLUMNS = (*ROLES, OPERATOR)  # the platform operator belongs to no school: its own column

METHOD_ORDER = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    path: str  # as the document writes it: /api/v1/students/{ident}
    operation_id: str
    public: bool
    roles: tuple
    reach: Reach | None

    @property
    def name(self):
        return f"{self.method} {self.path}"


def _views(app) -> dict:
    """(METHOD, path as the document writes it) -> view function, from the route table."""
    views = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            views[(method, path)] = app.view_functions[rule.endpoint]
    return views


def operations(app) -> list[Operation]:
    """Every operation of the OpenAPI document with its view's declaration; an operation whose view
    declares nothing is an error (every view must say who may call it)."""
    out = []
    with app.app_context():
        spec = build_spec(app)
    views = _views(app)
    for path, ops in spec["paths"].items():
        for method in sorted(ops, key=METHOD_ORDER.index):
            access = declared_access(views[(method.upper(), path)])
            if access is None:
                raise LookupError(f"{method.upper()} {path} declares no roles: add @roles(..., reach=...)")
            public = bool(access.get("public"))
            out.append(
                Operation(
                    method.upper(),
                    path,
                    ops[method]["operationId"],
                    public,
                    () if public else tuple(access["roles"]),
                    None if public else access["reach"],
                )
            )
    return out


def _row(cells):
    return "| " + " | ".join(cells) + " |"


def render(app) -> str:
    ops = operations(app)
    reaches = {op.reach.name: op.reach for op in ops if op.reach is not None}
    used: dict[str, set] = {}  # reach -> the roles some operation grants under it
    for op in ops:
        if op.reach is not None:
            used.setdefault(op.reach.name, set()).update(op.roles)
    lines = [
        "# Who may do what",
        "",
        "Generated from the declarations on the views (`@roles(..., reach=...)` and `@public` in",
        "`app/core/auth.py`; the reaches and their rules in `app/access/rules.py`) by",
        "`python scripts/access_matrix.py > docs/ACCESS.md`. Do not edit by hand: a test fails when this",
        "page differs from the declarations. `tests/test_access_walk.py` calls every operation below as every",
        "role, on records inside and outside the role's reach and in another school.",
        "",
        "- ✓: the role may call the operation, on the records its reach gives it (the first table; a blank",
        "  cell: no operation of that reach is open to the role).",
        "- —: the role may not: 403.",
        "- A record outside the caller's reach answers 404, exactly as a missing one or one of another school.",
        "- Public operations need no token (the signed link is the credential of a download).",
        "",
        "## Reaches",
        "",
        _row(["reach", *COLUMNS]),
        _row(["---"] * (len(COLUMNS) + 1)),
    ]
    for name in sorted(reaches):
        words = reaches[name].by_role
        lines.append(_row([name, *(words[r] if r in used[name] else "" for r in COLUMNS)]))
    lines += [
        "",
        f"`{WHOLE_SCHOOL}`: every record of the caller's own school, never another school's.",
        "",
        "## Operations",
        "",
        _row(["operation", "reach", *COLUMNS]),
        _row(["---"] * (len(COLUMNS) + 2)),
    ]
    for op in ops:
        if op.public:
            cells = ["public"] * len(COLUMNS)
            reach = "public"
        else:
            cells = ["✓" if r in op.roles else "—" for r in COLUMNS]
            reach = op.reach.name
        lines.append(_row([f"`{op.method} {op.path}`", reach, *cells]))
    return "\n".join(lines) + "\n"
