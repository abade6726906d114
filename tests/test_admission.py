"""Admission (app/core/admission.py): the token, the API tier, the session check and the cache lookup
cost one Redis round trip, and a cache hit never skips a rule the view would apply."""

import pytest
import redis


@pytest.fixture
def redis_commands(monkeypatch):
    """Counts the round trips the app makes to Redis (each packed send on a real connection)."""
    sent = []
    original = redis.connection.AbstractConnection.send_packed_command

    def send(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", send)

    class Counter:
        def reset(self):
            sent.clear()

        def calls(self):
            names = []
            for packed in sent:
                first = b"".join(packed) if isinstance(packed, list) else packed
                names.append(first.split(b"\r\n")[2].decode().lower())  # RESP: *n, $len, NAME
            return names

    return Counter()


def test_a_cached_read_costs_one_redis_round_trip(admin, demo, redis_commands):
    path = f"/students/{demo['demo_student_id']}"
    assert admin.get(path).headers["X-Cache"] == "miss"
    redis_commands.reset()
    hit = admin.get(path)
    assert hit.status_code == 200 and hit.headers["X-Cache"] == "hit"
    assert redis_commands.calls() == ["evalsha"]


def test_an_uncached_read_costs_one_redis_round_trip(admin, redis_commands):
    admin.get("/auth/me")  # the Redis copy of revocations is built by the first check
    redis_commands.reset()
    assert admin.get("/auth/me").status_code == 200
    assert redis_commands.calls() == ["evalsha"]


def test_a_cache_hit_still_refuses_a_role_the_view_refuses(app, admin, student, demo):
    """An entry stored for the admin scope is never served to another role, and a role the view
    refuses gets 403 even when the path is cached for someone else."""
    path = "/users?limit=5"
    assert admin.get(path).status_code == 200
    assert admin.get(path).headers["X-Cache"] == "hit"
    refused = student.get(path)
    assert refused.status_code == 403 and "X-Cache" not in refused.headers


def test_an_ended_session_is_refused_before_the_cache_answers(as_user, demo):
    api = as_user("teacher@demo-academy.test")
    path = f"/classes/{demo['demo_class_id']}/students"
    assert api.get(path).status_code == 200
    assert api.get(path).headers["X-Cache"] == "hit"
    assert api.post("/auth/logout").status_code == 204
    resp = api.get(path)
    assert resp.status_code == 401 and b"first_name" not in resp.data


def test_a_logged_read_costs_no_extra_round_trip_and_is_listed(admin, teacher, demo, redis_commands):
    # A teacher's read of a student's record (with the guardians' contacts) is a disclosure
    # (app/privacy): logged in admission's one round trip, for a cache hit too, then listed.
    path = f"/students/{demo['demo_student_id']}"
    teacher.get(path)
    redis_commands.reset()
    hit = teacher.get(path)
    assert hit.status_code == 200 and hit.headers["X-Cache"] == "hit"
    assert redis_commands.calls() == ["evalsha"]
    reads = admin.get(f"{path}/disclosures").get_json()["data"]
    mine = [r for r in reads if r["actor_id"] == demo["demo_user_ids"]["teacher"]]
    assert [r["record"] for r in mine] == ["student_guardians", "student_guardians"]
    assert admin.get(f"{path}/disclosures").get_json()["data"] == reads  # moved once, not twice
