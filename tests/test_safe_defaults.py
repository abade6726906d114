"""Safe by default: signing keys, error bodies, /metrics, security headers, CORS, the docs page,
and the production processes (Procfile)."""

import base64
import hashlib
import logging
import re
import secrets
import stat
from html.parser import HTMLParser
from pathlib import Path

import pytest

from app import create_app
from config import TESTING_SECRET_KEY, origin_list, secret_key_problem
from tests.conftest import assert_problem

ROOT = Path(__file__).resolve().parents[1]
STRONG = secrets.token_urlsafe(32)


@pytest.fixture
def production(monkeypatch, tmp_path):
    """create_app("production", ...) on the embedded database in a fresh instance dir."""
    monkeypatch.setenv("INSTANCE_DIR", str(tmp_path / "instance"))
    monkeypatch.setenv("SECRET_KEY", STRONG)
    for name in ("DATABASE_URL", "REDIS_URL", "METRICS_TOKEN", "CORS_ORIGINS", "HSTS_MAX_AGE"):
        monkeypatch.delenv(name, raising=False)

    def make(**overrides):
        return create_app("production", **overrides)

    return make


# --- the signing key --------------------------------------------------------------------------------


def test_development_without_a_key_makes_one_per_instance_kept_0600_and_reused(monkeypatch, tmp_path):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("INSTANCE_DIR", str(tmp_path / "one"))
    first = create_app("development").config["SECRET_KEY"]
    key_file = tmp_path / "one" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == first
    assert first != "dev-insecure-key-change-me"  # the old fixed key, which signed forged tokens
    assert secret_key_problem(first) is None  # as strong as production asks for
    assert create_app("development").config["SECRET_KEY"] == first  # the next start reuses it
    monkeypatch.setenv("INSTANCE_DIR", str(tmp_path / "two"))
    assert create_app("development").config["SECRET_KEY"] != first  # another instance, another key


@pytest.mark.parametrize(
    "key",
    [
        "a" * 32,  # one character
        "ab" * 20,  # a short piece repeated
        "Xk3$" * 10,
        "abcdefghijklmnopqrstuvwxyz012345",  # predictable steps
        "password1234password1234password",
        secrets.token_urlsafe(16),  # random but short (22 characters)
        "dev-insecure-key-change-me",
        TESTING_SECRET_KEY,  # published in this repository
        "",
    ],
)
def test_production_refuses_weak_keys_naming_the_setting(production, monkeypatch, key):
    monkeypatch.setenv("SECRET_KEY", key)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        production()


def test_production_accepts_random_keys(production, monkeypatch):
    for _ in range(50):
        key = secrets.token_urlsafe(32)
        assert secret_key_problem(key) is None, key
    assert secret_key_problem(secrets.token_hex(32)) is None
    monkeypatch.setenv("SECRET_KEY", secrets.token_urlsafe(32))
    assert production().config["ENV_NAME"] == "production"


# --- error bodies -----------------------------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.parametrize("mode", ["development", "testing", "production"])
def test_a_500_never_carries_the_exception_text_only_the_log_does(mode, production):
    app = production() if mode == "production" else create_app(mode)
    logger, seen = logging.getLogger("schoolhouse.errors"), _Records()
    logger.addHandler(seen)  # after create_app, which sets up the root logger's handlers

    @app.get("/boom")
    def boom():
        raise RuntimeError("SELECT secret FROM users WHERE email = 'x@y.test'")

    boom.is_public = True

    try:
        resp = app.test_client().get("/boom")
    finally:
        logger.removeHandler(seen)
    body = assert_problem(resp, 500)
    text = resp.get_data(as_text=True)
    assert "SELECT" not in text and "RuntimeError" not in text and "x@y.test" not in text
    # The log has it all, under the request id the answer gave.
    assert seen.records and body["request_id"] in seen.records[-1].getMessage()
    assert "SELECT secret" in str(seen.records[-1].exc_info[1])


# --- /metrics ---------------------------------------------------------------------------------------


def test_production_keeps_metrics_closed_without_a_token(production):
    resp = production().test_client().get("/metrics")
    body = assert_problem(resp, 403)
    assert "METRICS_TOKEN" in body["detail"]


def test_production_metrics_open_only_to_their_token(production):
    client = production(METRICS_TOKEN="m-" + STRONG).test_client()
    assert_problem(client.get("/metrics"), 401)
    assert_problem(client.get("/metrics", headers={"Authorization": "Bearer nope"}), 401)
    ok = client.get("/metrics", headers={"Authorization": f"Bearer m-{STRONG}"})
    assert ok.status_code == 200 and b"schoolhouse_" in ok.data


