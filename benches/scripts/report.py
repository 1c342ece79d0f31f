#!/usr/bin/env python3
"""Prints the markdown table of ours-vs-peer ratios from criterion's saved estimates.

Usage: cargo bench -p benches --bench core && python3 benches/scripts/report.py [target/criterion]

Each benchmark `GROUP/OP/ours` is paired with `GROUP/OP/ruma` (criterion stores them as
`GROUP/OP_ours`); the verify_1000_events group pairs
`batch` with `one_by_one`. Times are criterion's median point estimates of the same run.
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")


def median_ns(path):
    estimates = json.loads((path / "new" / "estimates.json").read_text())
    return estimates["median"]["point_estimate"]


def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def floor_name(name):
    return name[:-6].rsplit("_", 1)[1].upper()


rows = []
for group in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "report"):
    names = {p.name for p in group.iterdir() if p.is_dir()}
    for name in sorted(names):
        if name.endswith("_ours") and name[:-5] + "_ruma" in names:
            ours, peer = median_ns(group / name), median_ns(group / (name[:-5] + "_ruma"))
            rows.append((group.name, name[:-5], "ruma", fmt(peer), fmt(ours), peer / ours))
        if name.endswith("_floor"):
            op, floor = name[:-6].rsplit("_", 1)[0], median_ns(group / name)
            rows.append((group.name, f"{op} ({floor_name(name)} alone)", "-", "-", fmt(floor), None))
    if {"batch", "one_by_one"} <= names:
        ours, peer = median_ns(group / "batch"), median_ns(group / "one_by_one")
        rows.append((group.name, "verify", "one-by-one", fmt(peer), fmt(ours), peer / ours))

print("| input | operation | anchor | anchor time | our time | speed-up |")
print("|---|---|---|---|---|---|")
for group, op, anchor, peer, ours, ratio in rows:
    speedup = "-" if ratio is None else f"**{ratio:.2f}x**"
    print(f"| {group} | {op} | {anchor} | {peer} | {ours} | {speedup} |")
