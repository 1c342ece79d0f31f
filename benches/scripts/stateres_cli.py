#!/usr/bin/env python3
"""`stateres bench` against `ruma-stateres bench` on the same generated rooms, in one run.

Build first (release, single-threaded tools):

    cargo build --release -p stateres-cli -p benches --bin gen-room --bin ruma-stateres
    python3 benches/scripts/stateres_cli.py --runs 3

For each size (and room version) the room is generated once with `gen-room MEMBERS 7 VERSION`
(byte-identical for the same arguments); both tools must print the same resolved state
(`resolve`); then `bench` runs alternate between the two tools, `--runs` times each, and the
medians of their "median time per resolve" (and of each phase) are reported, with the speed-up,
the growth from the smallest to the largest size, the parse times, and the peak RSS of
`resolve` on each file (from the tools' own report of VmHWM) against the file's size.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

NUMBER = r"([0-9.]+)"


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return out


def bench(binary, path):
    text = run([binary, "bench", path]).stdout
    def grab(pattern):
        m = re.search(pattern, text)
        # The baseline (an older stateres) reports no phases.
        return float(m.group(1)) if m else float("nan")
    return {
        "total": grab(r"median time per resolve: " + NUMBER),
        "auth_chains": grab(r"auth chains " + NUMBER),
        "subgraph": grab(r"subgraph " + NUMBER),
        "resolve": grab(r"resolve " + NUMBER + " ms\n"),
        "parse": grab(r"parse \(once, not in the times above\): " + NUMBER),
    }


def peak_mib(stderr):
    m = re.search(r"peak memory \(RSS\): " + NUMBER + " MiB", stderr)
    return float(m.group(1)) if m else float("nan")


def fmt_ms(ms):
    return f"{ms:.3g} ms" if ms >= 1 else f"{ms * 1000:.3g} µs"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--versions", default="11")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bin-dir", default=os.environ.get("CARGO_TARGET_DIR", "target") + "/release")
    parser.add_argument("--dir", default="/tmp/stateres-rooms")
    parser.add_argument("--baseline", help="an older stateres binary, measured in the same runs")
    args = parser.parse_args()
    ours = os.path.join(args.bin_dir, "stateres")
    ruma = os.path.join(args.bin_dir, "ruma-stateres")
    gen = os.path.join(args.bin_dir, "gen-room")
    os.makedirs(args.dir, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for version in args.versions.split(","):
        for members in sizes:
            path = os.path.join(args.dir, f"room-{members}-v{version}.json")
            if not os.path.exists(path):
                with open(path, "w") as f:
                    subprocess.run([gen, str(members), "7", version], stdout=f, check=True)
            a, b = run([ours, "resolve", path]), run([ruma, "resolve", path])
            if a.stdout != b.stdout:
                sys.exit(f"{path}: the resolved states differ")
            results = {"ours": [], "ruma": []}
            if args.baseline:
                results["base"] = []
            for _ in range(args.runs):
                results["ours"].append(bench(ours, path))
                results["ruma"].append(bench(ruma, path))
                if args.baseline:
                    results["base"].append(bench(args.baseline, path))
            med = {
                who: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                for who, rs in results.items()
            }
            rows.append({
                "version": version,
                "members": members,
                "size_mib": os.path.getsize(path) / 1048576,
                "ours": med["ours"],
                "ruma": med["ruma"],
                "ours_all": [r["total"] for r in results["ours"]],
                "ruma_all": [r["total"] for r in results["ruma"]],
                "base": med.get("base"),
                "ours_peak": peak_mib(a.stderr),
                "ruma_peak": peak_mib(b.stderr),
            })
            print(f"done: v{version} {members}", file=sys.stderr)

    print(f"Medians of {args.runs} alternating runs of each tool's `bench` (each itself the median "
          "of about 5 s of resolves), single thread.\n")
    print("| room | ruma-stateres | stateres | speed-up | ours: auth chains / subgraph / resolve "
          "| ruma: auth chains / subgraph / resolve |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        o, t = r["ours"], r["ruma"]
        print(f"| v{r['version']}, {r['members']:,} members | {fmt_ms(t['total'])} | {fmt_ms(o['total'])} "
              f"| **{t['total'] / o['total']:.1f}x** "
              f"| {fmt_ms(o['auth_chains'])} / {fmt_ms(o['subgraph'])} / {fmt_ms(o['resolve'])} "
              f"| {fmt_ms(t['auth_chains'])} / {fmt_ms(t['subgraph'])} / {fmt_ms(t['resolve'])} |")
    if args.baseline:
        print()
        print("| room | ruma-stateres | stateres before | before: speed-up | stateres now | now: speed-up |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            o, t, b = r["ours"], r["ruma"], r["base"]
            print(f"| v{r['version']}, {r['members']:,} members | {fmt_ms(t['total'])} | {fmt_ms(b['total'])} "
                  f"| {t['total'] / b['total']:.1f}x | {fmt_ms(o['total'])} | **{t['total'] / o['total']:.1f}x** |")
    print()
    print("| room | file | parse: ruma / ours | peak RSS of `resolve`: ruma / ours | ours / file |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| v{r['version']}, {r['members']:,} members | {r['size_mib']:.1f} MiB "
              f"| {fmt_ms(r['ruma']['parse'])} / {fmt_ms(r['ours']['parse'])} "
              f"| {r['ruma_peak']:.1f} / {r['ours_peak']:.1f} MiB | {r['ours_peak'] / r['size_mib']:.2f}x |")
    print()
    for version in args.versions.split(","):
        vr = [r for r in rows if r["version"] == version]
        if len(vr) >= 2:
            lo, hi = vr[0], vr[-1]
            print(f"Growth v{version}, {lo['members']:,} to {hi['members']:,} members: ours "
                  f"**{hi['ours']['total'] / lo['ours']['total']:.1f}x**, ruma "
                  f"{hi['ruma']['total'] / lo['ruma']['total']:.1f}x.")
    print()
    for r in rows:
        print(f"v{r['version']} {r['members']:,}: runs ours {', '.join(fmt_ms(x) for x in r['ours_all'])}; "
              f"ruma {', '.join(fmt_ms(x) for x in r['ruma_all'])}")


if __name__ == "__main__":
    main()
