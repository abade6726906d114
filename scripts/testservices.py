#!/usr/bin/env python3
"""Throwaway PostgreSQL and Redis servers for the test suite (stdlib only).

    python3 scripts/testservices.py start --dir DIR   # prints TEST_DATABASE_URL=... / TEST_REDIS_URL=...
    python3 scripts/testservices.py stop  --dir DIR   # stops both and removes DIR

`start` finds the server binaries (PATH, then /usr/lib/postgresql/*/bin, newest first), installs them
with apt-get when they are missing and we are root, and fails loudly when they still cannot be found:
the suite never silently skips. Both servers listen on free ports on 127.0.0.1 only. PostgreSQL refuses
to run as root, so as root it runs as the `postgres` system user (created if missing).

Layout of DIR: env (the URLs, as shell lines), state.json (what `stop` needs), pg/ (cluster, socket,
log), redis/ (pid file, log). A DIR left over by a crashed run is stopped and wiped before starting.
"""

import argparse
import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

DB_NAME = "schoolhouse_test"
PG_USER = "postgres"  # the database superuser name (initdb -U), and the OS user when we are root
START_TIMEOUT = 60.0
PORT_ATTEMPTS = 3


def log(msg):
    print(f"testservices: {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"ERROR: {msg}")
    sys.exit(1)


def is_root():
    return os.geteuid() == 0


# ---------------------------------------------------------------- binaries


def _version_key(path):
    name = os.path.basename(os.path.dirname(path))  # /usr/lib/postgresql/<ver>/bin
    return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)


def find_pg_bindir():
    """A directory holding initdb, pg_ctl and postgres; PATH first, then newest /usr/lib/postgresql."""
    needed = ("initdb", "pg_ctl", "postgres")
    candidates = []
    found = shutil.which("initdb")
    if found:
        candidates.append(os.path.dirname(os.path.realpath(found)))
        candidates.append(os.path.dirname(found))
    lib = "/usr/lib/postgresql"
    if os.path.isdir(lib):
        dirs = [os.path.join(lib, d, "bin") for d in os.listdir(lib)]
        candidates += sorted((d for d in dirs if os.path.isdir(d)), key=_version_key, reverse=True)
    for d in candidates:
        if all(os.access(os.path.join(d, b), os.X_OK) for b in needed):
            return d
    return None


def find_redis():
    return shutil.which("redis-server") or next(
        (
            p
            for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server")
            if os.access(p, os.X_OK)
        ),
        None,
    )


def apt_install(packages):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing {' '.join(packages)} with apt-get (this takes a minute once per machine)")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *packages]):
        # Output to stderr: stdout of `start` is reserved for the URLs.
        r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr)
        if r.returncode != 0:
            log(f"`{' '.join(cmd)}` exited {r.returncode}")
            return


def ensure_binaries():
    pg_bindir, redis = find_pg_bindir(), find_redis()
    missing = ([] if pg_bindir else ["postgresql"]) + ([] if redis else ["redis-server"])
    if missing and is_root() and shutil.which("apt-get"):
        apt_install(missing)
        pg_bindir, redis = find_pg_bindir(), find_redis()
    problems = []
    if not pg_bindir:
        problems.append(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in PATH or "
            "/usr/lib/postgresql/*/bin; install them, e.g. `apt-get install postgresql`"
        )
    if not redis:
        problems.append("redis-server not found in PATH; install it, e.g. `apt-get install redis-server`")
    if problems:
        die("; ".join(problems) + ("" if is_root() else " (not root, so no automatic install was tried)"))
    return pg_bindir, redis


# ---------------------------------------------------------------- running as the postgres user


def ensure_pg_os_user():
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        pass
    log(f"creating system user {PG_USER}")
    r = subprocess.run(
        [
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            PG_USER,
        ],
        stdout=sys.stderr,
        stderr=sys.stderr,
    )
    if r.returncode != 0:
        die(f"could not create the {PG_USER} system user (useradd exited {r.returncode})")
    return pwd.getpwnam(PG_USER)


