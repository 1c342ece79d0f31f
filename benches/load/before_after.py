"""Runs the load benchmark against two builds of this homeserver (a baseline and the current
one), alternating, with rate limits off and on, and prints the table with ratios.

    python3 benches/load/before_after.py --baseline BIN --current BIN [--seconds 20] [--runs 3]
                                         [--rooms 4] [--senders 16]
                                         [--baseline-storage sled] [--current-storage fjall]

The storage options compare two backends (the same binary may be both builds); unset, the
binary's default (sled) runs.

"Limits on" means every limit is checked at its default, except those the load generator
exceeds by design (it registers 21 users from one address and each sender sends far faster
than a person): those are raised so that nothing is refused, which measures what checking the
limits costs. The baseline gets the same settings with the keys it knows.

Needs target/release/loadgen (`cargo build --release -p benches --bin loadgen`)."""

import argparse
import json
import os
import shutil

from compare import SHAPE, free_port, load, median, start, stop

# Raised so that the generator is never refused (the other limits stay at their defaults).
UNLIMITED = "{ per_second = 100000.0, burst_count = 100000.0 }"
RAISED_BASELINE = ["message", "login", "registration", "joins"]
RAISED_CURRENT = RAISED_BASELINE + ["create_room", "membership", "state"]


def run(binary, limits, raised, work, seconds, name, storage=None):
    port = free_port()
    data = os.path.join(work, name)
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    config = os.path.join(data, "homeserver.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{port}"\ndata_dir = "{data}/data"\n'
                '[registration]\nmode = "open"\nenable_registration_without_verification = true\n[rate_limits]\n')
        if limits:
            f.write("enabled = true\n")
            for key in raised:
                f.write(f"{key} = {UNLIMITED}\n")
        else:
            f.write("enabled = false\n")
        if storage:
            f.write(f'[storage]\nbackend = "{storage}"\n')
    url = f"http://127.0.0.1:{port}"
    with open(os.path.join(data, "log"), "w") as log:
        process, startup = start([binary, "serve", "--config", config], url, log=log)
        try:
            result = load(url, process.pid, seconds, name)
        finally:
            stop(process)
    result["startup_ms"] = startup
    return result


ROWS = [
    ("messages/s", "messages_per_second"),
    ("send latency p50 (ms)", "send_ms_p50"),
    ("send latency p99 (ms)", "send_ms_p99"),
    ("send-to-sync delivery p50 (ms)", "delivery_ms_p50"),
    ("send-to-sync delivery p99 (ms)", "delivery_ms_p99"),
    ("messages delivered to every syncing client", "delivered_fraction"),
    ("errors", "errors"),
    ("RSS under load, peak (KiB)", "load_rss_kib"),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--current", required=True)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--work", default="/tmp/homeserver-before-after")
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--senders", type=int, default=16)
    parser.add_argument("--baseline-storage")
    parser.add_argument("--current-storage")
    args = parser.parse_args()
    SHAPE.update(rooms=args.rooms, senders=args.senders)
    os.makedirs(args.work, exist_ok=True)
    results = {}
    for i in range(args.runs):
        for limits in (False, True):
            for label, binary, raised, storage in (
                    ("baseline", args.baseline, RAISED_BASELINE, args.baseline_storage),
                    ("current", args.current, RAISED_CURRENT, args.current_storage)):
                key = (label, limits)
                r = run(binary, limits, raised, args.work, args.seconds,
                        f"{label}-{'on' if limits else 'off'}-{i}", storage)
                results.setdefault(key, []).append(r)
                print(json.dumps({"run": i, "build": label, "limits": limits, **r}), flush=True)
    print()
    print("| | limits | baseline | current | current / baseline |")
    print("|---|---|---|---|---|")
    for limits in (False, True):
        a, b = median(results[("baseline", limits)]), median(results[("current", limits)])
        for title, key in ROWS:
            if a.get(key) is None or b.get(key) is None:
                continue
            ratio = b[key] / a[key] if a[key] else float("nan")
            print(f"| {title} | {'on' if limits else 'off'} | {a[key]:,.1f} | {b[key]:,.1f} "
                  f"| {ratio:.3f} |")
    print()
    print(f"Medians of {args.runs} runs each, alternating baseline and current.")


if __name__ == "__main__":
    main()
