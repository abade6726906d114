"""OneRoster 1.2 REST on the scale data: EXPLAIN ANALYZE of every filter and sort the service supports,
and the time to page through every user with limit=1000 (issue 15: index-served, under a minute).

    python bench/oneroster_plans.py               # plans, as Markdown (for docs/BENCHMARKS.md)
    python bench/oneroster_plans.py --paging      # page through /users, print the time and the count
    python bench/oneroster_plans.py --paging --base-url http://127.0.0.1:8000   # against a server

Runs as a OneRoster client of the Scale School (`flask seed scale`): a client with every scope is made
for the run and revoked at the end. bench/run.py can call `plans_markdown()` and `page_users()`.
The filters come from the collections' own declarations (app/oneroster/rostering.py, gradebook.py), so
a new filterable field is measured without editing this file.
"""

import argparse
import base64
import json
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script, like bench/soak.py

from sqlalchemy import select  # noqa: E402

from app import create_app  # noqa: E402
from app.core.tenancy import set_current_institution  # noqa: E402
from app.extensions import db  # noqa: E402
from app.institutions.models import Institution  # noqa: E402
from app.oneroster import gradebook, rostering  # noqa: E402
from app.oneroster.clients import SCOPES, create_client, revoke_client  # noqa: E402
from app.oneroster.models import OneRosterClient  # noqa: E402
from bench.plans import BIG_TABLES, SMALL_TABLE_ROWS, capture_plans  # noqa: E402

R, G = "/ims/oneroster/rostering/v1p2", "/ims/oneroster/gradebook/v1p2"
SCALE_SLUG = "scale-school"
COLLECTIONS = (
    (R, "orgs", rostering.ORGS),
    (R, "academicSessions", rostering.SESSIONS),
    (R, "courses", rostering.COURSES),
    (R, "classes", rostering.CLASSES),
    (R, "users", rostering.USERS),
    (R, "enrollments", rostering.ENROLLMENTS),
    (R, "demographics", rostering.DEMOGRAPHICS_COLL),
    (G, "categories", gradebook.CATEGORIES),
    (G, "lineItems", gradebook.LINE_ITEMS),
    (G, "results", gradebook.RESULTS),
)


def _value(record: dict, name: str):
    """A field's value in a record as the API shows it ("course.sourcedId" -> record["course"]...)."""
    value = record
    for part in name.split("."):
        if isinstance(value, list):
            value = value[0] if value else None
        value = value.get(part) if isinstance(value, dict) else None
    return value


def paths_for(client, token) -> list[str]:
    """One request per (collection, filterable field) with a value taken from a real record, one per
    sortable field, and the delta request (dateLastModified>...)."""
    auth = {"Authorization": f"Bearer {token}"}
    out = []
    for base, name, coll in COLLECTIONS:
        first = client.get(f"{base}/{name}?limit=1", headers=auth).get_json().get(name) or [{}]
        record = first[0]
        out.append(f"{base}/{name}?limit=100")
        for field, spec in coll.fields.items():
            value = _value(record, field)
            if value is None:
                continue
            value = str(value).lower() if spec.kind == "bool" else str(value)
            op = (
                ">" if field == "dateLastModified" else "~" if spec.kind == "str" and "Name" in field else "="
            )
            text = value[:3] if op == "~" else value
            filt = quote(f"{field}{op}'{text}'")
            out.append(f"{base}/{name}?limit=100&filter={filt}")
            out.append(f"{base}/{name}?limit=100&sort={field}")
    return out


def _client_token(app):
    """A client of the Scale School with every scope, and a token from POST /oauth/token."""
    with app.app_context():
        iid = db.session.execute(select(Institution.id).where(Institution.slug == SCALE_SLUG)).scalar_one()
        made, secret = create_client(iid, "bench", list(SCOPES))
        db.session.commit()
        ident, client_id = made.id, made.client_id
    basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    resp = app.test_client().post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"}
    )
    return ident, resp.get_json()["access_token"]


def _revoke(app, ident):
    with app.app_context():
        made = db.session.get(OneRosterClient, ident)
        set_current_institution(made.institution_id)  # the audit row of the revocation is the school's
        revoke_client(made)
        db.session.commit()


HOW_SERVED = """\
How a page is read (app/oneroster/query.py `list_answer`; indexes of migrations `0014_oneroster_indexes`
and `0016_oneroster_rows`): the filter, the order and `LIMIT offset+limit` go into every branch of the
collection's UNION ALL, so each branch reads a per-school index in the requested order and stops; the
outer query merges the branches' first rows. Enrollments and classes, whose fields are computed from
several tables (a section's `title`/`classCode`/`status`/`dateLastModified`, an enrollment's
`status`/`dateLastModified`/`sourcedId`), are read from the rows migration 0016 keeps, one index per
sortable field. `sourcedId='student-N'` and the reference filters (`user.sourcedId`,
`class.sourcedId`, `course.sourcedId`) are id probes; `~` on names is served by trigram indexes;
low-cardinality filters (`status='active'`, `enabledUser`, `sex`, `role`) match most of a school, so
their page stops early in index order but their X-Total-Count reads every row that matches; a whole
collection's X-Total-Count counts every row of the school (a sequential or index-only scan, whichever
the planner finds cheaper), listed apart below.

"""


def plans_markdown(app=None) -> str:
    """EXPLAIN ANALYZE of every OneRoster filter and sort, with a line naming any sequential scan of a
    large table (as bench/plans.py does for the native API), after a paragraph saying how a page is
    read and what no index serves."""
    app = app or create_app()
    app.config["RESPONSE_CACHE_ENABLED"] = False
    client = app.test_client()
    ident, token = _client_token(app)
    try:
        with app.app_context():
            return HOW_SERVED + capture_plans(
                client, token, paths_for(client, token), BIG_TABLES, SMALL_TABLE_ROWS, split_counts=True
            )
    finally:
        _revoke(app, ident)


def page_users(base_url=None, limit=1000, app=None) -> dict:
    """Page through every user (`Link: rel="next"`), in-process or against a running server; returns
    {"users", "pages", "seconds"}."""
    app = app or create_app()
    ident, token = _client_token(app)
    auth = {"Authorization": f"Bearer {token}"}
    url = f"{R}/users?limit={limit}"
    users = pages = 0
    start = time.perf_counter()
    try:
        client = app.test_client() if base_url is None else None
        while url:
            if client is not None:
                resp = client.get(url, headers=auth)
                body, link = resp.get_json(), resp.headers.get("Link", "")
            else:
                req = urllib.request.Request(base_url.rstrip("/") + url, headers=auth)
                with urllib.request.urlopen(req) as resp:  # noqa: S310 - the operator's own server
                    body, link = json.load(resp), resp.headers.get("Link", "")
            users += len(body["users"])
            pages += 1
            nxt = [p for p in link.split(", ") if p.endswith('rel="next"')]
            url = nxt[0].split(">")[0].lstrip("<").split("://", 1)[-1] if nxt else None
            url = url[url.index("/") :] if url else None
    finally:
        _revoke(app, ident)
    return {"users": users, "pages": pages, "seconds": round(time.perf_counter() - start, 2)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paging", action="store_true", help="time paging through every user instead")
    ap.add_argument("--base-url", help="a running server (default: the app in-process)")
    ap.add_argument("--limit", type=int, default=1000)
    args = ap.parse_args(argv)
    if args.paging:
        print(json.dumps(page_users(args.base_url, args.limit)))
    else:
        print(plans_markdown())


if __name__ == "__main__":
    sys.exit(main())