def as_pg_user(cmd):
    """The command line that runs cmd as the postgres OS user when we are root, else as ourselves."""
    if not is_root():
        return cmd
    if shutil.which("runuser"):
        return ["runuser", "-u", PG_USER, "--", *cmd]
    return ["setpriv", f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups", "--", *cmd]


def run_pg(cmd, cwd, check=True, timeout=120):
    r = subprocess.run(
        as_pg_user(cmd), cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    if check and r.returncode != 0:
        die(f"`{' '.join(cmd)}` exited {r.returncode}:\n{r.stdout}{r.stderr}")
    return r


def traversable_by_others(path):
    """True when every directory from / down to path has the execute bit for 'other'."""
    path = os.path.realpath(path)
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except FileNotFoundError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


# ---------------------------------------------------------------- sockets and protocols


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (all held open together, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


class PgError(Exception):
    pass


class MiniPg:
    """Just enough of the PostgreSQL wire protocol (v3, trust auth, simple queries) for setup."""

    def __init__(self, port, user, database, timeout=5.0):
        self._started = False
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        params = (
            b"".join(
                k.encode() + b"\0" + v.encode() + b"\0" for k, v in (("user", user), ("database", database))
            )
            + b"\0"
        )
        body = struct.pack("!i", 196608) + params
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        self._until_ready()

    def _read(self):
        kind, length = struct.unpack("!ci", _recv_exact(self.sock, 5))
        return kind, _recv_exact(self.sock, length - 4)

    def _until_ready(self):
        error = None
        while True:
            kind, payload = self._read()
            if kind == b"E":
                fields = dict((f[:1], f[1:].decode(errors="replace")) for f in payload.split(b"\0") if f)
                error = PgError(f"{fields.get(b'C', '?')}: {fields.get(b'M', payload)}")
                if not self._started:
                    raise error  # errors during startup end the connection
            elif kind == b"R" and struct.unpack("!i", payload[:4])[0] != 0:
                raise PgError("server asked for a password; expected trust authentication")
            elif kind == b"Z":
                self._started = True
                if error:
                    raise error
                return

    def query(self, sql):
        body = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", len(body) + 4) + body)
        self._until_ready()

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.sendall(b"X" + struct.pack("!i", 4))
        self.sock.close()


def redis_command(port, *args, timeout=2.0):
    """Send one command, return the raw reply bytes (RESP)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        data = s.recv(65536)
        if data.startswith(b"$"):  # bulk string: read all of it
            header, _, rest = data.partition(b"\r\n")
            want = int(header[1:])
            while want >= 0 and len(rest) < want + 2:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
            return rest[: max(want, 0)]
        return data


def wait_for(check, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ConnectionError, PgError) as e:
            last = e
        time.sleep(0.05)
    die(f"{what} did not become ready within {timeout:.0f}s (last error: {last})")


# ---------------------------------------------------------------- processes


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def kill_and_wait(pid, sig, timeout):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- start / stop


def paths(d):
    return {
        "env": os.path.join(d, "env"),
        "state": os.path.join(d, "state.json"),
        "pg": os.path.join(d, "pg"),
        "redis": os.path.join(d, "redis"),
    }


def stop_pg(pg_root, bindir):
    data = os.path.join(pg_root, "data")
    pidfile = os.path.join(data, "postmaster.pid")
    pid = read_pid(pidfile)
    if pid is None or not pid_alive(pid):
        return
    if bindir and os.access(os.path.join(bindir, "pg_ctl"), os.X_OK):
        r = run_pg(
            [os.path.join(bindir, "pg_ctl"), "stop", "-D", data, "-m", "immediate", "-w", "-t", "30"],
            cwd="/",
            check=False,
            timeout=60,
        )
        if r.returncode == 0 or not pid_alive(pid):
            return
        log(f"pg_ctl stop failed ({r.returncode}): {r.stderr.strip()}; signalling postmaster {pid}")
    if ("postgres" in cmdline(pid) or "postmaster" in cmdline(pid)) and not kill_and_wait(
        pid, signal.SIGQUIT, 10
    ):
        kill_and_wait(pid, signal.SIGKILL, 5)


def stop_redis(redis_dir):
    pid = read_pid(os.path.join(redis_dir, "redis.pid"))
    if pid is None or not pid_alive(pid) or "redis" not in cmdline(pid):
        return
    # SIGTERM makes redis shut down; with --save "" it writes nothing.
    if not kill_and_wait(pid, signal.SIGTERM, 10):
        kill_and_wait(pid, signal.SIGKILL, 5)


def stop(d, quiet=False):
    d = os.path.abspath(d)
    if not os.path.lexists(d):
        if not quiet:
            log(f"{d} does not exist; nothing to stop")
        return
    p = paths(d)
    state = {}
    try:
        with open(p["state"]) as f:
            state = json.load(f)
    except (OSError, ValueError):
        pass
    pg_root = state.get("pg_root") or (os.path.realpath(p["pg"]) if os.path.isdir(p["pg"]) else None)
    bindir = state.get("pg_bindir") or find_pg_bindir()
    if pg_root:
        stop_pg(pg_root, bindir)
    stop_redis(state.get("redis_dir") or p["redis"])
    # The cluster (and, with a very long DIR, the socket dir) may live outside DIR: remove them too.
    outside = [
        x
        for x in (pg_root, state.get("pg_sockdir"))
        if x and not os.path.realpath(x).startswith(os.path.realpath(d) + os.sep)
    ]
    for x in outside:
        shutil.rmtree(x, ignore_errors=True)
    shutil.rmtree(d, ignore_errors=True)
    if os.path.lexists(d):
        log(f"warning: could not remove all of {d}")
    elif not quiet:
        log(f"stopped and removed {d}")


def start_pg(d, bindir, state):
    p = paths(d)
    # The cluster directory must be reachable by the postgres user when we are root. DIR itself is
    # ours (throwaway), so open it up; if a parent is closed (e.g. under /root), use a /tmp dir.
    if is_root():
        pw = ensure_pg_os_user()
        os.chmod(d, 0o755)
        if traversable_by_others(d):
            pg_root = p["pg"]
            os.mkdir(pg_root)
        else:
            pg_root = tempfile.mkdtemp(prefix="schoolhouse-pg-", dir="/tmp")
            os.chmod(pg_root, 0o755)
            os.symlink(pg_root, p["pg"])
            log(f"{d} is not reachable by user {PG_USER}; the cluster lives in {pg_root}")
        os.chown(pg_root, pw.pw_uid, pw.pw_gid)
    else:
        pg_root = p["pg"]
        os.mkdir(pg_root)
    state["pg_root"] = pg_root
    write_state(d, state)

    sockdir = os.path.join(pg_root, "run")
    if len(os.path.join(sockdir, ".s.PGSQL.65535")) > 100:  # unix socket paths are limited to ~107
        sockdir = tempfile.mkdtemp(prefix="shpg-", dir="/tmp")
        state["pg_sockdir"] = sockdir
    else:
        os.mkdir(sockdir)
    if is_root():
        os.chown(sockdir, pw.pw_uid, pw.pw_gid)
    data = os.path.join(pg_root, "data")
    logfile = os.path.join(pg_root, "postgres.log")

    run_pg(
        [
            os.path.join(bindir, "initdb"),
            "-D",
            data,
            "-U",
            PG_USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        cwd=pg_root,
    )
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(
            "\n# schoolhouse test cluster (scripts/testservices.py)\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{sockdir}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "max_connections = 100\n"
        )

    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_ports(1)[0]
        r = run_pg(
            [
                os.path.join(bindir, "pg_ctl"),
                "start",
                "-D",
                data,
                "-l",
                logfile,
                "-w",
                "-t",
                str(int(START_TIMEOUT)),
                "-o",
                f"-p {port}",
            ],
            cwd=pg_root,
            check=False,
            timeout=START_TIMEOUT + 30,
        )
        if r.returncode == 0:
            break
        tail = _tail(logfile)
        if attempt < PORT_ATTEMPTS and "already in use" in tail:
            log(f"port {port} was taken meanwhile; retrying on another")
            continue
        die(f"PostgreSQL did not start (pg_ctl exited {r.returncode}):\n{r.stderr}{tail}")

    def pg_ready():
        MiniPg(port, PG_USER, "postgres").close()
        return True

    wait_for(pg_ready, START_TIMEOUT, f"PostgreSQL on 127.0.0.1:{port}")
    conn = MiniPg(port, PG_USER, "postgres")
    try:
        conn.query(f"CREATE DATABASE {DB_NAME} TEMPLATE template0 ENCODING 'UTF8'")
    finally:
        conn.close()
    MiniPg(port, PG_USER, DB_NAME).close()
    state.update(pg_port=port)
    write_state(d, state)
    return f"postgresql://{PG_USER}@127.0.0.1:{port}/{DB_NAME}"


def start_redis(d, redis_bin, state):
    rdir = paths(d)["redis"]
    os.makedirs(rdir, exist_ok=True)
    pidfile, logfile = os.path.join(rdir, "redis.pid"), os.path.join(rdir, "redis.log")
    state["redis_dir"] = rdir
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_ports(1)[0]
        r = subprocess.run(
            [
                redis_bin,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                rdir,
                "--pidfile",
                pidfile,
                "--logfile",
                logfile,
                "--databases",
                "16",
            ],
            cwd=rdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            die(f"redis-server exited {r.returncode}:\n{r.stdout}{r.stderr}")
        deadline = time.monotonic() + START_TIMEOUT
        ok = False
        while time.monotonic() < deadline:
            pid = read_pid(pidfile)
            if pid and not pid_alive(pid):
                break  # it died (most likely the port was taken)
            if pid:
                try:
                    # Make sure it is *our* server answering on that port, not someone else's.
                    info = redis_command(port, "INFO", "server").decode(errors="replace")
                    if re.search(rf"^process_id:{pid}\s*$", info, re.M) and redis_command(
                        port, "PING"
                    ).startswith(b"+PONG"):
                        ok = True
                        break
                except OSError:
                    pass
            time.sleep(0.05)
        if ok:
            state.update(redis_port=port)
            write_state(d, state)
            return f"redis://127.0.0.1:{port}/0"
        stop_redis(rdir)
        tail = _tail(logfile)
        if attempt < PORT_ATTEMPTS and "in use" in tail:
            log(f"port {port} was taken meanwhile; retrying on another")
            continue
        die(f"redis-server on 127.0.0.1:{port} did not become ready:\n{tail}")


def _tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def write_state(d, state):
    tmp = paths(d)["state"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2)
    os.replace(tmp, paths(d)["state"])


def start(d):
    t0 = time.monotonic()
    d = os.path.abspath(d)
    pg_bindir, redis_bin = ensure_binaries()
    if os.path.lexists(d):
        if os.path.isdir(d) and not os.path.islink(d) and os.listdir(d):
            log(f"{d} exists (left over from an earlier run?); stopping what is there and wiping it")
        stop(d, quiet=True)
        if os.path.lexists(d):
            die(f"could not clear {d}")
    os.makedirs(d)
    state = {"pg_bindir": pg_bindir, "redis_bin": redis_bin}
    write_state(d, state)
    ok = False
    try:
        db_url = start_pg(d, pg_bindir, state)
        redis_url = start_redis(d, redis_bin, state)
        lines = f"TEST_DATABASE_URL={db_url}\nTEST_REDIS_URL={redis_url}\n"
        with open(paths(d)["env"], "w") as f:
            f.write(lines)
        ok = True
    finally:
        if not ok:  # don't leave half-started servers behind
            log(f"start failed; logs were under {d} (now stopping and removing it)")
            for name in ("postgres.log",):
                tail = _tail(os.path.join(state.get("pg_root", ""), name))
                if tail:
                    log(f"last lines of {name}:\n{tail}")
            stop(d, quiet=True)
    sys.stdout.write(lines)
    sys.stdout.flush()
    log(
        f"PostgreSQL ({os.path.basename(os.path.dirname(pg_bindir))}) and Redis ready in "
        f"{time.monotonic() - t0:.1f}s; stop with: {sys.argv[0]} stop --dir {d}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("start", "stop"):
        sp = sub.add_parser(name)
        sp.add_argument("--dir", required=True, help="working directory for this pair of servers")
    args = ap.parse_args(argv)
    if args.cmd == "start":
        start(args.dir)
    else:
        stop(args.dir)


if __name__ == "__main__":
    main()
