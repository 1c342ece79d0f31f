#!/usr/bin/env python3
"""The join benchmark of issue 13, Synapse's side: how long a homeserver takes to join, over
federation, a public room of N members hosted on Synapse.

Synapse A hosts the room (built once, cached in WORK/host, extended if N grows); by default a
fresh Synapse B (WORK/joiner, remade every run) registers a user who joins the room by alias.
With --joiner-url/--joiner-token any homeserver's client API is timed the same way instead (our
server: start it, register a user, pass its URL and the user's access token).

    python3 benches/scripts/synapse_room.py [--members 10000] [--work DIR] [--keep-host]
    python3 benches/scripts/synapse_room.py --members 10000 --keep-host --no-join  # build only
    python3 benches/scripts/synapse_room.py --members 10000 \\
        --joiner-url http://127.0.0.1:8008 --joiner-token TOKEN         # time another server

Times, each from just before `POST /_matrix/client/v3/join/{alias}`:
  join_return_s     until the join request returns (Synapse joins with partial state by
                    default, MSC3706: it returns before it has the room's full state)
  full_members_s    until `GET /rooms/{id}/joined_members` on the joiner lists all N+1 members
                    (polled every --poll seconds)
  members_api_s     until `GET /rooms/{id}/members?membership=join`, sent as soon as the join
                    returns, answers with N+1 members (Synapse holds this request until the
                    room's full state is there)
A JSON summary is printed on standard output; progress goes to standard error. Python 3.11
standard library only; Synapse comes from interop/synapse/install (cached virtualenv).
The joiner's user leaves the room at the end, so the next run expects the same count.

Every server that ever joined the room signed events in it, and a later joiner must fetch its
key (no notary is configured): Synapse B keeps its server name and signing key between runs
(its database is emptied) and is started while another server is timed; a server timed with
--joiner-url must likewise keep its name and key and be running when Synapse B is timed again
(or use a separate --work). Delete WORK to start over (A's ports are kept in WORK/host; if
they are taken, the restart fails).
"""

import argparse
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INTEROP = os.path.join(REPO, "interop", "synapse")
ALIAS_LOCALPART = "bench"


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Client:
    """A keep-alive HTTP/1.1 client of one homeserver's client API (one per thread)."""

    def __init__(self, base_url, token=None, timeout=600.0):
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https"):
            raise SystemExit(f"not an http(s) URL: {base_url}")
        self.scheme, self.netloc, self.token, self.timeout = url.scheme, url.netloc, token, timeout
        self.conn = None

    def request(self, method, path, body=None, token=None, ok=(200,)):
        token = token or self.token
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(3):
            if self.conn is None:
                cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
                self.conn = cls(self.netloc, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
            except (http.client.HTTPException, ConnectionError, TimeoutError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                continue
            try:
                payload = json.loads(raw) if raw else {}
            except ValueError:
                payload = {"raw": raw[:200].decode(errors="replace")}
            if response.status not in ok:
                raise RuntimeError(f"{method} {path}: HTTP {response.status}: {payload}")
            return payload
        raise AssertionError("unreachable")


def quote(s):
    return urllib.parse.quote(s, safe="")


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key:
                env[key] = value
    return env


def alive(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"synapse.app.homeserver" in f.read()
    except OSError:
        return False


def answers(client_url):
    try:
        Client(client_url, timeout=2).request("GET", "/_matrix/client/versions")
        return True
    except (OSError, RuntimeError, http.client.HTTPException):
        return False


def start_synapse(venv, work, reuse):
    """Starts a Synapse for WORK and returns its env. With `reuse` and a config already in
    WORK, the same config (same server name, ports and database) is started again, or the
    running one is kept; otherwise WORK is made anew by interop/synapse/start."""
    env_path = os.path.join(work, "env")
    config = os.path.join(work, "homeserver.yaml")
    if reuse and os.path.exists(env_path) and os.path.exists(config):
        env = read_env(env_path)
        if alive(env["SYNAPSE_PID"]) and answers(env["SYNAPSE_CLIENT_URL"]):
            log(f"{env['SYNAPSE_SERVER_NAME']}: already running (pid {env['SYNAPSE_PID']})")
            return env
        started = time.monotonic()
        python = os.path.join(venv, "bin", "python")
        with open(os.path.join(work, "stdout.log"), "ab") as out:
            process = subprocess.Popen(
                [python, "-m", "synapse.app.homeserver", "--config-path", config],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        env["SYNAPSE_PID"] = str(process.pid)
        with open(env_path, "w") as f:
            f.writelines(f"{k}={v}\n" for k, v in env.items())
        for _ in range(600):
            if answers(env["SYNAPSE_CLIENT_URL"]):
                log(f"{env['SYNAPSE_SERVER_NAME']}: restarted from {work} in "
                    f"{time.monotonic() - started:.1f} s")
                return env
            if process.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"synapse in {work} did not restart (ports taken?); see {work}/stdout.log")
    if os.path.exists(work):
        stop_synapse(work)
        shutil.rmtree(work)
    subprocess.run([os.path.join(INTEROP, "start"), venv, work], check=True)
    return read_env(env_path)


def start_joiner(venv, work):
    """Synapse B with the same identity every run (server name and signing key: its events
    from earlier runs stay in A's room, and whoever joins next must be able to check their
    signatures) but an empty database, so each run is a first join."""
    if not os.path.exists(os.path.join(work, "homeserver.yaml")):
        return start_synapse(venv, work, reuse=False)
    stop_synapse(work)
    for name in os.listdir(work):
        if name.startswith("homeserver.db"):
            os.remove(os.path.join(work, name))
    shutil.rmtree(os.path.join(work, "media"), ignore_errors=True)
    os.makedirs(os.path.join(work, "media"))
    return start_synapse(venv, work, reuse=True)


def stop_synapse(work):
    subprocess.run([os.path.join(INTEROP, "stop"), work], check=False)


def register(env, username, admin):
    """Registers (or logs in again) a user through the shared-secret admin API; returns the
    access token."""
    client = Client(env["SYNAPSE_CLIENT_URL"])
    nonce = client.request("GET", "/_synapse/admin/v1/register")["nonce"]
    password = "bench-" + username
    mac = hmac.new(env["SYNAPSE_SHARED_SECRET"].encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode(),
                             b"admin" if admin else b"notadmin"]))
    body = {"nonce": nonce, "username": username, "password": password, "admin": admin,
            "mac": mac.hexdigest()}
    try:
        return client.request("POST", "/_synapse/admin/v1/register", body)["access_token"]
    except RuntimeError as e:
        if "M_USER_IN_USE" not in str(e):
            raise
    login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": username},
             "password": password}
    return client.request("POST", "/_matrix/client/v3/login", login)["access_token"]