# --- security headers -------------------------------------------------------------------------------

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def _assert_security_headers(resp):
    h = resp.headers
    assert h["X-Content-Type-Options"] == "nosniff", resp.status_code
    assert h["X-Frame-Options"] == "DENY"
    assert h["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]


def test_every_answer_carries_the_security_headers(client, admin):
    answers = [
        client.get("/health/live"),  # 200
        admin.get("/students?limit=1"),  # 200 JSON, through admission
        admin.get("/students?limit=1"),  # the same from the cache
        client.get("/api/v1/students"),  # 401
        client.get("/api/v1/no-such-thing"),  # 404
        admin.put("/students"),  # 405
        client.post("/api/v1/auth/login", json={}),  # 422
        client.get("/api/v1/openapi.json"),
        client.get("/api/v1/docs/assets/swagger-ui.css"),
    ]
    for resp in answers:
        _assert_security_headers(resp)
    assert answers[1].headers["Content-Security-Policy"] == API_CSP  # JSON: nothing may load
    assert all("Strict-Transport-Security" not in r.headers for r in answers)  # not outside production


def test_production_adds_hsts(production):
    client = production().test_client()
    for resp in (client.get("/health/live"), client.get("/api/v1/students")):
        _assert_security_headers(resp)
        assert resp.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


class _Assets(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.styles, self.inline = [], [], []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in a
            if "src" in a:
                self.scripts.append(a["src"])
        if tag == "link" and a.get("rel") == "stylesheet":
            self.styles.append(a["href"])

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.inline.append(data)


def test_the_docs_page_works_under_its_policy_and_keeps_no_token(client):
    page = client.get("/api/v1/docs")
    _assert_security_headers(page)
    csp = dict(d.strip().split(" ", 1) for d in page.headers["Content-Security-Policy"].split(";"))
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
    assert "unsafe-eval" not in page.headers["Content-Security-Policy"]
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    html = page.get_data(as_text=True)
    assert "persistAuthorization" not in html  # tokens typed into the page stay out of localStorage
    found = _Assets()
    found.feed(html)
    assert found.scripts and found.styles and len(found.inline) == 1
    # Every script and style comes from this site ('self'), and each is served.
    for url in found.scripts + found.styles:
        assert not re.match(r"^(https?:)?//", url), url
        assert client.get("/api/v1/" + url).status_code == 200, url
    assert "'self'" in csp["script-src"] and "'self'" in csp["style-src"]
    # The one inline script is allowed by its hash, and the spec it loads is fetched from this site.
    digest = base64.b64encode(hashlib.sha256(found.inline[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp["script-src"]
    assert "'self'" in csp["connect-src"] and client.get("/api/v1/openapi.json").status_code == 200


# --- CORS -------------------------------------------------------------------------------------------

ALLOWED = "https://app.school.example"


def test_no_cross_origin_access_by_default(client):
    resp = client.get("/health/live", headers={"Origin": ALLOWED})
    assert "Access-Control-Allow-Origin" not in resp.headers
    pre = client.options(
        "/api/v1/students", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"}
    )
    assert "Access-Control-Allow-Origin" not in pre.headers


def test_cors_allows_only_the_listed_origins():
    app = create_app("testing", CORS_ORIGINS=[ALLOWED])
    client = app.test_client()
    ok = client.post(
        "/api/v1/auth/login",
        json={"email": "nobody@x.test", "password": "x"},
        headers={"Origin": ALLOWED},
    )
    assert ok.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "X-Request-ID" in ok.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Credentials" not in ok.headers  # bearer tokens, no cookies
    refused = client.get("/api/v1/openapi.json", headers={"Origin": "https://evil.example"})
    assert refused.status_code == 200 and "Access-Control-Allow-Origin" not in refused.headers


def test_cors_preflight_for_an_allowed_and_a_refused_origin():
    client = create_app("testing", CORS_ORIGINS=[ALLOWED]).test_client()
    ask = {
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    pre = client.options("/api/v1/students/1", headers={"Origin": ALLOWED, **ask})
    assert pre.status_code == 200
    assert pre.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "PATCH" in pre.headers["Access-Control-Allow-Methods"]
    assert {"authorization", "content-type"} <= {
        h.strip().lower() for h in pre.headers["Access-Control-Allow-Headers"].split(",")
    }
    _assert_security_headers(pre)
    other = client.options("/api/v1/students/1", headers={"Origin": "https://evil.example", **ask})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_cors_origins_setting_takes_exact_origins_only():
    assert origin_list(" https://a.example , http://localhost:3000/ ") == [
        "https://a.example",
        "http://localhost:3000",
    ]
    assert origin_list(None) == []
    for bad in ("*", "https://*.example", "a.example", "https://a.example/path"):
        with pytest.raises(RuntimeError, match="CORS_ORIGINS"):
            origin_list(bad)


# --- how it is started ------------------------------------------------------------------------------


def test_every_procfile_process_runs_in_production_mode():
    lines = [ln for ln in (ROOT / "Procfile").read_text().splitlines() if ln and not ln.startswith("#")]
    assert {ln.split(":", 1)[0] for ln in lines} == {"web", "worker", "beat", "flower"}
    for ln in lines:
        assert ln.split(":", 1)[1].strip().startswith("APP_ENV=production "), ln
