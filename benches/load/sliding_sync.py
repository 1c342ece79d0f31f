"""Runs the sliding sync benchmark (benches/src/bin/slidingsync.rs) on our homeserver with sled
and with PostgreSQL (in the tool's process) and on Synapse (PostgreSQL, installed by
benches/load/synapse.py into DIR), in one run, and prints the tool's table with the ratios.

    python3 benches/load/sliding_sync.py [--work DIR] [--rooms 5000] [--messages 20]
                                         [--synapse-rooms N] [--synapse-messages N]
                                         [--repeats 15] [--concurrency 16] [--skip-synapse]
                                         [--keep-synapse]

Needs: the tool built (`cargo build --release -p benches --bin slidingsync`), PostgreSQL on
127.0.0.1:5432 (user postgres, trust) for our PostgreSQL store (a schema of its own in the
database `slidingsync`) and for Synapse (the database `synapse_slidingsync`, made anew), and
PyPI for installing Synapse into DIR (not the repository).

--keep-synapse keeps Synapse's database and the filled account (DIR/synapse/account.json)
between runs: a second run measures the same account again instead of filling it anew."""

import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import ROOT, TARGET, free_port, start, stop  # noqa: E402


def psql(*commands):
    args = ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"]
    for command in commands:
        args += ["-c", command]
    subprocess.run(args, check=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", default="/tmp/homeserver-slidingsync")
    parser.add_argument("--rooms", type=int, default=5000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--synapse-rooms", type=int)
    parser.add_argument("--synapse-messages", type=int)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--skip-synapse", action="store_true")
    parser.add_argument("--keep-synapse", action="store_true")
    args = parser.parse_args()

    psql("DROP DATABASE IF EXISTS slidingsync", "CREATE DATABASE slidingsync")
    tool = [os.path.join(TARGET, "release", "slidingsync"), "--rooms", str(args.rooms),
            "--messages", str(args.messages), "--repeats", str(args.repeats),
            "--concurrency", str(args.concurrency)]
    if args.synapse_rooms is not None:
        tool += ["--synapse-rooms", str(args.synapse_rooms)]
    if args.synapse_messages is not None:
        tool += ["--synapse-messages", str(args.synapse_messages)]
    env = dict(os.environ, DATABASE_URL="postgres://postgres@127.0.0.1:5432/slidingsync")
    if args.skip_synapse:
        subprocess.run(tool + ["--targets", "sled,postgres"], env=env, check=True)
        return

    directory = os.path.join(args.work, "synapse")
    os.makedirs(directory, exist_ok=True)
    for name in ["homeserver.yaml"]:
        if os.path.exists(os.path.join(directory, name)):
            os.remove(os.path.join(directory, name))
    database = "synapse_slidingsync"
    account = os.path.join(directory, "account.json")
    if not (args.keep_synapse and os.path.exists(account)):
        if os.path.exists(account):
            os.remove(account)
        psql(f"DROP DATABASE IF EXISTS {database}",
             f"CREATE DATABASE {database} ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' "
             "TEMPLATE template0")
    port_file = os.path.join(directory, "port")
    port = free_port()
    if args.keep_synapse and os.path.exists(port_file):
        with open(port_file) as f:
            port = int(f.read())
    with open(port_file, "w") as f:
        f.write(str(port))
    command = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benches", "load", "synapse.py"), directory,
         str(port), database], check=True, capture_output=True, text=True,
    ).stdout.split()
    version = subprocess.run([command[0], "-c", "import synapse; print(synapse.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    print(f"Synapse {version} (PostgreSQL)", flush=True)
    url = f"http://127.0.0.1:{port}"
    with open(os.path.join(directory, "log"), "w") as log:
        process, _ = start(command, url, log=log)
        try:
            keep = ["--synapse-keep", account] if args.keep_synapse else []
            subprocess.run(tool + ["--targets", "sled,postgres,synapse", "--synapse-url", url]
                           + keep, env=env, check=True)
        finally:
            stop(process)


if __name__ == "__main__":
    main()
