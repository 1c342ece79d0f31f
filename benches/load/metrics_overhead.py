"""Measures what Prometheus metrics cost: the load benchmark against the same binary with
`[metrics] enabled = false` and `= true`, alternating (off, on, off, on, ...), and prints the
table with ratios. While metrics are on, a scraper reads /metrics every second (Prometheus
scrapes every 15 s by default: this is the heavier case), and each scrape is checked to parse.

    python3 benches/load/metrics_overhead.py [--binary target/release/homeserver]
                                             [--seconds 15] [--pairs 3]

Needs target/release/homeserver and target/release/loadgen (`cargo build --release -p
homeserver-bin -p benches --bin loadgen`)."""

import argparse
import json
import os
import shutil
import threading
import urllib.request

from compare import TARGET, free_port, load, median, start, stop

ROWS = [
    ("messages/s", "messages_per_second"),
    ("send latency p50 (ms)", "send_ms_p50"),
    ("send latency p99 (ms)", "send_ms_p99"),
    ("send-to-sync delivery p50 (ms)", "delivery_ms_p50"),
    ("send-to-sync delivery p99 (ms)", "delivery_ms_p99"),
    ("messages delivered to every syncing client", "delivered_fraction"),
    ("RSS under load, peak (KiB)", "load_rss_kib"),
]


def scrape_every_second(url, stop_event, counts):
    while not stop_event.wait(1.0):
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
                text = r.read().decode()
            if "synapse_http_server_requests_received_total" in text:
                counts["ok"] += 1
            else:
                counts["empty"] += 1
        except OSError:
            counts["failed"] += 1


def run(binary, metrics, work, seconds, name):
    port, metrics_port = free_port(), free_port()
    data = os.path.join(work, name)
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    config = os.path.join(data, "homeserver.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{port}"\ndata_dir = "{data}/data"\n'
                '[registration]\nmode = "open"\nenable_registration_without_verification = true\n[rate_limits]\nenabled = false\n'
                f'[metrics]\nenabled = {"true" if metrics else "false"}\n'
                f'listen = "127.0.0.1:{metrics_port}"\n')
    url = f"http://127.0.0.1:{port}"
    counts = {"ok": 0, "empty": 0, "failed": 0}
    with open(os.path.join(data, "log"), "w") as log:
        process, _ = start([binary, "serve", "--config", config], url, log=log)
        stop_event = threading.Event()
        scraper = None
        if metrics:
            scraper = threading.Thread(target=scrape_every_second,
                                       args=(f"http://127.0.0.1:{metrics_port}", stop_event,
                                             counts))
            scraper.start()
        try:
            result = load(url, process.pid, seconds, name)
        finally:
            stop_event.set()
            if scraper:
                scraper.join()
            stop(process)
    result["scrapes"] = counts
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(TARGET, "release", "homeserver"))
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--work", default="/tmp/homeserver-metrics-overhead")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    results = {False: [], True: []}
    for i in range(args.pairs):
        for metrics in (False, True):
            r = run(args.binary, metrics, args.work, args.seconds,
                    f"metrics-{'on' if metrics else 'off'}-{i}")
            results[metrics].append(r)
            print(json.dumps({"pair": i, "metrics": metrics, **r}), flush=True)
    off, on = median(results[False]), median(results[True])
    print()
    print("| | metrics off | metrics on | on / off |")
    print("|---|---|---|---|")
    for title, key in ROWS:
        if off.get(key) is None or on.get(key) is None:
            continue
        ratio = on[key] / off[key] if off[key] else float("nan")
        print(f"| {title} | {off[key]:,.1f} | {on[key]:,.1f} | {ratio:.3f} |")
    print()
    rates = [(a["messages_per_second"], b["messages_per_second"])
             for a, b in zip(results[False], results[True])]
    print("messages/s per pair (off, on): " +
          ", ".join(f"({a:,.0f}, {b:,.0f})" for a, b in rates))
    print(f"Medians of {args.pairs} pairs, alternating off and on.")


if __name__ == "__main__":
    main()
