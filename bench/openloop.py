"""Open-loop load at a constant arrival rate, latency measured from each request's intended send time.

wrk (closed loop) sends a connection's next request only when its last answer is in: a server that
stalls for a second gets no requests during that second, and the stall shows up as one slow request
instead of the thousand that real clients, arriving on their own clock, would have waited through
("coordinated omission"). Here request i is due at t0 + i / rate whatever happened before; each gets
its own connection (the API's gunicorn sync workers close every connection anyway) and its latency is
answer time - due time, so time spent queued behind a stall, in the kernel's accept backlog or in
this generator, counts. How late the generator itself was sending is reported too (send_lag_*):
when that is not small beside the latencies, the machine, not the server, was the bottleneck.

    python bench/openloop.py --url http://127.0.0.1:8000 --rate 300 --seconds 10 \
        --requests FILE [--token T]

FILE: one request per line, "PATH" (GET) or "METHOD<TAB>PATH<TAB>JSON BODY", used round robin.
Prints one JSON object: the rate asked and achieved, p50/p90/p99/p99.9/max in ms, errors.
"""

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


def load_requests(path, host, token):
    out = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) == 1:
                method, target, body = "GET", parts[0], b""
            elif len(parts) == 2:  # bench/run.py's roll-call file: "path<TAB>body", PUT
                method, (target, body) = "PUT", (parts[0], parts[1].encode())
            else:
                method, target, body = parts[0], parts[1], parts[2].encode()
            head = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close", "Accept: */*"]
            if token:
                head.append(f"Authorization: Bearer {token}")
            if body:
                head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
            out.append(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    if not out:
        raise SystemExit(f"{path}: no requests")
    return out


async def one(host, port, raw, timeout):
    """Send raw, read the whole answer (the server closes); the status code, or None on failure."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(raw)
            data = await reader.read()  # to EOF: Connection: close
        return int(data[9:12]) if data.startswith(b"HTTP/1.") else None
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()


def pct(sorted_ms, q):
    if not sorted_ms:
        return None
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 2)


async def drive(url, requests, rate, seconds, timeout, max_in_flight):
    u = urlsplit(url)
    host, port = u.hostname, u.port or 80
    total = int(rate * seconds)
    lat_ms, lag_ms, statuses = [], [], {}
    errors = 0
    slots = asyncio.Semaphore(max_in_flight)

    async def fire(i, due):
        nonlocal errors
        async with slots:  # past max_in_flight a request waits here, and its wait counts
            status = await one(host, port, requests[i % len(requests)], timeout)
        done = time.perf_counter()
        lat_ms.append((done - due) * 1000)
        statuses[status] = statuses.get(status, 0) + 1
        if status is None or status >= 400:
            errors += 1

    tasks = []
    first_sent = last_sent = 0.0
    t0 = time.perf_counter() + 0.05
    for i in range(total):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        await asyncio.sleep(max(0.0, delay))  # yields even when late, so due requests go out
        last_sent = time.perf_counter()
        first_sent = first_sent or last_sent
        lag_ms.append((last_sent - due) * 1000)
        tasks.append(asyncio.ensure_future(fire(i, due)))
    await asyncio.gather(*tasks)
    lat_ms.sort()
    lag_ms.sort()
    return {
        "rate": rate,
        "seconds": seconds,
        "requests": total,
        # the rate the sends really went out at, first to last
        "achieved_rps": round((total - 1) / (last_sent - first_sent), 1)
        if total > 1 and last_sent > first_sent
        else None,
        "p50_ms": pct(lat_ms, 0.50),
        "p90_ms": pct(lat_ms, 0.90),
        "p99_ms": pct(lat_ms, 0.99),
        "p999_ms": pct(lat_ms, 0.999),
        "max_ms": round(lat_ms[-1], 2) if lat_ms else None,
        "errors": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))},
        "send_lag_p99_ms": pct(lag_ms, 0.99),
        "send_lag_max_ms": round(lag_ms[-1], 2) if lag_ms else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8000")
    ap.add_argument("--requests", required=True, help="file of requests (see the module docstring)")
    ap.add_argument("--rate", type=float, required=True, help="requests per second")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--token", default=None, help="bearer token")
    ap.add_argument("--timeout", type=float, default=10, help="per request; a timeout is an error")
    ap.add_argument("--max-in-flight", type=int, default=2000)
    args = ap.parse_args()
    u = urlsplit(args.url)
    requests = load_requests(args.requests, u.netloc, args.token)
    try:
        import uvloop  # installed with the peers (bench/requirements.txt): less CPU per request

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(drive(args.url, requests, args.rate, args.seconds, args.timeout, args.max_in_flight))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
