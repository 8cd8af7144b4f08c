#!/usr/bin/env python3
"""Draws a Sluice drain report (`sluice --drain-report FILE`) as a PNG timeline.

    scripts/drain-timeline.py drain-report.json -o drain.png

Three panels over the seconds since t=0 (the first signal, the rehearsal start or the app's exit):
new connections and requests per 100 ms, requests in flight, and connections by state (stacked); a
vertical line at each phase mark, the last new connection and the last request on an old connection;
forced closes annotated. The title names the trigger, the exit code and the last new connection.

Needs matplotlib (`pip install matplotlib`, or `apt-get install python3-matplotlib`); renders with
the Agg backend (no display). Exit codes: 0 drawn, 1 matplotlib missing, 2 unreadable or not a report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STATES = ("active", "idle", "tunnel", "closing")
STATE_COLOURS = {"active": "#1f77b4", "idle": "#aec7e8", "tunnel": "#9467bd", "closing": "#ff7f0e"}
MARK_COLOURS = {"propagating": "#2ca02c", "draining": "#d62728", "stopped": "#333333", "forced": "#8c564b",
                "rehearsing": "#17becf"}
BUCKET = 0.1


def fail(msg: str, code: int = 2) -> None:
    print(f"drain-timeline: {msg}", file=sys.stderr)
    sys.exit(code)


def load(path: Path) -> dict:
    """The report, checked enough to draw it; exits 2 with one line naming the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except OSError as e:
        fail(f"{path}: cannot read it: {e.strerror or e}")
    except UnicodeDecodeError:
        fail(f"{path}: not a text file (a drain report is JSON)")
    try:
        rep = json.loads(text)
    except ValueError as e:
        fail(f"{path}: not valid JSON ({e})")
    if not isinstance(rep, dict):
        fail(f"{path}: not a Sluice drain report (the top level is not an object)")
    if not isinstance(rep.get("buckets"), list):
        fail(f"{path}: not a Sluice drain report: no \"buckets\" list (write one with sluice --drain-report FILE)")
    if not isinstance(rep.get("marks"), list):
        fail(f"{path}: not a Sluice drain report: no \"marks\" list")
    for i, b in enumerate(rep["buckets"]):
        if not isinstance(b, dict) or not isinstance(b.get("t"), (int, float)):
            fail(f"{path}: bucket {i} has no number \"t\"")
    for i, m in enumerate(rep["marks"]):
        if not isinstance(m, dict) or not isinstance(m.get("t"), (int, float)) or "phase" not in m:
            fail(f"{path}: mark {i} needs \"phase\" and a number \"t\"")
    return rep


def num(v, default=0.0) -> float:
    return float(v) if isinstance(v, (int, float)) else default


def fmt_s(v) -> str:
    return f"{v:.2f} s" if isinstance(v, (int, float)) else "none"


