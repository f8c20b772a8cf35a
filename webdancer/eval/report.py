"""The eval report: ``report.json``, ``report.md`` (tables) and PNG plots.

Breakdowns are added for what the tasks carry: GAIA levels (``meta["level"]``),
WebWalkerQA's six cells of source type x difficulty (``meta["type"]``,
``meta["difficulty_level"]``) and hop counts of synthetic tasks (``meta["hops"]``);
each has an ``overall`` row. Accuracies are fractions in [0, 1]; the markdown shows
them as percentages.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from webdancer.eval.metrics import (
    WEBWALKER_CELLS,
    EpisodeResult,
    breakdown,
    by_gaia_level,
    by_webwalker_cell,
    summarize,
)

GAIA_LEVELS = ("level 1", "level 2", "level 3")


def by_hops(result: EpisodeResult) -> str | None:
    """Synthetic-task group key ``"<n> hops"`` from ``meta["hops"]``."""
    hops = result.meta.get("hops")
    return None if hops is None else _hops_label(hops)


def _hops_label(hops: Any) -> str:
    return f"{hops} hop" if hops == 1 else f"{hops} hops"


def _hops_order(results: Sequence[EpisodeResult]) -> list[str]:
    counts = sorted({int(r.meta["hops"]) for r in results
                     if isinstance(r.meta.get("hops"), (int, float))})
    return [_hops_label(n) for n in counts]


# (name, key function, fixed group order, plot file)
BREAKDOWNS: tuple[tuple[str, Callable[[EpisodeResult], str | None], Sequence[str], str], ...] = (
    ("gaia_level", by_gaia_level, GAIA_LEVELS, "accuracy_by_level.png"),
    ("webwalkerqa", by_webwalker_cell, WEBWALKER_CELLS, "accuracy_by_difficulty.png"),
    ("hops", by_hops, (), "accuracy_by_hops.png"),
)


def build_report(results: Sequence[EpisodeResult], k: int, **info: Any) -> dict[str, Any]:
    """Overall metrics, every breakdown the tasks allow, the tool-call histogram, and ``info``."""
    report: dict[str, Any] = dict(info)
    report["k"] = k
    if not results:
        report.update(overall=None, breakdowns={}, tool_calls_histogram={})
        return report
    report["overall"] = summarize(results, k, runs=range(k))
    report["breakdowns"] = {}
    for name, key_fn, order, _ in BREAKDOWNS:
        if any(key_fn(r) is not None for r in results):
            fixed = _hops_order(results) if name == "hops" else order
            report["breakdowns"][name] = breakdown(results, key_fn, k, order=fixed)
    counts = Counter(r.tool_calls for r in results)
    report["tool_calls_histogram"] = {str(n): c for n, c in sorted(counts.items())}
    return report


def write_report(report: Mapping[str, Any], results: Sequence[EpisodeResult],
                 out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and (with ``plots``) the PNGs; -> their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    text = json.dumps(_finite(report), indent=2, ensure_ascii=False)
    paths["json"].write_text(text, encoding="utf-8")
    paths["md"].write_text(markdown(report), encoding="utf-8")
    if plots and report.get("overall"):
        paths.update(write_plots(report, results, out))
    return paths


def _finite(value: Any) -> Any:
    """NaN and infinities as None, so that report.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ------------------------------------------------------------------------------ markdown


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _overall_rows(s: Mapping[str, Any]) -> list[list[str]]:
    k = s["k"]
    per_run = ", ".join(_pct(v) for v in s["pass@1_per_run"])
    rows = [
        [f"Avg. Pass@{k} (mean Pass@1, %)", _pct(s["avg_pass@k"])],
        ["Best Pass@1 (%)", _pct(s["best_pass@1"])],
        ["Pass@1 per run (%)", per_run],
        [f"Pass@{k} (%)", _pct(s["pass@k"])],
        [f"Cons@{k} (%)", _pct(s["cons@k"])],
        ["Invalid-action rate (%)", _pct(s["invalid_action_rate"])],
        ["Tool calls per episode", _num(s["tool_calls_mean"])],
        ["Turns per episode", _num(s["turns_mean"])],
        ["Generated tokens per episode", _num(s["tokens_mean"], 1)],
        ["Questions / episodes", f"{s['n_questions']} / {s['n_episodes']}"],
        ["Unjudged episodes", str(s["n_unjudged"])],
        ["Incomplete questions", str(s["n_incomplete"])],
    ]
    if s.get("pass@k_unbiased") is not None:
        rows.insert(5, [f"pass@{k} (unbiased, %)", _pct(s["pass@k_unbiased"])])
    return rows


