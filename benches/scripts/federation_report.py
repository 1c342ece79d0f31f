#!/usr/bin/env python3
"""Prints the markdown table of the `federation` bench: events per second of each row and its
speed-up over one-by-one verification (the anchor, same run), from criterion's saved medians.

Usage: taskset -c 1 cargo bench -p benches --bench federation
       python3 benches/scripts/federation_report.py [$CARGO_TARGET_DIR/criterion]
"""
import json
import pathlib
import sys

EVENTS = 5_000  # events per iteration (benches/federation.rs)
root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")


def median_ns(path):
    estimates = json.loads((path / "new" / "estimates.json").read_text())
    return estimates["median"]["point_estimate"]


print("| room version | operation | time per event | events/s | speed-up over one by one |")
print("|---|---|---|---|---|")
for group in sorted(root.glob("verify_room_v*")):
    version = group.name.rsplit("_v", 1)[1]
    anchor = median_ns(group / "one_by_one")
    rows = ["one_by_one", "batch_50", "batch_500", "batch_5000", "signing_input",
            "content_hash", "receive"]
    for row in rows:
        if not (group / row).is_dir():
            continue
        ns = median_ns(group / row) / EVENTS
        ratio = f"**{anchor / median_ns(group / row):.2f}x**" if row.startswith("batch") else "-"
        print(f"| {version} | {row} | {ns / 1000:.2f} µs | {1e9 / ns:,.0f} | {ratio} |")