def draw(rep: dict, out: Path, title: str | None, dpi: int) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("needs matplotlib: pip install matplotlib (or apt-get install python3-matplotlib)", 1)

    buckets = sorted(rep["buckets"], key=lambda b: b["t"])
    t = [b["t"] for b in buckets]
    new_conns = [num(b.get("new_connections")) for b in buckets]
    requests = [num(b.get("requests")) for b in buckets]
    in_flight = [num(b.get("in_flight")) for b in buckets]
    t_end = [x + BUCKET for x in t]           # in_flight and connections are sampled at a bucket's end
    states = {s: [num((b.get("connections") or {}).get(s)) for b in buckets] for s in STATES}
    marks = sorted(rep["marks"], key=lambda m: m["t"])
    last_t = max([x + BUCKET for x in t] + [m["t"] for m in marks] + [0.5])

    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True,
                                        gridspec_kw={"height_ratios": [1.3, 1, 1]})

    # 1. arrivals per 100 ms
    ax1.bar(t, new_conns, width=BUCKET * 0.9, align="edge", color="#2ca02c", alpha=0.75,
            label="new connections / 100 ms")
    ax1.set_ylabel("new connections\nper 100 ms")
    ax1r = ax1.twinx()
    ax1r.step(t_end, requests, where="pre", color="#1f77b4", linewidth=1.4, label="requests started / 100 ms")
    ax1r.set_ylabel("requests\nper 100 ms")
    ax1.set_ylim(bottom=0)
    ax1r.set_ylim(bottom=0)
    h1, l1 = ax1.get_legend_handles_labels()
    h2, l2 = ax1r.get_legend_handles_labels()
    ax1.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8, framealpha=0.9)

    # 2. requests in flight
    ax2.step(t_end, in_flight, where="pre", color="#d62728", linewidth=1.4)
    ax2.fill_between(t_end, in_flight, step="pre", color="#d62728", alpha=0.15)
    ax2.set_ylabel("requests\nin flight")
    ax2.set_ylim(bottom=0)

    # 3. connections by state
    if buckets:
        ax3.stackplot(t_end, *[states[s] for s in STATES], step="pre", labels=list(STATES),
                      colors=[STATE_COLOURS[s] for s in STATES], alpha=0.85)
    ax3.set_ylabel("connections\nby state")
    ax3.set_ylim(bottom=0)
    ax3.legend(loc="upper right", fontsize=8, ncol=4, framealpha=0.9)
    ax3.set_xlabel("seconds since t=0 (%s)" % {"signal": "the first signal", "rehearsal": "the rehearsal start",
                                                "app-exit": "the app's exit"}.get(rep.get("trigger"), "start"))
    ax3.set_xlim(min([0.0] + t), last_t)

    # vertical lines: phase marks, the last new connection, the last request on an old connection
    for ax in (ax1, ax2, ax3):
        for m in marks:
            ax.axvline(m["t"], color=MARK_COLOURS.get(m["phase"], "#7f7f7f"), linewidth=1.2, linestyle="-")
        lnc = rep.get("last_new_connection_seconds")
        if isinstance(lnc, (int, float)):
            ax.axvline(lnc, color="#2ca02c", linewidth=1.0, linestyle="--")
        lor = rep.get("last_old_connection_request_seconds")
        if isinstance(lor, (int, float)):
            ax.axvline(lor, color="#7f7f7f", linewidth=0.9, linestyle=":")
        ax.grid(axis="y", alpha=0.3)
    top = ax1.get_xaxis_transform()
    for i, m in enumerate(marks):
        near_end = m["t"] > 0.85 * last_t
        ax1.text(m["t"], 1.01 + 0.07 * (i % 2), f"{m['phase']} {m['t']:.2f}s" + (" " if near_end else ""),
                 transform=top, fontsize=8, color=MARK_COLOURS.get(m["phase"], "#7f7f7f"),
                 ha="right" if near_end else "left", va="bottom")
    lnc = rep.get("last_new_connection_seconds")
    if isinstance(lnc, (int, float)):
        ax2.text(lnc, 0.95, f" last new connection {lnc:.2f}s", transform=ax2.get_xaxis_transform(),
                 fontsize=8, color="#2ca02c", ha="left", va="top")
    lor = rep.get("last_old_connection_request_seconds")
    if isinstance(lor, (int, float)):
        ax2.text(lor, 0.78, f" last request on an old connection {lor:.2f}s",
                 transform=ax2.get_xaxis_transform(), fontsize=8, color="#555555", ha="left", va="top")

    forced = int(num(rep.get("forced_closes")))
    if forced or rep.get("outcome") == "deadline":
        at = next((m["t"] for m in marks if m["phase"] == "forced"), marks[-1]["t"] if marks else last_t)
        ax3.annotate(f"forced: {forced} connection{'s' if forced != 1 else ''} cut", xy=(at, 0),
                     xytext=(at, 0.6), textcoords=ax3.get_xaxis_transform(), fontsize=9, color="#8c564b",
                     ha="right", arrowprops={"arrowstyle": "->", "color": "#8c564b"})

    delay = rep.get("drain_delay_seconds")
    quiet = rep.get("drain_quiet_seconds")
    sub = [f"drain-delay {fmt_s(delay)}"]
    if isinstance(quiet, (int, float)):
        sub.append(f"drain-quiet {fmt_s(quiet)} (min {fmt_s(rep.get('drain_delay_min_seconds'))})")
    sub.append(f"drain-timeout {fmt_s(rep.get('drain_timeout_seconds'))}")
    if rep.get("start_wall_time"):
        sub.append(f"t=0 at {rep['start_wall_time']}")
    head = title or (f"Sluice drain: trigger {rep.get('trigger', '?')}, exit code {rep.get('exit_code', '?')}"
                     f" ({rep.get('outcome', '?')}), last new connection {fmt_s(lnc)}"
                     + (f", {forced} forced close{'s' if forced != 1 else ''}" if forced else ""))
    fig.suptitle(head + "\n" + ", ".join(sub), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.subplots_adjust(hspace=0.12)
    try:
        fig.savefig(out, dpi=dpi)
    except OSError as e:
        fail(f"{out}: cannot write it: {e.strerror or e}")
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", help="the JSON file written by sluice --drain-report")
    ap.add_argument("-o", "--output", default="drain.png", help="PNG to write (default drain.png)")
    ap.add_argument("--title", default=None, help="replace the first title line")
    ap.add_argument("--dpi", type=int, default=110)
    a = ap.parse_args(argv)
    rep = load(Path(a.report))
    draw(rep, Path(a.output), a.title, a.dpi)
    print(f"drain-timeline: wrote {a.output} ({len(rep['buckets'])} buckets, "
          f"{', '.join(m['phase'] for m in rep['marks'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
