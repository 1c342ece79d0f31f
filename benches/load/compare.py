"""Runs the load benchmark against this homeserver (sled, or --storage fjall) and against
Synapse (PostgreSQL),
one after the other in the same run, and prints the side-by-side table with ratios.

    python3 benches/load/compare.py [--seconds 20] [--runs 3] [--work DIR] [--skip-synapse]
                                    [--rooms 4] [--senders 16] [--storage sled]

With several runs (each: ours, then Synapse), the table shows the medians and the range of
messages per second.

Needs: target/release/homeserver and target/release/loadgen (`cargo build --release -p
homeserver-bin -p benches --bin loadgen`), PostgreSQL on 127.0.0.1:5432 (user postgres) for
Synapse, and PyPI for installing Synapse into DIR (not the repository)."""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command, url, env=None, log=None):
    """Starts a server; answers (process, milliseconds until /versions first answered)."""
    began = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = began + 120
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_matrix/client/versions", timeout=1) as r:
                if r.status == 200:
                    return process, (time.perf_counter() - began) * 1000
        except OSError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"{command[0]} exited with {process.returncode}")
        time.sleep(0.001)
    raise SystemExit(f"{command} did not answer within 120 s")


def stop(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


SHAPE = {"rooms": 4, "senders": 16, "storage": "sled"}


def load(url, pid, seconds, prefix):
    loadgen = os.path.join(TARGET, "release", "loadgen")
    out = subprocess.run(
        [loadgen, "--url", url, "--pid", str(pid), "--seconds", str(seconds), "--prefix", prefix,
         "--rooms", str(SHAPE["rooms"]), "--senders", str(SHAPE["senders"])],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def ours(work, seconds):
    port = free_port()
    data = os.path.join(work, "ours")
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    config = os.path.join(data, "homeserver.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{port}"\ndata_dir = "{data}/data"\n'
                '[registration]\nmode = "open"\nenable_registration_without_verification = true\n[rate_limits]\nenabled = false\n'
                f'[storage]\nbackend = "{SHAPE["storage"]}"\n')
    url = f"http://127.0.0.1:{port}"
    binary = os.path.join(TARGET, "release", "homeserver")
    with open(os.path.join(data, "log"), "w") as log:
        process, startup = start([binary, "serve", "--config", config], url, log=log)
        time.sleep(1)
        try:
            result = load(url, process.pid, seconds, "ours")
        finally:
            stop(process)
    result["startup_ms"] = startup
    return result


def synapse(work, seconds):
    port = free_port()
    directory = os.path.join(work, "synapse")
    os.makedirs(directory, exist_ok=True)
    for path in ["homeserver.yaml", "data"]:
        shutil.rmtree(os.path.join(directory, path), ignore_errors=True)
        if os.path.isfile(os.path.join(directory, path)):
            os.remove(os.path.join(directory, path))
    database = "synapse_load"
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres",
                    "-c", f"DROP DATABASE IF EXISTS {database}",
                    "-c", f"CREATE DATABASE {database} ENCODING 'UTF8' LC_COLLATE='C' "
                          "LC_CTYPE='C' TEMPLATE template0"], check=True)
    command = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benches", "load", "synapse.py"), directory,
         str(port), database], check=True, capture_output=True, text=True,
    ).stdout.split()
    url = f"http://127.0.0.1:{port}"
    with open(os.path.join(directory, "log"), "w") as log:
        process, startup = start(command, url, log=log)
        time.sleep(1)
        try:
            result = load(url, process.pid, seconds, "synapse")
        finally:
            stop(process)
    result["startup_ms"] = startup
    version = subprocess.run([command[0], "-c", "import synapse; print(synapse.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    result["version"] = version
    return result


def table(a, b):
    rows = [
        ("messages/s (%d senders, %d rooms)" % (SHAPE["senders"], SHAPE["rooms"]),
         "messages_per_second", "{:,.0f}", True),
        ("send latency p50 (ms)", "send_ms_p50", "{:.1f}", False),
        ("send latency p99 (ms)", "send_ms_p99", "{:.1f}", False),
        ("send-to-sync delivery p50 (ms, 5 syncing clients)", "delivery_ms_p50", "{:.1f}", False),
        ("send-to-sync delivery p99 (ms)", "delivery_ms_p99", "{:.1f}", False),
        ("messages delivered to every syncing client", "delivered_fraction", "{:.0%}", None),
        ("RSS idle after start (MiB)", "idle_rss_kib", "{:.1f}", False),
        ("RSS under load, peak (MiB)", "load_rss_kib", "{:.1f}", False),
        ("start to first answered request (ms)", "startup_ms", "{:.0f}", False),
    ]
    lines = ["| | ours (%s) | Synapse %s (PostgreSQL) | ours vs Synapse |"
             % (SHAPE["storage"], b.get("version", "")),
             "|---|---|---|---|"]
    for label, key, fmt, higher_better in rows:
        x, y = a.get(key), b.get(key)
        if key.endswith("_kib"):
            x, y = (x or 0) / 1024, (y or 0) / 1024
        if higher_better is None or not x or not y:
            ratio = ""
        elif higher_better:
            ratio = f"{x / y:.1f}x"
        else:
            ratio = f"1/{y / x:.1f}" if x < y else f"{x / y:.1f}x"
        lines.append(f"| {label} | {fmt.format(x)} | {fmt.format(y)} | {ratio} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--work", default="/tmp/homeserver-load")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--skip-synapse", action="store_true")
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--storage", default="sled", help="our backend: sled, fjall")
    args = parser.parse_args()
    SHAPE.update(rooms=args.rooms, senders=args.senders, storage=args.storage)
    os.makedirs(args.work, exist_ok=True)
    a_runs, b_runs = [], []
    for _ in range(args.runs):
        a_runs.append(ours(args.work, args.seconds))
        print(json.dumps({"ours": a_runs[-1]}), flush=True)
        if not args.skip_synapse:
            b_runs.append(synapse(args.work, args.seconds))
            print(json.dumps({"synapse": b_runs[-1]}), flush=True)
    if args.skip_synapse:
        return
    a, b = median(a_runs), median(b_runs)
    print()
    print(table(a, b))
    if args.runs > 1:
        def spread(runs):
            rates = sorted(r["messages_per_second"] for r in runs)
            return f"{rates[0]:,.0f} to {rates[-1]:,.0f}"
        print()
        print(f"Medians of {args.runs} runs; messages/s ranged {spread(a_runs)} (ours) and "
              f"{spread(b_runs)} (Synapse).")


def median(runs):
    """The run-by-run median of every number (the first run's other values)."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = sorted(r[key] for r in runs if r.get(key) is not None)
            out[key] = values[len(values) // 2]
    return out


if __name__ == "__main__":
    main()