def joined_count(client, room_id):
    return len(client.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members")
               ["joined"])


def build_room(env, host_work, members, concurrency):
    """The public room on A with `members` joined users besides its creator, made or completed.
    Users are made by the admin API without a password (no bcrypt at all) and joined by the
    admin join API, `concurrency` requests at a time."""
    server = env["SYNAPSE_SERVER_NAME"]
    state_path = os.path.join(host_work, "bench-room.json")
    state = {}
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
    if "admin_token" not in state:
        state["admin_token"] = register(env, "benchadmin", admin=True)
    admin = Client(env["SYNAPSE_CLIENT_URL"], state["admin_token"])
    if "room_id" not in state:
        created = admin.request("POST", "/_matrix/client/v3/createRoom", {
            "preset": "public_chat", "visibility": "public", "name": "join benchmark",
            "room_alias_name": ALIAS_LOCALPART,
        })
        state["room_id"] = created["room_id"]
        state["alias"] = f"#{ALIAS_LOCALPART}:{server}"
        with open(state_path, "w") as f:
            json.dump(state, f)
    room_id = state["room_id"]
    joined = host_members(admin, room_id)
    wanted = [f"@u{i}:{server}" for i in range(members)]
    missing = [u for u in wanted if u not in joined]
    log(f"room {room_id} ({state['alias']}): {len(joined)} joined, {len(missing)} to add")
    started = time.monotonic()
    done = 0
    lock = threading.Lock()
    local = threading.local()

    def add(user_id):
        nonlocal done
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = Client(env["SYNAPSE_CLIENT_URL"], state["admin_token"])
        client.request("PUT", f"/_synapse/admin/v2/users/{quote(user_id)}",
                       {"displayname": user_id[1:].split(":")[0]}, ok=(200, 201))
        client.request("POST", f"/_synapse/admin/v1/join/{quote(room_id)}", {"user_id": user_id})
        with lock:
            done += 1
            if done % 500 == 0:
                rate = done / (time.monotonic() - started)
                log(f"  {done}/{len(missing)} joined ({rate:.0f}/s)")

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for future in concurrent.futures.as_completed([pool.submit(add, u) for u in missing]):
            future.result()
    seconds = time.monotonic() - started
    total = joined_count(admin, room_id)
    log(f"room has {total} joined members; added {len(missing)} in {seconds:.1f} s")
    return state, {"added": len(missing), "seconds": round(seconds, 2),
                   "seconds_per_1000": round(seconds * 1000 / len(missing), 2) if missing else None,
                   "joined_members": total}


def host_members(admin, room_id):
    return set(admin.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members")
               ["joined"])


