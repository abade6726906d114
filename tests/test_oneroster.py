"""OneRoster 1.2 (app/oneroster), exercised as a client written from the specification would: client
credentials, the rostering and gradebook collections of both demo schools, delta sync, writes through
the gradebook service, scopes, revocation and the binding's error shape.

The OneRoster and OAuth operations follow 1EdTech's and the OAuth RFCs' contracts (form bodies, HTTP
Basic, imsx_StatusInfo errors), so they are not in Schoolhouse's OpenAPI document, the access walk or the
contract run; `test_every_oneroster_operation_is_declared_and_refuses_school_roles` walks them here.
"""

import base64
import re

import pytest
from sqlalchemy import select

from app.academics.models import Enrolment
from app.audit.models import AuditEntry
from app.core.auth import ONEROSTER, ROLES
from app.extensions import db
from app.oneroster.clients import SCOPES
from app.oneroster.common import CLIENT_SCHOOL

R = "/ims/oneroster/rostering/v1p2"
G = "/ims/oneroster/gradebook/v1p2"
ALL = " ".join(SCOPES)


def _basic(cid, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()}


class OneRoster:
    def __init__(self, client, token):
        self.client, self.token = client, token

    def get(self, path, **kw):
        return self.client.get(path, headers={"Authorization": f"Bearer {self.token}"}, **kw)

    def send(self, method, path, body=None):
        return self.client.open(
            path, method=method, json=body, headers={"Authorization": f"Bearer {self.token}"}
        )

    def every(self, path, key, limit=50):
        """Follow rel="next" to the end; checks X-Total-Count against what came."""
        out, url = [], f"{path}{'&' if '?' in path else '?'}limit={limit}"
        total = None
        while url:
            resp = self.get(url)
            assert resp.status_code == 200, resp.get_json()
            total = int(resp.headers["X-Total-Count"])
            out += resp.get_json()[key]
            nxt = re.search(r'<([^>]+)>; rel="next"', resp.headers.get("Link", ""))
            url = nxt.group(1).replace("http://localhost", "") if nxt else None
        assert len(out) == total
        return out


def make_client(admin, scopes=SCOPES):
    resp = admin.post("/oneroster/clients", json={"name": "LMS", "scopes": list(scopes)})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def token(client, made, scope=None):
    form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    resp = client.post("/oauth/token", data=form, headers=_basic(made["client_id"], made["client_secret"]))
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0
    return body


@pytest.fixture
def demo_or(client, admin):
    return OneRoster(client, token(client, make_client(admin))["access_token"])


@pytest.fixture
def hill_or(client, hillside_admin):
    return OneRoster(client, token(client, make_client(hillside_admin))["access_token"])


