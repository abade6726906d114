import pytest
from openapi_spec_validator import validate

from app.core.auth import ROLES
from app.core.openapi import build_spec
from app.people.schemas import StudentDetailOut, StudentOut
from tests.conftest import assert_problem


def test_openapi_document_covers_every_api_route(app, client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = set(spec["paths"])
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/") and "/docs" not in rule.rule and "openapi" not in rule.rule:
            path = rule.rule.replace("<int:", "<").replace("<", "{").replace(">", "}")
            assert path in documented, f"{rule.rule} is missing from the OpenAPI document"
    post = spec["paths"]["/api/v1/students"]["post"]
    schema = spec["components"]["schemas"][
        post["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    ]
    assert schema["additionalProperties"] is False and "admission_number" in schema["required"]


def test_docs_page_and_assets_are_served(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and b"SwaggerUIBundle" in page.data
    assert client.get("/api/v1/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_responses_match_their_documented_shape(admin, demo):
    item = admin.get("/students?limit=1").get_json()["data"][0]
    assert set(item) == set(StudentOut.model_fields)
    StudentOut.model_validate(item)
    detail = admin.get(f"/students/{demo['demo_student_id']}").get_json()
    assert set(detail) == set(StudentDetailOut.model_fields)
    StudentDetailOut.model_validate(detail)


def test_spec_builds_without_a_request(app):
    with app.app_context():
        assert "/api/v1/auth/login" in build_spec()["paths"]


def test_query_parameters_come_from_the_endpoints_declarations(client):
    spec = client.get("/api/v1/openapi.json").get_json()

    def params(path):
        return {
            p["name"]: p for p in spec["paths"][f"/api/v1{path}"]["get"]["parameters"] if p["in"] == "query"
        }

    students = params("/students")
    assert {"id", "-id", "last_name", "-last_name", "created_at"} <= set(students["sort"]["schema"]["enum"])
    assert "password" not in students["sort"]["schema"]["enum"]
    assert "q" in students and students["grade_level"]["schema"]["type"] == "integer"
    assert students["limit"]["schema"]["maximum"] == 200
    assert "q" not in params("/subjects") and "q" not in params("/invoices")  # lists without search
    assert params("/invoices")["status"]["schema"]["enum"] == ["open", "partially_paid", "paid", "void"]
    assert params("/classes/{ident}/students")["sort"]["schema"]["default"] == "last_name"
    assert params("/students/{ident}/results")["term_id"]["required"] is True


# -- the document is the contract (issue 10, finding 8) ---------------------------------------------------


@pytest.fixture
def spec(client):
    return client.get("/api/v1/openapi.json").get_json()


def _operations(spec):
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            yield path, method.upper(), op


def test_the_document_is_valid_for_the_version_it_declares(spec):
    assert spec["openapi"] == "3.1.0"  # pydantic writes JSON Schema 2020-12, the dialect of OpenAPI 3.1
    validate(spec)
    assessment = spec["components"]["schemas"]["AssessmentCreate"]["properties"]["max_score"]
    assert {"type": "integer", "minimum": 1, "maximum": 99999} in assessment["anyOf"]


def test_every_operation_documents_the_answers_it_can_give(spec, app):
    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "request_id"} <= set(problem["required"])
    assert "errors" in problem["properties"]
    for path, method, op in _operations(spec):
        codes = set(op["responses"])
        public = op["security"] == []
        json_body = "application/json" in op.get("requestBody", {}).get("content", {})
        assert "503" in codes and ("401" in codes or public), (method, path)
        if public and path.endswith("/download"):  # the signed token is the credential
            assert "401" not in codes, (method, path)
        if json_body:
            assert {"400", "413", "415", "422"} <= codes, (method, path)
        if not public and set(op["x-roles"]) != set(ROLES):
            assert "403" in codes, (method, path)
        if not public and method in ("POST", "PUT", "PATCH", "DELETE"):
            assert "409" in codes, (method, path)
        if "{" in path:
            assert "404" in codes, (method, path)
        for code, answer in op["responses"].items():
            if code >= "400":
                assert answer["content"] == {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                }
        if "429" in codes:
            assert op["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    for login in ("/api/v1/auth/login", "/api/v1/operator/login"):
        answers = spec["paths"][login]["post"]["responses"]
        assert "401" in answers and "429" in answers, login


def test_security_and_roles_are_stated_per_operation(spec, app):
    views = {rule.endpoint: app.view_functions[rule.endpoint] for rule in app.url_map.iter_rules()}
    for path, method, op in _operations(spec):
        view = views[op["operationId"].rsplit("_", 1)[0]]
        if getattr(view, "is_public", False):
            assert op["security"] == [] and "x-roles" not in op, (method, path)
        else:
            assert op["security"] == [{"bearer": []}], (method, path)
            assert op["x-roles"] == list(getattr(view, "allowed_roles", None) or ROLES), (method, path)
    assert spec["paths"]["/api/v1/users"]["get"]["x-roles"] == ["admin"]


def test_uploads_idempotency_and_filters_are_documented(spec):
    upload = spec["paths"]["/api/v1/imports/students"]["post"]["requestBody"]["content"]
    form = spec["components"]["schemas"][upload["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert form["properties"]["file"]["format"] == "binary" and form["required"] == ["file"]
    for path, method in (
        ("/api/v1/payments", "post"),
        ("/api/v1/classes/{ident}/attendance/{day}", "put"),
        ("/api/v1/assessments/{ident}/grades", "put"),
    ):
        headers = [p for p in spec["paths"][path][method]["parameters"] if p["in"] == "header"]
        assert [h["name"] for h in headers] == ["Idempotency-Key"], path
    students = {p["name"]: p for p in spec["paths"]["/api/v1/students"]["get"]["parameters"]}
    assert students["status"]["schema"]["enum"] == ["active", "graduated", "withdrawn"]
    assert "x-rule" in students["cursor"]
    users = {p["name"]: p for p in spec["paths"]["/api/v1/users"]["get"]["parameters"]}
    assert users["role"]["schema"]["enum"] == list(ROLES)


def test_patch_fields_are_nullable_exactly_where_null_clears_them(spec, admin, demo):
    update = spec["components"]["schemas"]["StudentUpdate"]["properties"]
    assert update["first_name"]["type"] == "string" and "default" not in update["first_name"]
    assert {"type": "null"} in update["gender"]["anyOf"]
    sid = demo["demo_student_id"]
    resp = admin.patch(f"/students/{sid}", json={"first_name": None})
    assert_problem(resp, 422, "first_name")
    assert resp.get_json()["errors"]["first_name"] == "must not be null"
    resp = admin.patch(f"/students/{sid}", json={"gender": None, "grade_level": None})
    assert resp.status_code == 200 and resp.get_json()["gender"] is None
    assert resp.get_json()["grade_level"] is None


def test_unknown_filter_values_and_loose_types_are_refused(admin, demo):
    assert_problem(admin.get("/students?status=expelled"), 422, "status")
    assert_problem(admin.get("/students?limit=%2B5"), 422, "limit")
    assert admin.get("/students?limit=5.0").status_code == 200  # 5.0 is an integer in JSON Schema
    body = {"first_name": "Ada", "last_name": "Lovelace", "admission_number": "C-1", "grade_level": "7"}
    assert_problem(admin.post("/students", json=body), 422, "grade_level")
    body["grade_level"] = 7.0
    assert admin.post("/students", json=body).status_code == 201
    huge = admin.patch(
        f"/students/{demo['demo_student_id']}",
        data='{"grade_level": 1180591620717411303424}',
        content_type="application/json",
    )
    assert_problem(huge, 422, "grade_level")
