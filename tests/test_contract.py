"""The API against its OpenAPI document: schemathesis generates requests from /api/v1/openapi.json (valid
ones, and ones the document says are invalid), sends them to the app in process, and checks every answer
with all of its checks: no server error, every status, header, content type and body as documented,
invalid input refused, valid input not refused, no access without the token.

It runs as an admin and as a teacher, against the run's PostgreSQL and Redis. Each generated request runs
inside a savepoint that is rolled back afterwards, so every request meets the seeded demo school as it
is, and the data other tests rely on is never changed. `make test` sends FUZZ_EXAMPLES (default 6)
random requests per operation besides the document's own boundary cases, the same ones each run;
`make fuzz` sends many more, with a new seed each run (it prints the seed).
"""

import os
import re
import time

import pytest
import schemathesis

from app.core.redisconn import LIMITER_DB, make_client
from app.core.security import decode_access_token
from app.extensions import db
from tests.conftest import PASSWORD

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
RANDOM = os.environ.get("FUZZ_RANDOM") == "1"  # make fuzz: a new seed each run
ROLES = ("admin", "teacher")
ONLY = os.environ.get(
    "FUZZ_ONLY"
)  # a regular expression: fuzz only the operations ("POST /api/v1/...") it finds

pytestmark = pytest.mark.contract


class Caller:
    """A logged-in demo user; logs in again when a generated request ended its session (a logout, a
    password or role change: the database change is rolled back, the Redis revocation is not)."""

    def __init__(self, app, role):
        self.app, self.email = app, f"{role}@demo-academy.test"
        self.revocations = app.extensions["revocations"]
        self.limits = make_client(app, LIMITER_DB)
        self.login()

    def login(self):
        # From an address of its own: generated logins count failures against the fuzzer's address.
        client = self.app.test_client()
        resp = client.post(
            "/api/v1/auth/login",
            json={"email": self.email, "password": PASSWORD},
            environ_base={"REMOTE_ADDR": "127.0.0.2"},
        )
        assert resp.status_code == 200, resp.get_json()
        tokens = resp.get_json()
        self.token = tokens["access_token"]
        self.session_id = decode_access_token(self.app.config["SECRET_KEY"], self.token)["sid"]
        self.headers = {
            "Authorization": f"Bearer {self.token}",
            # The in-process client does not decode compressed answers; an HTTP client would.
            "Accept-Encoding": "identity",
        }

    def after(self, status):
        if status == 429:
            # A route budget (logins, the sensitive one) ran out: the next request starts afresh, like
            # its data. The limiter's Redis database also holds the revocations, rebuilt from the database.
            self.limits.flushdb()
        if self.revocations.is_revoked(self.session_id):
            self.limits.flushdb()
            self.login()


STATS: dict = {}

# -- valid input is accepted, unless it breaks a rule the document states ---------------------------------

BUILT_IN = schemathesis.checks.positive_data_acceptance


def _resolve(node, spec):
    while isinstance(node, dict) and "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _branches(node, spec):
    node = _resolve(node, spec)
    return [node, *(_resolve(b, spec) for b in node.get("anyOf", ()))] if isinstance(node, dict) else []


def _body_field_ruled(body, path, spec) -> bool:
    """The field at `path` ("grades", "student_id"), or a part of the body holding it, has an x-rule."""
    nodes = _branches(body, spec)
    if any("x-rule" in n for n in nodes):
        return True
    for part in path:
        found = []
        for n in nodes:
            for holder in [n, *_branches(n.get("items", {}), spec)]:
                prop = (holder.get("properties") or {}).get(part)
                if prop is not None:
                    found += _branches(prop, spec)
        if not found:
            return False
        if any("x-rule" in n for n in found):
            return True
        nodes = found
    return False


def _ruled(case, response) -> bool:
    """Every field the 422 names carries a rule the document states (x-rule, or the operation's x-rules)."""
    try:
        errors = response.json().get("errors") or {}
    except ValueError:
        return False
    op, spec = case.operation.definition.raw, case.operation.schema.raw_schema
    rules = op.get("x-rules", {})
    params = {p["name"]: p for p in op.get("parameters", [])}
    content = (op.get("requestBody") or {}).get("content", {})
    body = next(iter(content.values()), {}).get("schema", {})
    for name in errors:
        if name in rules or "x-rule" in params.get(name, {}):
            continue
        path = [] if name == "body" else re.sub(r"\[[0-9]+\]", "", name).split(".")
        if not (body and _body_field_ruled(body, path, spec)):
            return False
    return bool(errors)


def _refused_by_rule(case, response) -> bool:
    """A 400 or 410 the operation lists and explains in its x-rules, for input no schema can make valid
    (the token of an e-mailed link: not one, or spent); a JSON body the fuzzer sends is never malformed."""
    op = case.operation.definition.raw
    return (
        response.status_code in (400, 410)
        and bool(op.get("x-rules"))
        and str(response.status_code) in op.get("responses", {})
    )


def accepted_unless_ruled(ctx, response, case):
    """schemathesis's positive_data_acceptance, except for a 422 that names only fields whose rules the
    document states but JSON Schema cannot (a record that must exist, a date inside a term, a cursor the
    list gave): valid-looking input breaking those is refused, and must be. Likewise a link's token."""
    if response.status_code == 422 and _ruled(case, response):
        return None
    if _refused_by_rule(case, response):
        return None
    return BUILT_IN(ctx, response, case)


@pytest.fixture(params=ROLES)
def contract(request, app):
    # schemathesis 4.32 reads the node's private `_nodeid`, which pytest 9 no longer has.
    request.node._nodeid = request.node.nodeid
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    schema.config.generation.update(
        max_examples=EXAMPLES,
        deterministic=not RANDOM,
        database="none",
        # PostgreSQL text holds no NUL: the API refuses it with a 422 everywhere (tests/test_errors.py),
        # which the document says once rather than on every string.
        allow_x00=False,
    )
    return schema


@pytest.fixture
def caller(request, app, contract):
    role = request.node.callspec.params["contract"]
    stats = STATS.setdefault(role, {"cases": 0, "started": time.perf_counter()})
    yield Caller(app, role)
    stats["seconds"] = time.perf_counter() - stats["started"]
    slowest = sorted(stats.get("per_operation", {}).items(), key=lambda kv: -kv[1])[:5]
    print(
        f"\ncontract fuzz as {role}: {stats['cases']} requests in {stats['seconds']:.0f} s; slowest: "
        + ", ".join(f"{label} {seconds:.0f} s" for label, seconds in slowest)
    )


schema = schemathesis.pytest.from_fixture("contract")
if ONLY:
    schema = schema.include(
        lambda ctx: bool(re.search(ONLY, f"{ctx.operation.method.upper()} {ctx.operation.path}"))
    )


@schema.parametrize()
def test_api_matches_its_document(case, caller):
    stats = STATS[caller.email.split("@")[0]]
    stats["cases"] += 1
    started = time.perf_counter()
    connection = db.session.get_bind()
    db.session.remove()  # the request's session starts inside the savepoint, and ends before its rollback
    savepoint = connection.begin_nested()
    status = None
    try:
        response = case.call_and_validate(
            headers=caller.headers, excluded_checks=[BUILT_IN], additional_checks=[accepted_unless_ruled]
        )
        status = response.status_code
    finally:
        db.session.remove()
        savepoint.rollback()
        caller.after(status)
        per_op = stats.setdefault("per_operation", {})
        per_op[case.operation.label] = per_op.get(case.operation.label, 0) + time.perf_counter() - started