def time_join(admin, joiner_url, token, alias, room_id, poll, timeout):
    """Times `token`'s user on the homeserver at `joiner_url` joining `alias`; see the module
    documentation for what is measured. `admin` is a client of the host with a member's token."""
    client = Client(joiner_url, token, timeout=timeout)
    user_id = client.request("GET", "/_matrix/client/v3/account/whoami")["user_id"]
    # The host's members without the joiner (whose leave of an earlier run may not have
    # reached the host), plus the joiner.
    expected = len(host_members(admin, room_id) - {user_id}) + 1
    result = {}
    members_done = threading.Event()

    t0 = time.monotonic()
    joined = client.request("POST", f"/_matrix/client/v3/join/{quote(alias)}", {})
    result["join_return_s"] = round(time.monotonic() - t0, 3)
    if joined.get("room_id") != room_id:
        raise RuntimeError(f"joined {joined.get('room_id')}, expected {room_id}")
    log(f"join returned after {result['join_return_s']} s")

    def members_api():
        c = Client(joiner_url, token, timeout=timeout)
        try:
            chunk = c.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/members"
                                     "?membership=join")["chunk"]
            result["members_api_s"] = round(time.monotonic() - t0, 3)
            result["members_api_count"] = len(chunk)
        except (OSError, RuntimeError, http.client.HTTPException) as e:
            result["members_api_error"] = str(e)[:300]
        members_done.set()

    threading.Thread(target=members_api, daemon=True).start()
    first = None
    while True:
        count = joined_count(client, room_id)
        if first is None:
            first = count
            result["joined_members_first_poll"] = count
        if count >= expected:
            result["full_members_s"] = round(time.monotonic() - t0, 3)
            break
        if time.monotonic() - t0 > timeout:
            result["full_members_s"] = None
            result["timed_out_with"] = count
            break
        time.sleep(poll)
    log(f"joined_members complete ({expected}) after {result['full_members_s']} s "
        f"(first poll saw {first})")
    members_done.wait(max(0.0, timeout - (time.monotonic() - t0)))
    result["expected_members"] = expected
    client.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/leave", {})
    # Until the host has the leave (bounded), so the joiner can be stopped.
    for _ in range(300):
        if user_id not in host_members(admin, room_id):
            break
        time.sleep(0.1)
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", type=int, default=10000, help="members besides the creator")
    p.add_argument("--work", help="work directory (default /tmp/synapse-room/n<MEMBERS>)")
    p.add_argument("--venv", help="Synapse virtualenv (default: interop/synapse/install)")
    p.add_argument("--concurrency", type=int, default=8, help="parallel admin requests")
    p.add_argument("--keep-host", action="store_true", help="leave Synapse A running")
    p.add_argument("--no-join", action="store_true", help="only build the room")
    p.add_argument("--joiner-url", "--ours-url", help="time this homeserver's client API "
                   "instead of a fresh Synapse B")
    p.add_argument("--joiner-token", "--ours-token", help="access token of a user there")
    p.add_argument("--poll", type=float, default=0.05, help="seconds between member polls")
    p.add_argument("--timeout", type=float, default=1800.0, help="give up after (seconds)")
    args = p.parse_args()
    if bool(args.joiner_url) != bool(args.joiner_token):
        p.error("--joiner-url and --joiner-token go together")

    work = args.work or f"/tmp/synapse-room/n{args.members}"
    os.makedirs(work, exist_ok=True)
    venv = args.venv or subprocess.run([os.path.join(INTEROP, "install")], check=True,
                                       capture_output=True, text=True).stdout.strip()
    host_work = os.path.join(work, "host")
    joiner_work = os.path.join(work, "joiner")
    summary = {"members": args.members, "work": work}
    host = start_synapse(venv, host_work, reuse=True)
    try:
        state, summary["build"] = build_room(host, host_work, args.members, args.concurrency)
        summary.update(host=host["SYNAPSE_SERVER_NAME"], host_client_url=host["SYNAPSE_CLIENT_URL"],
                       room_id=state["room_id"], alias=state["alias"])
        if not args.no_join:
            admin = Client(host["SYNAPSE_CLIENT_URL"], state["admin_token"])
            if args.joiner_url:
                summary["joiner"] = args.joiner_url
                # Synapse B's events of earlier runs are in the room: the joiner needs B's key.
                b_ran = os.path.exists(os.path.join(joiner_work, "homeserver.yaml"))
                if b_ran:
                    start_synapse(venv, joiner_work, reuse=True)
                try:
                    summary["join"] = time_join(admin, args.joiner_url, args.joiner_token,
                                                state["alias"], state["room_id"],
                                                args.poll, args.timeout)
                finally:
                    if b_ran:
                        stop_synapse(joiner_work)
            else:
                joiner = start_joiner(venv, joiner_work)
                try:
                    token = register(joiner, "joiner", admin=False)
                    summary["joiner"] = f"synapse {joiner['SYNAPSE_SERVER_NAME']}"
                    summary["join"] = time_join(admin, joiner["SYNAPSE_CLIENT_URL"], token,
                                                state["alias"], state["room_id"],
                                                args.poll, args.timeout)
                finally:
                    stop_synapse(joiner_work)
    finally:
        if not args.keep_host:
            stop_synapse(host_work)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
