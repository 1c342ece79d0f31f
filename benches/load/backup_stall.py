"""Measures an online backup of a big store: how long `homeserver backup` takes while the
server runs, and how much it stalls a client that keeps sending meanwhile (send latency p50,
p99 and max before the backup and during it, in the same run), then how long `restore` takes.

    python3 benches/load/backup_stall.py [--events 1000000] [--storage sled|postgres]
                                         [--database-url URL] [--work DIR]
                                         [--phase all|fill|measure]

The store is filled first by the load generator (messages in 4 rooms, until the server holds
`--events` events); then one client sends messages one after another (the latency probe) for
10 s, the backup runs, and the probe goes on until it ends. Needs target/release/homeserver and
target/release/loadgen (`cargo build --release -p homeserver-bin` and
`cargo build --release -p benches --bin loadgen`).
For PostgreSQL, `--database-url` names a database the script may fill (a new schema in it)."""

import argparse
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request

from compare import TARGET, free_port, start, stop

SECRET = "backup-bench-shared-secret-0123456789abcdef"


def request(method, url, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}")


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p))]


def summary(latencies):
    return {"sends": len(latencies), "p50_ms": round(percentile(latencies, 0.5), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
            "max_ms": round(max(latencies) if latencies else float("nan"), 2)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--storage", default="sled")
    parser.add_argument("--database-url")
    parser.add_argument("--work", default="/tmp/backup-bench")
    parser.add_argument("--phase", choices=["all", "fill", "measure"], default="all",
                        help="fill: only fill the store (kept in --work); measure: only the "
                             "backup and restore of a store filled before (on a quiet machine)")
    args = parser.parse_args()

    if args.phase != "measure":
        shutil.rmtree(args.work, ignore_errors=True)
        os.makedirs(args.work)
    for stale in ["backup", "restored-data"]:
        shutil.rmtree(os.path.join(args.work, stale), ignore_errors=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = os.path.join(args.work, "homeserver.toml")
    storage = f'[storage]\nbackend = "{args.storage}"\n'
    if args.storage == "postgres":
        schema = "backup_bench"
        if args.phase != "measure":
            subprocess.run(["psql", args.database_url, "-qc",
                            f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"],
                           check=True)
        sep = "&" if "?" in args.database_url else "?"
        storage += f'postgres_url = "{args.database_url}{sep}options[search_path]={schema}"\n'
    with open(config, "w") as f:
        f.write(f'[server]\nname = "bench.local"\nlisten = "127.0.0.1:{port}"\n'
                f'data_dir = "{args.work}/data"\n'
                '[registration]\nmode = "open"\nenable_registration_without_verification = true\n'
                f'shared_secret = "{SECRET}"\n[rate_limits]\nenabled = false\n{storage}')
    binary = os.path.join(TARGET, "release", "homeserver")
    log = open(os.path.join(args.work, "log"), "w")
    process, _ = start([binary, "serve", "--config", config], url, log=log)
    try:
        # Fill: the load generator, 20 s at a time, until the store holds enough events.
        fill_started = time.perf_counter()
        loadgen = os.path.join(TARGET, "release", "loadgen")
        sent = 0 if args.phase != "measure" else args.events
        rounds = 0
        while sent < args.events:
            rounds += 1
            out = subprocess.run(
                [loadgen, "--url", url, "--seconds", "20", "--prefix", f"fill{rounds}",
                 "--rooms", "4", "--senders", "16", "--syncers", "1"],
                check=True, capture_output=True, text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            sent += int(result["messages_per_second"] * 20)
            print(f"fill round {rounds}: about {sent} messages so far "
                  f"({result['messages_per_second']:.0f}/s)", flush=True)
        fill_seconds = time.perf_counter() - fill_started
        if args.phase == "fill":
            print(json.dumps({"filled_messages": sent, "fill_seconds": round(fill_seconds)}))
            return

        # The probe: one user sending into a room of its own, one message after another.
        user = request("POST", f"{url}/_matrix/client/v3/register",
                       {"username": f"probe{os.getpid()}", "password": "probe-password-1",
                        "auth": {"type": "m.login.dummy"}})
        token = user["access_token"]
        room = request("POST", f"{url}/_matrix/client/v3/createRoom", {}, token)["room_id"]
        phase = {"name": "before"}
        latencies = {"before": [], "during": [], "after": []}
        stop_probe = threading.Event()

        def probe():
            n = 0
            while not stop_probe.is_set():
                n += 1
                began = time.perf_counter()
                request("PUT", f"{url}/_matrix/client/v3/rooms/{room}/send/m.room.message/p{n}",
                        {"msgtype": "m.text", "body": f"probe {n}"}, token)
                latencies[phase["name"]].append((time.perf_counter() - began) * 1000)
                time.sleep(0.005)

        thread = threading.Thread(target=probe)
        thread.start()
        time.sleep(10)
        phase["name"] = "during"
        target = os.path.join(args.work, "backup")
        began = time.perf_counter()
        out = subprocess.run([binary, "backup", "--config", config, "--to", target],
                             check=True, capture_output=True, text=True)
        backup_seconds = time.perf_counter() - began
        phase["name"] = "after"
        time.sleep(3)
        stop_probe.set()
        thread.join()
        said = out.stdout.strip()
    finally:
        stop(process)
        log.close()

    manifest = json.load(open(os.path.join(target, "manifest.json")))
    size = sum(f["bytes"] for f in manifest["files"].values())

    # Restore into a new data directory (and a new schema), timed; the command checks it.
    restored = os.path.join(args.work, "restored.toml")
    text = open(config).read().replace(f'{args.work}/data', f'{args.work}/restored-data')
    if args.storage == "postgres":
        other = "backup_bench_restored"
        subprocess.run(["psql", args.database_url, "-qc",
                        f"DROP SCHEMA IF EXISTS {other} CASCADE; CREATE SCHEMA {other}"],
                       check=True)
        text = text.replace(f"search_path]={schema}", f"search_path]={other}")
    open(restored, "w").write(text)
    began = time.perf_counter()
    restore = subprocess.run([binary, "restore", "--config", restored, "--from", target],
                             check=True, capture_output=True, text=True)
    restore_seconds = time.perf_counter() - began

    before, during = summary(latencies["before"]), summary(latencies["during"])
    report = {
        "storage": args.storage,
        "events": manifest["events"],
        "fill_seconds": round(fill_seconds, 1),
        "backup_seconds": round(backup_seconds, 2),
        "backup_bytes": size,
        "restore_seconds": round(restore_seconds, 2),
        "sends_before": before,
        "sends_during": during,
        "sends_after": summary(latencies["after"]),
        "p99_ratio_during_over_before": round(during["p99_ms"] / before["p99_ms"], 2),
        "backup_said": said,
        "restore_said": restore.stdout.strip().splitlines()[0],
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
