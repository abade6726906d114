"""Reference apps for `make bench`, served by gunicorn with the same gunicorn.conf.py as the API.

- GET /ping             bare Flask
- GET /redis            bare Flask returning the bytes stored at REF_REDIS_KEY (the API's own answer)
- GET /roster/<id>      bare Flask + psycopg2 running the API's roster SQL, serialised with jsonify
- GET|POST /replay/<set>/<i>  bare Flask + psycopg2 running, in one transaction, the statements the
                        API's request i of that set ran (captured by `bench/plans.py --replay-sql` into
                        REF_REPLAY_FILE), every result serialised with jsonify: the API's SQL without
                        the API (search, term attendance, roll call)
"""

import json
import os

import psycopg2
import redis
from flask import Flask, Response, jsonify

app = Flask(__name__)
_state = {}


def _pg():
    if "pg" not in _state:
        url = os.environ["DATABASE_URL"].replace("postgresql+psycopg2://", "postgresql://")
        _state["pg"] = psycopg2.connect(url)
        _state["pg"].autocommit = True
    return _state["pg"]


def _redis():
    if "redis" not in _state:
        _state["redis"] = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _state["redis"]


@app.get("/ping")
def ping():
    return "pong"


@app.get("/redis")
def cached_bytes():
    return Response(_redis().get(os.environ.get("REF_REDIS_KEY", "bench:ref")), mimetype="application/json")


@app.get("/roster/<int:class_id>")
def roster(class_id):
    # The statement the API runs for GET /classes/{id}/students?limit=50 (captured by bench/plans.py).
    with _pg().cursor() as cur:
        cur.execute(os.environ["REF_ROSTER_SQL"])  # the literal statement, for the benchmarked class
        cols = [c.name for c in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    return jsonify({"data": rows[:50], "next_cursor": None})


def _replays():
    if "replays" not in _state:
        with open(os.environ["REF_REPLAY_FILE"]) as fh:
            _state["replays"] = json.load(fh)
        url = os.environ["DATABASE_URL"].replace("postgresql+psycopg2://", "postgresql://")
        _state["tx"] = psycopg2.connect(url)  # not autocommit: one transaction per request
    return _state["replays"]


@app.route("/replay/<name>/<int:i>", methods=["GET", "POST"])
def replay(name, i):
    statements = _replays()[name][i]
    conn, results = _state["tx"], []
    try:
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
                if cur.description is not None:
                    cols = [c.name for c in cur.description]
                    results.append([dict(zip(cols, r)) for r in cur.fetchall()])
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    return jsonify({"results": results})