def test_token_endpoint_follows_oauth(client, admin):
    made = make_client(admin, ["roster-core.readonly", "gradebook.readonly"])
    body = token(client, made, scope="roster-core.readonly")
    assert body["scope"] == "roster-core.readonly"
    bad = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                      headers=_basic(made["client_id"], "wrong"))  # fmt: skip
    assert bad.status_code == 401 and bad.get_json()["error"] == "invalid_client"
    wider = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "gradebook.createput"},
                        headers=_basic(made["client_id"], made["client_secret"]))  # fmt: skip
    assert wider.status_code == 400 and wider.get_json()["error"] == "invalid_scope"
    grant = client.post("/oauth/token", data={"grant_type": "password"},
                        headers=_basic(made["client_id"], made["client_secret"]))  # fmt: skip
    assert grant.status_code == 400 and grant.get_json()["error"] == "unsupported_grant_type"
    # a client token is no school login: the native API refuses it
    native = client.get("/api/v1/students", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert native.status_code == 403


@pytest.mark.parametrize("school", ["demo", "hillside"])
def test_a_client_pages_its_school_and_resolves_every_reference(request, school):
    api = request.getfixturevalue("demo_or" if school == "demo" else "hill_or")
    orgs = api.every(f"{R}/orgs", "orgs")
    assert len(orgs) == 1 and orgs[0]["type"] == "school"
    school_sid = orgs[0]["sourcedId"]
    sessions = {s["sourcedId"]: s for s in api.every(f"{R}/academicSessions", "academicSessions")}
    assert {s["type"] for s in sessions.values()} == {"schoolYear", "term"}
    for s in sessions.values():
        if s["parent"]:
            assert s["parent"]["sourcedId"] in sessions
    classes = {c["sourcedId"]: c for c in api.every(f"{R}/classes", "classes", limit=100)}
    courses = {c["sourcedId"] for c in api.every(f"{R}/courses", "courses")}
    for c in classes.values():
        assert c["school"]["sourcedId"] == school_sid
        assert c["course"]["sourcedId"] in courses
        assert c["terms"] and all(t["sourcedId"] in sessions for t in c["terms"])
        assert re.fullmatch(r"KG|PK|\d\d", c["grades"][0])
    users = {u["sourcedId"]: u for u in api.every(f"{R}/users", "users", limit=500)}
    assert all(not re.fullmatch(r"\d+", sid) for sid in users)
    roles = {u["roles"][0]["role"] for u in users.values()}
    assert {"student", "teacher", "administrator"} <= roles and roles & {"parent", "guardian"}
    for u in users.values():
        for agent in u["agents"]:
            assert agent["sourcedId"] in users
    assert any(u["agents"] for u in users.values() if u["roles"][0]["role"] == "student")
    enrollments = api.every(f"{R}/enrollments", "enrollments", limit=1000)
    assert enrollments
    for e in enrollments:
        assert e["user"]["sourcedId"] in users, e
        assert e["class"]["sourcedId"] in classes, e
    line_items = {li["sourcedId"]: li for li in api.every(f"{G}/lineItems", "lineItems", limit=500)}
    for r in api.every(f"{G}/results", "results", limit=1000):
        assert r["lineItem"]["sourcedId"] in line_items
        assert r["student"]["sourcedId"] in users
    one = api.get(f"{R}/classes/{next(iter(classes))}")
    assert one.status_code == 200 and "class" in one.get_json()


def test_nothing_of_the_other_school(demo_or, hill_or, demo):
    theirs = hill_or.get(f"{R}/users?limit=1").get_json()["users"][0]["sourcedId"]
    resp = demo_or.get(f"{R}/users/{theirs}")
    assert resp.status_code == 404
    assert resp.get_json()["imsx_codeMajor"] == "failure"
    assert (
        resp.get_json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"]
        == "unknownobject"
    )
    their_org = hill_or.get(f"{R}/orgs").get_json()["orgs"][0]["sourcedId"]
    assert demo_or.get(f"{R}/schools/{their_org}/classes").status_code == 404
    mine = {u["sourcedId"] for u in demo_or.every(f"{R}/students", "users", limit=1000)}
    assert (
        f"student-{demo['hillside_student_id']}" not in mine and f"student-{demo['demo_student_id']}" in mine
    )


def test_delta_after_changing_one_student_returns_that_student(demo_or, admin, demo):
    latest = demo_or.get(f"{R}/users?sort=dateLastModified&orderBy=desc&limit=1").get_json()["users"][0]
    since = latest["dateLastModified"]
    assert (
        admin.patch(f"/students/{demo['demo_student_id']}", json={"first_name": "Changed"}).status_code == 200
    )
    resp = demo_or.get(f"{R}/users?filter=dateLastModified>'{since}'")
    got = resp.get_json()["users"]
    assert [u["sourcedId"] for u in got] == [f"student-{demo['demo_student_id']}"]
    assert got[0]["givenName"] == "Changed" and resp.headers["X-Total-Count"] == "1"


def test_an_ended_enrolment_shows_as_tobedeleted(demo_or, admin, demo):
    enrolment = db.session.execute(
        select(Enrolment).where(Enrolment.student_id == demo["demo_student_id"], Enrolment.end_date.is_(None))
    ).scalar_one()
    end = enrolment.start_date.isoformat()
    resp = admin.post(f"/enrolments/{enrolment.id}/end", json={"end_date": end})
    assert resp.status_code in (200, 204), resp.get_json()
    got = demo_or.get(f"{R}/enrollments/enr-{enrolment.id}").get_json()["enrollment"]
    assert got["status"] == "tobedeleted" and got["endDate"] == end
    listed = demo_or.get(
        f"{R}/enrollments?filter=status='tobedeleted' AND user.sourcedId='student-{demo['demo_student_id']}'"
    )
    assert {e["sourcedId"] for e in listed.get_json()["enrollments"]} >= {f"enr-{enrolment.id}"}


def test_query_grammar_fields_and_sort(demo_or):
    resp = demo_or.get(
        f"{R}/users?filter=familyName~'o''brien' OR givenName='Liam'&fields=sourcedId,familyName"
    )
    assert resp.status_code == 200
    users = resp.get_json()["users"]
    assert users and all(set(u) == {"sourcedId", "familyName"} for u in users)
    names = [
        u["familyName"] for u in demo_or.get(f"{R}/teachers?sort=familyName&limit=20").get_json()["users"]
    ]
    assert names == sorted(names)
    for bad in ("familyName=='x'", "nosuch='x'", "familyName='x' AND givenName='y' OR email='z'",
                "dateLastModified>'yesterday'"):  # fmt: skip
        resp = demo_or.get(f"{R}/users", query_string={"filter": bad})
        assert resp.status_code == 400, bad
        body = resp.get_json()
        assert body["imsx_codeMajor"] == "failure" and body["imsx_severity"] == "error"
        assert (
            body["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"]
            == "invalid_filter_field"
        )
    assert demo_or.get(f"{R}/users?fields=nope").status_code == 400
    assert demo_or.get(f"{R}/users?limit=0").status_code == 400


def test_nested_collections(demo_or, demo):
    school = demo_or.get(f"{R}/orgs").get_json()["orgs"][0]["sourcedId"]
    klass = f"class-{demo['demo_class_id']}"
    students = {
        u["sourcedId"] for u in demo_or.get(f"{R}/classes/{klass}/students?limit=1000").get_json()["users"]
    }
    assert f"student-{demo['demo_student_id']}" in students
    teachers = demo_or.get(f"{R}/schools/{school}/classes/{klass}/teachers").get_json()["users"]
    assert all(t["roles"][0]["role"] == "teacher" for t in teachers) and teachers
    mine = demo_or.get(f"{R}/students/student-{demo['demo_student_id']}/classes?limit=100").get_json()[
        "classes"
    ]
    assert klass in {c["sourcedId"] for c in mine} and len(mine) > 1  # homeroom and its subjects
    assert demo_or.get(f"{R}/schools/{school}/terms").get_json()["academicSessions"]
    demographics = demo_or.get(f"{R}/demographics/student-{demo['demo_student_id']}").get_json()[
        "demographics"
    ]
    assert demographics["sex"] in ("male", "female", "unspecified")


def test_line_item_and_results_written_through_the_gradebook_show_natively(demo_or, admin, demo):
    section = f"section-{demo['demo_class_subject_id']}"
    term = f"term-{demo['demo_current_term_id']}"
    category = demo_or.get(f"{G}/categories").get_json()["categories"][0]["sourcedId"]
    sessions = demo_or.get(f"{R}/academicSessions/{term}").get_json()["academicSession"]
    body = {"lineItems": [{"sourcedId": "lms-quiz-1", "title": "LMS quiz", "class": {"sourcedId": section},
                           "category": {"sourcedId": category}, "gradingPeriod": {"sourcedId": term},
                           "dueDate": sessions["startDate"], "resultValueMax": 20}]}  # fmt: skip
    resp = demo_or.send("POST", f"{G}/classes/{section}/lineItems", body)
    assert resp.status_code == 201, resp.get_json()
    pair = resp.get_json()["sourcedIdPairs"][0]
    assert pair["suppliedSourcedId"] == "lms-quiz-1"
    li = pair["allocatedSourcedId"]
    student = f"student-{demo['demo_student_id']}"
    resp = demo_or.send("POST", f"{G}/lineItems/{li}/results",
                        {"results": [{"student": {"sourcedId": student}, "score": 17, "comment": "good"}]})  # fmt: skip
    assert resp.status_code == 201, resp.get_json()
    res = resp.get_json()["sourcedIdPairs"][0]["allocatedSourcedId"]
    assessment_id = int(li.split("-")[1])
    native = admin.get(f"/assessments/{assessment_id}/grades").get_json()["data"]
    assert [(g["student_id"], float(g["score"])) for g in native] == [(demo["demo_student_id"], 17.0)]
    assert demo_or.send("PUT", f"{G}/results/{res}", {"result": {"score": 18}}).status_code == 200
    assert demo_or.get(f"{G}/results/{res}").get_json()["result"]["score"] == 18.0
    over = demo_or.send("PUT", f"{G}/results/{res}", {"result": {"score": 25}})
    assert over.status_code == 400 and over.get_json()["imsx_codeMajor"] == "failure"
    audited = db.session.execute(
        select(AuditEntry.action, AuditEntry.entity_type).where(AuditEntry.request_id.is_not(None),
                                                               AuditEntry.entity_type.in_(("assessment", "grade")))
    ).all()  # fmt: skip
    assert (
        ("create", "assessment") in audited
        and ("create", "grade") in audited
        and ("update", "grade") in audited
    )


def test_report_card_counts_a_result_written_through_oneroster(demo_or, admin, demo):
    sid_, term_id = demo["demo_student_id"], demo["demo_current_term_id"]
    before = admin.get(f"/students/{sid_}/results?term_id={term_id}").get_json()
    card_before = admin.get(f"/students/{sid_}/report-card?term_id={term_id}").get_json()
    section = f"section-{demo['demo_class_subject_id']}"
    term = f"term-{term_id}"
    start = demo_or.get(f"{R}/academicSessions/{term}").get_json()["academicSession"]["startDate"]
    category = demo_or.get(f"{G}/categories").get_json()["categories"][0]["sourcedId"]
    li = demo_or.send("POST", f"{G}/classes/{section}/lineItems", {"lineItems": [
        {"title": "Zero", "category": {"sourcedId": category}, "gradingPeriod": {"sourcedId": term},
         "dueDate": start, "resultValueMax": 10}]}).get_json()["sourcedIdPairs"][0]["allocatedSourcedId"]  # fmt: skip
    demo_or.send(
        "POST",
        f"{G}/lineItems/{li}/results",
        {"results": [{"student": {"sourcedId": f"student-{sid_}"}, "score": 0}]},
    )
    after = admin.get(f"/students/{sid_}/results?term_id={term_id}").get_json()
    assert after != before  # the zero moved the student's term results
    card = admin.get(f"/students/{sid_}/report-card?term_id={term_id}").get_json()
    assert card["subjects"] != card_before["subjects"]  # ... and the report card the school hands out
    assert card["overall"] != card_before["overall"]


def test_scopes_gate_every_operation(client, admin, demo):
    made = make_client(admin, ["roster-core.readonly", "gradebook.readonly"])
    api = OneRoster(client, token(client, made)["access_token"])
    li = api.get(f"{G}/lineItems?limit=1").get_json()["lineItems"][0]["sourcedId"]
    resp = api.send("PUT", f"{G}/lineItems/{li}", {"lineItem": {"title": "x"}})
    assert resp.status_code == 403
    assert (
        resp.get_json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == "forbidden"
    )
    assert api.send("DELETE", f"{G}/lineItems/{li}").status_code == 403
    assert api.get(f"{R}/demographics").status_code == 403


def test_revoked_client_rotated_secret_and_revoked_token_are_refused(client, admin):
    made = make_client(admin)
    first = token(client, made)["access_token"]
    api = OneRoster(client, first)
    assert api.get(f"{R}/orgs").status_code == 200
    # RFC 7009: the client ends its own token
    client.post(
        "/oauth/revoke", data={"token": first}, headers=_basic(made["client_id"], made["client_secret"])
    )
    assert api.get(f"{R}/orgs").status_code == 401
    second = OneRoster(client, token(client, made)["access_token"])
    rotated = admin.post(f"/oneroster/clients/{made['id']}/rotate").get_json()
    assert second.get(f"{R}/orgs").status_code == 401  # rotation ends the old tokens
    made["client_secret"] = rotated["client_secret"]
    third = OneRoster(client, token(client, made)["access_token"])
    assert third.get(f"{R}/orgs").status_code == 200
    assert admin.post(f"/oneroster/clients/{made['id']}/revoke").status_code == 200
    resp = third.get(f"{R}/orgs")
    assert resp.status_code == 401 and resp.get_json()["imsx_codeMajor"] == "failure"
    again = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                        headers=_basic(made["client_id"], made["client_secret"]))  # fmt: skip
    assert again.status_code == 401
    listed = admin.get("/oneroster/clients").get_json()["data"]
    assert [c["revoked_at"] is not None for c in listed if c["id"] == made["id"]] == [True]
    assert "secret" not in str(listed)


