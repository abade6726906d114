"""bench/openloop.py (issue 14): requests go out on the arrival clock, and a server's stall counts for
every request due during it — not once, as in a closed loop (coordinated omission)."""

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class _Stalling(BaseHTTPRequestHandler):
    """One request at a time; the first waits a second (a stall), the rest answer at once."""

    seen = 0

    def do_GET(self):
        type(self).seen += 1
        if type(self).seen == 1:
            time.sleep(1.0)
        body = b"{}"
        self.send_response(200 if self.path == "/ok" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.slow  # a subprocess
def test_open_loop_counts_a_stall_for_every_request_due_during_it(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Stalling)  # single-threaded: the stall blocks the rest
    server.request_queue_size = 128
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        (tmp_path / "reqs.txt").write_text("/ok\n/ok\n/ok\n/missing\n")
        out = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "openloop.py"),
                "--url",
                f"http://127.0.0.1:{server.server_address[1]}",
                "--requests",
                str(tmp_path / "reqs.txt"),
                "--rate",
                "40",
                "--seconds",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        server.shutdown()
        server.server_close()
    r = json.loads(out.stdout)
    assert r["requests"] == 80
    assert r["statuses"] == {"200": 60, "404": 20}
    assert r["errors"] == 20  # a 4xx is an error
    # ~40 requests were due during the 1 s stall, waiting up to a second each: the median request
    # waited a good part of it (a closed loop would have shown one slow request out of many fast).
    assert r["p50_ms"] > 200, r
    assert r["max_ms"] >= 900, r
    assert r["achieved_rps"] > 30, r  # the generator kept sending on its clock through the stall
