"""The demo's report: ``report.json``, ``report.md`` and PNG plots."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from webdancer.eval.report import plot_pass_at_k
from webdancer.runlog import plot_metrics, read_metrics

MODELS = ("base", "sft", "rl")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _bars_by_hops(report: dict[str, Any], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in report["rl"]["by_hops"] if g != "overall"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.27
    for i, name in enumerate(MODELS):
        values = [report[name]["by_hops"].get(g) or 0.0 for g in groups]
        ax.bar([x + (i - 1) * width for x in range(len(groups))], values, width, label=name)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("Pass@1 (mean of runs)")
    ax.set_ylim(0, 1)
    ax.set_title("Held-out accuracy by hop count")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def compare(report: dict[str, Any], new: str, old: str) -> dict[str, Any]:
    """``new`` against ``old`` on Pass@1: the gain, the run-to-run spread (the wider range of
    either model's per-run Pass@1) and whether the gain exceeds it, and the gain's standard
    error from the two models' per-run Pass@1 (the sampling noise of the runs on these
    questions; None with fewer than two runs). The range grows with the number of runs and
    the standard error shrinks, so with many runs a gain can be several standard errors
    and still inside the spread."""
    runs = {m: report[m]["pass_at_1_per_run"] for m in (new, old)}
    delta = report[new]["pass_at_1"] - report[old]["pass_at_1"]
    spread = max(max(r) - min(r) for r in runs.values())
    se = (math.sqrt(sum(statistics.variance(r) / len(r) for r in runs.values()))
          if all(len(r) >= 2 for r in runs.values()) else None)
    invalid = report[new]["invalid_action_rate"] - report[old]["invalid_action_rate"]
    return {"pass_at_1_gain": delta, "run_spread": spread, "beyond_spread": delta > spread,
            "pass_at_1_gain_se": se, "gain_in_se": delta / se if se else None,
            "invalid_action_rate_change": invalid}


def write_report(report: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write ``report.json`` and ``report.md``; -> the report with its ``comparisons`` added."""
    out = Path(out)
    comparisons = {f"{new}_vs_{old}": compare(report, new, old) for new, old in (("sft", "base"), ("rl", "sft"))}
    report = {**report, "comparisons": comparisons}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    k = report["config"]["eval"]["runs"]
    rows = [
        (f"| model | Pass@1 (mean of runs) | Pass@1 per run | Pass@{k} | Cons@{k} | invalid-action rate "
        "| tool calls / episode |"),
        "|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        r = report[name]
        per_run = ", ".join(_fmt(x) for x in r["pass_at_1_per_run"])
        rows.append(f"| {name} | {_fmt(r['pass_at_1'])} | {per_run} | {_fmt(r[f'pass_at_{k}'])} | "
                    f"{_fmt(r[f'cons_at_{k}'])} | {_fmt(r['invalid_action_rate'])} | {_fmt(r['tool_calls_mean'])} |")
    gain_rows = [("| comparison | Pass@1 gain | standard error (gain / SE) | run-to-run spread "
                  "| gain beyond the spread | invalid-action rate change |"), "|---|---|---|---|---|---|"]
    for key, c in report["comparisons"].items():
        se = "-" if c["pass_at_1_gain_se"] is None else f"{c['pass_at_1_gain_se']:.3f}"
        if c["gain_in_se"] is not None:
            se += f" ({c['gain_in_se']:+.1f})"
        gain_rows.append(f"| {key.replace('_vs_', ' vs ')} | {c['pass_at_1_gain']:+.3f} | {se} | {c['run_spread']:.3f} | "
                         f"{'yes' if c['beyond_spread'] else 'no'} | {c['invalid_action_rate_change']:+.3f} |")
    hop_keys = [g for g in report["rl"]["by_hops"] if g != "overall"]
    hop_rows = ["| model | " + " | ".join(hop_keys) + " |", "|---|" + "---|" * len(hop_keys)]
    for name in MODELS:
        hop_rows.append(f"| {name} | " + " | ".join(_fmt(report[name]["by_hops"].get(g)) for g in hop_keys) + " |")
    curve_keys = list(report["rl"].get("pass_at_k_curve") or {})
    curve_rows = ["| model | " + " | ".join(f"pass@{k}" for k in curve_keys) + " |", "|---|" + "---|" * len(curve_keys)]
    for name in MODELS:
        curve = report[name].get("pass_at_k_curve") or {}
        curve_rows.append(f"| {name} | " + " | ".join(_fmt(curve.get(k)) for k in curve_keys) + " |")
    curve_lines = (["## pass@k (unbiased, from all runs)", "",
                    "Where pass@1 sits under pass@k is what sharpening the policy can still take.", "",
                    *curve_rows, "", "![pass@k](pass_at_k.png)", ""] if len(curve_keys) >= 2 else [])
    timing_rows = ["| stage | seconds |", "|---|---|"]
    timing_rows += [f"| {stage} | {secs:.1f} |" for stage, secs in report["timings_s"].items()]
    timing_rows.append(f"| total | {sum(report['timings_s'].values()):.1f} |")
    info = report["info"]
    split = report.get("split", "test")
    rl_rows = read_metrics(out / "rl" / "metrics.jsonl")
    by_hops = sorted({k for r in rl_rows for k in r if k.startswith("by_hops/")})
    lines = [
        "# webdancer demo",
        "",
        (f"Synthetic web of {info['web']['pages']} pages; {info['qa']['train']} training questions and "
        f"{info['qa'][split]} held-out questions of the {split} split (CRAWLQA + E2HQA); {k} runs per question at "
        f"temperature {report['config']['eval']['temperature']}."),
        "",
        f"## Held-out results ({split} split)",
        "",
        *rows,
        "",
        *gain_rows,
        "",
        "## Pass@1 by hop count",
        "",
        *hop_rows,
        "",
        "![accuracy by hops](accuracy_by_hops.png)",
        "",
        *curve_lines,
        "## Training curves",
        "",
        "![RL curves](rl_curves.png)",
        "",
        *(["Rollout accuracy and share of the kept groups by hop count:", "", "![RL by hops](rl_by_hops.png)", ""]
          if by_hops else []),
        "![SFT loss](sft_curves.png)",
        "",
        "## Trajectory filter",
        "",
        f"{json.dumps(info['trajectories']['filter'])}",
        "",
        "## Stage timings",
        "",
        *timing_rows,
        "",
    ]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    _bars_by_hops(report, out / "accuracy_by_hops.png")
    if curve_lines:
        plot_pass_at_k({name: report[name]["pass_at_k_curve"] for name in MODELS},
                       f"Held-out pass@k ({split} split)", out / "pass_at_k.png")
    if rl_rows:
        plot_metrics(out / "rl" / "metrics.jsonl", out / "rl_curves.png",
                     ["reward/mean", "rollout/accuracy", "eval/accuracy", "rollout/invalid_action_rate",
                      "actor/entropy", "filter/kept_group_ratio"])
    if by_hops:  # which hop counts the kept groups came from, and how each one's accuracy moved
        plot_metrics(out / "rl" / "metrics.jsonl", out / "rl_by_hops.png", by_hops)
    if read_metrics(out / "sft" / "metrics.jsonl"):
        plot_metrics(out / "sft" / "metrics.jsonl", out / "sft_curves.png", ["sft/loss", "sft/lr"])
    return report
