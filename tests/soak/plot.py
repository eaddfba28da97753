#!/usr/bin/env python3
"""The soak's plot: Envoy's RSS and heap over time above, the answers per 10 s below (stacked by
outcome), the fault windows shaded on both. Usage: plot.py samples.json out.png"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FAULT_COLORS = {
    "slow": "#f4c542",
    "token500": "#f08a5d",
    "garbage": "#b83b5e",
    "down": "#6a2c70",
    "restart": "#888888",
    "rotation": "#3fc1c9",
    "shrink": "#364f6b",
}
OUTCOMES = [
    ("ok", "2xx expected", "#4caf50"),
    ("redirect", "3xx expected", "#90caf9"),
    ("refused", "4xx expected (bad tokens)", "#bdbdbd"),
    ("fault5xx", "5xx explained by a fault", "#ff9800"),
    ("unexpected", "unexpected", "#d50000"),
]
BUCKET_S = 10


def main(src, out):
    with open(src, encoding="utf-8") as f:
        data = json.load(f)
    duration = data["durationS"]
    fig, (ax0, ax1, ax2) = plt.subplots(
        3, 1, figsize=(12, 8.5), sharex=True, gridspec_kw={"height_ratios": [0.55, 1, 1.1]}
    )

    # the fault windows, one lane per kind
    kinds = [k for k in FAULT_COLORS if any(w["kind"] == k for w in data["windows"])]
    for lane, kind in enumerate(kinds):
        spans = [(w["start"], max(w["end"] - w["start"], duration / 400)) for w in data["windows"] if w["kind"] == kind]
        ax0.broken_barh(spans, (lane - 0.4, 0.8), color=FAULT_COLORS[kind])
    ax0.set_yticks(range(len(kinds)))
    ax0.set_yticklabels(kinds, fontsize=8)
    ax0.set_ylim(-0.6, len(kinds) - 0.4)
    ax0.invert_yaxis()
    ax0.grid(alpha=0.3, axis="x")
    ax0.set_title("provider faults", fontsize=9, loc="left")

    # memory: RSS on the left axis, Envoy's own heap on the right
    rss = data["rss"]
    ax1.plot([t for t, _ in rss], [v for _, v in rss], color="#1565c0", lw=1.4, label="Envoy RSS (VmRSS, left)")
    mem = data.get("memory") or {}
    if mem.get("firstQuarterMedianMiB") is not None and mem.get("lastQuarterMedianMiB") is not None:
        half, eighth = duration / 2, duration / 8
        ax1.hlines(mem["firstQuarterMedianMiB"], half, half + eighth, colors="black", lw=2.4)
        ax1.hlines(mem["lastQuarterMedianMiB"], duration - eighth, duration, colors="black", lw=2.4,
                   label="RSS medians compared")
    vals = [v for _, v in rss] or [0]
    bound = mem.get("boundMiB") or 10
    ax1.set_ylim(min(vals) - 2, max(max(vals), (mem.get("firstQuarterMedianMiB") or 0) + bound) + 2)
    ax1.set_ylabel("RSS MiB")
    ax1.grid(alpha=0.3)
    heap = [p for p in data["heap"] if p[1] > 0]
    handles, labels = ax1.get_legend_handles_labels()
    if heap:
        ax1b = ax1.twinx()
        (line,) = ax1b.plot([t for t, _ in heap], [v for _, v in heap], color="#6d4c41", lw=1.1, ls="--",
                            label="Envoy heap (server.memory_allocated, right)")
        hv = [v for _, v in heap]
        ax1b.set_ylim(max(0, min(hv) - 5), max(hv) + 5)
        ax1b.set_ylabel("heap MiB")
        handles.append(line)
        labels.append(line.get_label())
    ax1.legend(handles, labels, loc="lower right", fontsize=7.5, ncol=3)
    ax1.set_title("memory", fontsize=9, loc="left")

    # answers per bucket, stacked by outcome
    nb = int(duration // BUCKET_S) + 1
    counts = {k: [0] * nb for k, _, _ in OUTCOMES}
    for t, outcome in data["requests"]:
        i = int(t // BUCKET_S)
        if 0 <= i < nb and outcome in counts:
            counts[outcome][i] += 1
    xs = [i * BUCKET_S + BUCKET_S / 2 for i in range(nb)]
    bottom = [0] * nb
    for key, label, color in OUTCOMES:
        v = counts[key]
        if key == "unexpected" and not any(v):
            continue
        ax2.bar(xs, v, width=BUCKET_S * 0.9, bottom=bottom, color=color, label=label, zorder=3)
        bottom = [b + x for b, x in zip(bottom, v)]
    for w in data["windows"]:
        if w["kind"] in ("slow", "token500", "garbage", "down", "restart"):
            ax2.axvspan(w["start"], w["end"], color=FAULT_COLORS[w["kind"]], alpha=0.18, lw=0, zorder=0)
    ax2.set_ylabel(f"answers per {BUCKET_S} s")
    ax2.set_xlabel("seconds since the start")
    ax2.grid(alpha=0.3, axis="y", zorder=0)
    ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=5)
    ax2.set_title("answers (provider unhealthy: shaded)", fontsize=9, loc="left")
    ax2.set_xlim(0, duration)
    fig.suptitle("mesh-oidc soak: faults, Envoy memory and answers over time", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