def _breakdown_rows(groups: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    return [[name, str(s["n_questions"]), _pct(s["avg_pass@k"]), _pct(s["best_pass@1"]),
             _pct(s["pass@k"]), _pct(s["cons@k"]), _pct(s["invalid_action_rate"]),
             _num(s["tool_calls_mean"])]
            for name, s in groups.items()]


def markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: settings, overall metrics, breakdowns, termination reasons."""
    k = report["k"]
    lines = [f"# Evaluation: {report.get('engine', '?')} on {report.get('benchmark', '?')}", ""]
    run = report.get("run", {})
    lines += [f"- k = {k} runs per question, {run.get('n_tasks', '?')} questions",
              (f"- answer reward: `{report.get('answer_reward', '?')}`; "
              f"reward: `{report.get('reward', {})}`"),
              f"- web mode: {report.get('mode', '?')}",
              (f"- this invocation ran {run.get('episodes_run', '?')} episodes and resumed "
              f"{run.get('episodes_resumed', '?')} in {_num(run.get('wall_s'), 1)} s"), ""]
    overall = report.get("overall")
    if not overall:
        return "\n".join(lines + ["No episodes.", ""])
    lines += ["## Overall", ""] + _table(["metric", "value"], _overall_rows(overall)) + [""]
    titles = {"gaia_level": "GAIA by level", "hops": "By hops",
              "webwalkerqa": "WebWalkerQA by source type x difficulty"}
    header = ["group", "questions", f"Avg. Pass@{k}", "Best Pass@1", f"Pass@{k}", f"Cons@{k}",
              "invalid %", "tool calls"]
    for name, groups in report.get("breakdowns", {}).items():
        table = _table(header, _breakdown_rows(groups))
        lines += [f"## {titles.get(name, name)}", ""] + table + [""]
    lines += _curve_section(overall, report.get("breakdowns", {}))
    termination = overall.get("termination", {})
    total = sum(termination.values()) or 1
    rows = [[reason or "(none)", str(n), _pct(n / total)] for reason, n in termination.items()]
    lines += ["## Termination reasons", ""] + _table(["reason", "episodes", "share %"], rows) + [""]
    hist = report.get("tool_calls_histogram", {})
    table = _table(["tool calls", "episodes"], [[n, str(c)] for n, c in hist.items()])
    lines += ["## Tool calls per episode", ""] + table + [""]
    return "\n".join(lines)


def _curve_groups(overall: Mapping[str, Any],
                  breakdowns: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Mapping[str, Any]]:
    """{row name: pass@k curve}: overall, then every breakdown's groups."""
    rows = {"overall": overall.get("pass@k_curve") or {}}
    for groups in breakdowns.values():
        rows.update({name: s.get("pass@k_curve") or {} for name, s in groups.items() if name != "overall"})
    return rows


def _curve_section(overall: Mapping[str, Any], breakdowns: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    curve = overall.get("pass@k_curve") or {}
    if len(curve) < 2:  # one run: the curve is pass@1 alone
        return []
    ks = list(curve)
    rows = [[name, *(_pct(c.get(k)) for k in ks)] for name, c in _curve_groups(overall, breakdowns).items()]
    return ([f"## pass@k over all {ks[-1]} runs (unbiased, %)", ""]
            + _table(["group", *(f"pass@{k}" for k in ks)], rows) + [""])


# ------------------------------------------------------------------------------ plots


def plot_pass_at_k(curves: Mapping[str, Mapping[str, float | None]], title: str, path: Path, *,
                   bold: str | None = None) -> None:
    """One line per ``{name: {str(k): pass@k}}`` curve on a log2 k axis, in percent; the
    curve named ``bold`` drawn thicker. Drawn without pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 3.4), layout="constrained")
    ax = fig.add_subplot()
    ticks: set[int] = set()
    for name, curve in curves.items():
        ks = [int(k) for k, v in curve.items() if v is not None]
        ticks.update(ks)
        ax.plot(ks, [100 * curve[str(k)] for k in ks], marker="o", label=name,
                linewidth=2.2 if name == bold else 1.2)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks), [str(k) for k in sorted(ticks)])
    ax.set_xlabel("k (tries per question)")
    ax.set_ylabel("pass@k (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def write_plots(report: Mapping[str, Any], results: Sequence[EpisodeResult],
                out: Path) -> dict[str, Path]:
    """Accuracy bars per breakdown, the pass@k curve (two runs or more) and the tool-call
    histogram; drawn without pyplot, so no display and no global backend switch are needed."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    paths: dict[str, Path] = {}
    k = report["k"]
    for name, _, _, file_name in BREAKDOWNS:
        groups = report.get("breakdowns", {}).get(name)
        if not groups:
            continue
        labels = list(groups)
        fig = Figure(figsize=(max(4.0, 1.1 * len(labels) + 1.5), 3.4), layout="constrained")
        ax = fig.add_subplot()
        xs = range(len(labels))
        bars = ((-0.2, "avg_pass@k", f"Avg. Pass@{k}"), (0.2, "pass@k", f"Pass@{k}"))
        for offset, key, legend in bars:
            heights = [100 * (groups[g][key] or 0.0) for g in labels]
            ax.bar([x + offset for x in xs], heights, width=0.4, label=legend)
        tilt = len(labels) > 4
        ax.set_xticks(list(xs), labels, rotation=30 if tilt else 0,
                      ha="right" if tilt else "center")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        title = f"{report.get('engine', '')}: accuracy by {name.replace('_', ' ')}"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
        paths[name] = out / file_name
        fig.savefig(paths[name], dpi=110)
    curves = _curve_groups(report["overall"], report.get("breakdowns", {}))
    if len(curves["overall"]) >= 2:
        paths["pass_at_k"] = out / "pass_at_k.png"
        plot_pass_at_k(curves, f"{report.get('engine', '')}: pass@k", paths["pass_at_k"], bold="overall")
    counts = Counter(r.tool_calls for r in results)
    fig = Figure(figsize=(4.5, 3.2), layout="constrained")
    ax = fig.add_subplot()
    top = max(counts) if counts else 0
    ax.bar(range(top + 1), [counts.get(n, 0) for n in range(top + 1)], width=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("tool calls per episode")
    ax.set_ylabel("episodes")
    ax.set_title("tool calls", fontsize=9)
    paths["tool_calls"] = out / "tool_calls_hist.png"
    fig.savefig(paths["tool_calls"], dpi=110)
    return paths
