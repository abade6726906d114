"""Small things a newcomer trips on: where to start (`GET /`), the docs under either spelling, ports
and settings that are written down, and logs a machine can read."""

import json
import logging
import re
import subprocess
from pathlib import Path
from urllib.parse import urljoin

from honcho.environ import expand_processes, parse_procfile

from app.core.observability import JsonFormatter
from config import VERSION

ROOT = Path(__file__).resolve().parents[1]


# --- GET / and the docs -----------------------------------------------------------------------------


def test_the_root_points_at_the_docs_the_health_checks_and_the_version(client):
    resp = client.get("/")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    body = resp.get_json()
    assert body["version"] == VERSION and re.fullmatch(r"\d+\.\d+\.\d+", VERSION)
    assert body["links"] == {
        "docs": "/api/v1/docs",
        "openapi": "/api/v1/openapi.json",
        "health_live": "/health/live",
        "health_ready": "/health/ready",
    }
    for url in body["links"].values():
        assert client.get(url).status_code == 200, url


def _page_urls(html):
    """What the docs page loads: its scripts and styles, and the spec its inline script fetches."""
    urls = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
    urls += re.findall(r'url: "([^"]+)"', html)
    return urls


def test_the_docs_page_works_with_and_without_a_trailing_slash(client):
    for address in ("/api/v1/docs", "/api/v1/docs/"):
        page = client.get(address, follow_redirects=True)
        assert page.status_code == 200 and b"SwaggerUIBundle" in page.data, address
        # A browser resolves the page's relative URLs against the address it finally shows.
        base = "http://localhost" + page.request.path
        urls = _page_urls(page.get_data(as_text=True))
        assert len(urls) == 3, urls  # the bundle, the stylesheet, the spec
        for url in urls:
            asset = client.get(urljoin(base, url))
            assert asset.status_code == 200, (address, url, urljoin(base, url))
        assert page.request.path == "/api/v1/docs"  # one address for the page


# --- JSON logs --------------------------------------------------------------------------------------


def test_json_logs_carry_no_terminal_colour_codes():
    # What werkzeug writes for a request line when it colours the status, and a bold red word.
    record = logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '127.0.0.1 - - "\x1b[32mGET / HTTP/1.1\x1b[0m" %s -  \x1b[1;31m%s\x1b[0m',
        (200, "done"),
        None,
    )
    line = JsonFormatter().format(record)
    assert "\x1b" not in line and "\\u001b" not in line and "[32m" not in line
    assert json.loads(line)["message"] == '127.0.0.1 - - "GET / HTTP/1.1" 200 -  done'


# --- settings: .env.example, README, the ports of `make up` ------------------------------------------


def _config_names():
    """Every name config.py reads with env("NAME", ...)."""
    return set(re.findall(r'\benv\(\s*"([A-Z][A-Z0-9_]*)"', (ROOT / "config.py").read_text()))


def _example_names():
    """Every setting line of .env.example: `NAME=...`, or `#NAME=...` when left at its default."""
    text = (ROOT / ".env.example").read_text()
    return re.findall(r"^#?([A-Z][A-Z0-9_]*)=", text, flags=re.M)


def _readme_settings():
    """The names in the first column of README.md's settings table."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    names = set()
    for row in re.findall(r"^\| (.+?) \|", table, flags=re.M):
        names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", row))
    return names


def test_env_example_lists_every_setting_config_reads_once():
    config, example = _config_names(), _example_names()
    assert len(config) > 60  # the pattern still finds them
    assert not config - set(example), f"missing from .env.example: {sorted(config - set(example))}"
    assert len(example) == len(set(example)), "a setting is listed twice in .env.example"


def test_every_setting_is_in_the_readme_and_env_example_names_only_real_ones():
    readme = _readme_settings()
    assert not _config_names() - readme, f"missing from README.md: {sorted(_config_names() - readme)}"
    # Beyond config.py: the processes' own (PORT, FLOWER_PORT, gunicorn's, make up's SEED_DEMO).
    unknown = set(_example_names()) - readme
    assert not unknown, f".env.example names settings README.md does not: {sorted(unknown)}"


def _procfile_args(name, env):
    """The arguments the Procfile's `name` process runs with, as honcho's shell expands them."""
    procfile = parse_procfile((ROOT / "Procfile").read_text())
    (process,) = [
        p for p in expand_processes(procfile.processes, env=env, port=5000) if p.name == f"{name}.1"
    ]
    out = subprocess.run(
        ["sh", "-c", f'set -- {process.cmd}; printf "%s\\n" "$@"'],
        env={"PATH": "/usr/bin:/bin", **process.env},
        capture_output=True,
        text=True,
        check=True,
    )
    return process.env, out.stdout.split()


def test_make_up_ports_are_settings():
    env, _ = _procfile_args("web", {})
    assert env["PORT"] == "5000"  # honcho's default for the first process; gunicorn.conf.py reads it
    env, _ = _procfile_args("web", {"PORT": "8123"})
    assert env["PORT"] == "8123"
    assert re.search(r"^bind = .*'PORT'", (ROOT / "gunicorn.conf.py").read_text(), flags=re.M)
    _, args = _procfile_args("flower", {})
    assert "--port=5555" in args
    _, args = _procfile_args("flower", {"FLOWER_PORT": "6123"})
    assert "--port=6123" in args
    assert {"PORT", "FLOWER_PORT"} <= _readme_settings()
    up = (ROOT / "Makefile").read_text().split("\nup: $(STAMP)", 1)[1].split("\n\n", 1)[0]
    assert "$${PORT:-5000}" in up and "$${FLOWER_PORT:-5555}" in up
