from app.core.openapi import build_spec
from app.people.schemas import StudentDetailOut, StudentOut


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
