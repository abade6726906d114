"""Failed-login limits (app/core/loginlimit.py): guessing stops, the owner is not locked out.

Windows: account + address (RATELIMIT_LOGIN, 5 per 15 minutes), address (RATELIMIT_LOGIN_ADDRESS),
account from everywhere (RATELIMIT_LOGIN_ACCOUNT, the slow brake). Addresses are set per request
through the WSGI environ (`REMOTE_ADDR`); nothing is sent over a network.
"""

import threading

from app import create_app
from app.auth import services
from tests.conftest import PASSWORD, assert_problem

LOGIN = "/api/v1/auth/login"
OWNER = "teacher@demo-academy.test"
CLOSED = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def attempt(client, address, email=OWNER, password="wrong"):
    return client.post(
        LOGIN, json={"email": email, "password": password}, environ_base={"REMOTE_ADDR": address}
    )


def test_concurrent_wrong_logins_check_no_more_passwords_than_the_limit(app, committing, monkeypatch):
    """6 clients x 3 rounds of simultaneous wrong passwords: exactly 5 are checked (401), the rest
    are refused (429) before any password is looked at. (An unknown account: the threads write nothing.)"""
    checked = []
    real_verify = services.verify_password

    def counting_verify(password_hash, password):
        checked.append(1)
        return real_verify(password_hash, password)

    monkeypatch.setattr(services, "verify_password", counting_verify)
    threads, rounds = 6, 3
    start = threading.Barrier(threads)
    codes = []

    def guess():
        client = app.test_client()
        for _ in range(rounds):
            start.wait()  # every round's requests go at once
            codes.append(attempt(client, "127.0.0.9", email="no-such-person@demo-academy.test").status_code)

    workers = [threading.Thread(target=guess) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(codes) == [401] * 5 + [429] * (threads * rounds - 5), codes
    assert len(checked) == 5


def test_the_owner_logs_in_from_their_own_address_while_a_guesser_is_blocked():
    app = create_app("testing", RATELIMIT_LOGIN_ACCOUNT="8 per hour")
    client = app.test_client()
    assert [attempt(client, "127.0.0.2").status_code for _ in range(5)] == [401] * 5
    # The owner, from their own address, still logs in.
    owner = attempt(client, "127.0.0.3", password=PASSWORD)
    assert owner.status_code == 200, owner.get_json()
    assert owner.get_json()["user"]["email"] == OWNER
    # The guesser's address is blocked for this account, even with the right password...
    body = assert_problem(attempt(client, "127.0.0.2", password=PASSWORD), 429)
    assert "for this account from this address" in body["detail"]
    # ...and hammering on is refused without counting towards the account-wide brake (8 here),
    # so the owner still gets in.
    assert {attempt(client, "127.0.0.2").status_code for _ in range(10)} == {429}
    assert attempt(client, "127.0.0.3", password=PASSWORD).status_code == 200


def test_the_account_wide_brake_stops_guessing_spread_over_addresses():
    app = create_app("testing", RATELIMIT_LOGIN_ACCOUNT="6 per hour")
    client = app.test_client()
    codes = [attempt(client, f"127.0.1.{n}").status_code for n in (1, 1, 2, 2, 3, 3)]
    assert codes == [401] * 6  # no address reached its own limit of 5
    resp = attempt(client, "127.0.1.4")
    body = assert_problem(resp, 429)
    assert "for this account" in body["detail"] and int(resp.headers["Retry-After"]) > 0
    # The brake holds the owner too (the price of stopping a spread-out guesser), until it resets.
    assert_problem(attempt(client, "127.0.1.5", password=PASSWORD), 429)
    # Other accounts are untouched.
    other = attempt(client, "127.0.1.5", email="admin@demo-academy.test", password=PASSWORD)
    assert other.status_code == 200


def test_one_address_guessing_many_accounts_hits_the_address_limit():
    app = create_app("testing", RATELIMIT_LOGIN_ADDRESS="4 per 15 minutes")
    client = app.test_client()
    emails = [f"user{n}@demo-academy.test" for n in range(5)]
    codes = [attempt(client, "127.0.2.1", email=e).status_code for e in emails]
    assert codes == [401] * 4 + [429]
    assert "from this address" in attempt(client, "127.0.2.1", email=emails[0]).get_json()["detail"]
    # Another address is not affected.
    assert attempt(client, "127.0.2.2", password=PASSWORD).status_code == 200


def test_answers_that_check_no_password_count_nothing(client):
    """A body that fails validation is a 422 and uses up no attempt."""
    for _ in range(8):
        resp = client.post(LOGIN, json={"email": OWNER, "password": ""})
        assert_problem(resp, 422, "password")
    assert attempt(client, "127.0.0.1", password=PASSWORD).status_code == 200


def test_redis_down_the_owner_still_logs_in_from_another_address():
    app = create_app("testing", REDIS_URL=CLOSED)
    client = app.test_client()
    assert [attempt(client, "127.0.3.1").status_code for _ in range(6)] == [401] * 5 + [429]
    assert attempt(client, "127.0.3.2", password=PASSWORD).status_code == 200