def test_clients_of_another_school_are_out_of_reach(admin, hillside_admin):
    made = make_client(hillside_admin)
    assert admin.get(f"/oneroster/clients/{made['id']}").status_code == 404
    assert admin.post(f"/oneroster/clients/{made['id']}/revoke").status_code == 404


def test_every_oneroster_operation_is_declared_and_refuses_school_roles(app, client, as_user):
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/ims/oneroster/")]
    assert len(rules) > 40
    tokens = {role: as_user(f"{role}@demo-academy.test").tokens["access_token"] for role in ROLES}
    for rule in rules:
        view = app.view_functions[rule.endpoint]
        assert view.allowed_roles == (ONEROSTER,) and view.reach is CLIENT_SCHOOL, rule.rule
        assert set(view.oneroster_scopes) <= set(SCOPES) and view.oneroster_scopes, rule.rule
        path = re.sub(r"<(\w+)>", "x-1", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert client.open(path, method=method).status_code == 401
            for role, tok in tokens.items():
                resp = client.open(path, method=method, headers={"Authorization": f"Bearer {tok}"})
                assert resp.status_code == 403, (rule.rule, role)
                assert resp.get_json()["imsx_codeMajor"] == "failure"


def test_boolean_and_decimal_filters(demo_or):
    # found by bench/oneroster_plans.py: a boolean filter answered 500, a decimal score 400
    enabled = demo_or.get(f"{R}/users?filter=enabledUser='true'&limit=5")
    assert enabled.status_code == 200 and enabled.get_json()["users"]
    ordered = demo_or.get(f"{R}/users?filter=enabledUser>'true'")
    assert ordered.status_code == 400 and ordered.get_json()["imsx_codeMajor"] == "failure"
    scores = demo_or.get(f"{G}/results?filter=score>='0.5'&limit=5")
    assert scores.status_code == 200 and all(r["score"] >= 0.5 for r in scores.get_json()["results"])
