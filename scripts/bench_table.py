#!/usr/bin/env python3
"""Print criterion results of benches/quantize.rs as a Markdown table with ratios.

Usage: python3 scripts/bench_table.py [target/criterion]
Reads <dir>/4096x4096_f32/**/new/estimates.json (mean time per iteration, ns) and reports
GB/s of f32 input (64 MiB = 67,108,864 bytes) and each entry's ratio to the copy baseline.
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion") / "4096x4096_f32"
BYTES = 4096 * 4096 * 4
rows = {}
for est in sorted(root.glob("**/new/estimates.json")):
    meta = json.loads((est.parent / "benchmark.json").read_text())
    name = meta["full_id"].split("/", 1)[1]  # drop the group name
    rows[name] = json.loads(est.read_text())["mean"]["point_estimate"]
if not rows:
    sys.exit(f"no criterion results under {root}")
copy = rows.get("copy/memcpy")
print("| benchmark | mean time | GB/s of f32 input | vs memcpy |")
print("|---|---|---|---|")
for name, ns in sorted(rows.items()):
    gbs = BYTES / ns
    ratio = f"{copy / ns:.2f}×" if copy else "-"
    print(f"| {name} | {ns / 1e6:.2f} ms | {gbs:.2f} | {ratio} |")

def ratio(a, b):
    return rows[b] / rows[a] if a in rows and b in rows else float("nan")

print()
print("Speed-ups (higher is faster for quantlens):")
for ours, theirs in [
    ("quantlens/quantize/int4-g128-asym", "candle/quantize/q4_0"),
    ("quantlens/quantize/int4-g128-sym", "candle/quantize/q4_0"),
    ("quantlens/quantize/int8-channel-sym", "candle/quantize/q8_0"),
    ("quantlens/dequantize/int4-g128-asym", "candle/dequantize/q4_0"),
    ("quantlens/dequantize/int4-g128-sym", "candle/dequantize/q4_0"),
    ("quantlens/dequantize/int8-channel-sym", "candle/dequantize/q8_0"),
    ("quantlens/dequantize/int4-g128-asym", "copy/alloc+memcpy"),
]:
    print(f"- {ours} vs {theirs}: {ratio(ours, theirs):.2f}×")
