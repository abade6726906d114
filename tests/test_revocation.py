"""Revocation is never lost: the database is the authority, and a revocation Redis did not confirm is
not undone when Redis comes back (a real redis-server, paused with SIGSTOP)."""

import os
import signal
import socket
import subprocess
import time

import pytest
import redis as redis_lib

from scripts.testservices import find_redis
from tests.conftest import PASSWORD

pytestmark = pytest.mark.slow  # starts a redis-server of its own


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own, so pausing it stalls nobody else."""
    port = _free_port()
    proc = subprocess.Popen(
        [find_redis(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis_lib.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis_lib.ConnectionError:
            time.sleep(0.05)
    yield proc, url
    os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait()


def _app(url):
    from app import create_app

    return create_app("testing", REDIS_URL=url, RATELIMIT_API="100000 per 15 minutes")


def _get_me(client, token):
    return client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


def test_a_logout_while_redis_stalls_is_not_undone_when_it_resumes(own_redis, demo):
    proc, url = own_redis
    web = _app(url).test_client()
    tokens = web.post(
        "/api/v1/auth/login", json={"email": "teacher@demo-academy.test", "password": PASSWORD}
    ).get_json()
    assert _get_me(web, tokens["access_token"]).status_code == 200  # the Redis copy is built and trusted

    os.kill(proc.pid, signal.SIGSTOP)
    try:
        logout = web.post(
            "/api/v1/auth/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert logout.status_code == 204
    finally:
        os.kill(proc.pid, signal.SIGCONT)

    # Redis is back with its old "complete" marker and without this revocation.
    assert _get_me(web, tokens["access_token"]).status_code == 401
    # Another app process, which never saw Redis fail, refuses it too: the database said so.
    other = _app(url).test_client()
    assert _get_me(other, tokens["access_token"]).status_code == 401


def test_a_live_session_stays_live_after_redis_recovers(own_redis, demo):
    proc, url = own_redis
    web = _app(url).test_client()
    gone = web.post("/api/v1/auth/login", json={"email": "teacher@demo-academy.test", "password": PASSWORD})
    kept = web.post("/api/v1/auth/login", json={"email": "admin@demo-academy.test", "password": PASSWORD})
    gone, kept = gone.get_json()["access_token"], kept.get_json()["access_token"]
    assert _get_me(web, kept).status_code == 200
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        web.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {gone}"})
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert _get_me(web, kept).status_code == 200
    assert _get_me(web, gone).status_code == 401
