"""Run logging shared by SFT, RL and the demo: ``metrics.jsonl``, wandb, curves.

Every step appends one JSON object ``{"step": N, "component/metric": value, ...}`` to
``run_dir/metrics.jsonl``. wandb gets the same numbers (offline unless the user
logs in); a wandb failure is a warning, never the end of a run. ``close`` draws the
main curves to ``run_dir/curves.png``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("webdancer")
DEFAULT_PLOT_WORDS = ("loss", "reward", "accuracy", "lr")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_metrics(metrics_jsonl: str | Path, out_png: str | Path, keys: Sequence[str] | None = None) -> Path | None:
    """One subplot per key (at most 9); keys missing from every row are skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_jsonl)
    if not rows:
        return None
    present = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "step"]
    if keys is None:
        keys = [k for k in present if any(w in k for w in DEFAULT_PLOT_WORDS)]
    keys = [k for k in keys if k in present][:9]
    if not keys:
        return None
    cols = min(3, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


class RunLogger:
    """Append-only metrics of one run; ``resume_step`` drops rows after the checkpoint."""

    def __init__(self, run_dir: str | Path, *, config: Mapping[str, Any], project: str = "webdancer",
                 wandb_mode: str = "offline", name: str | None = None, resume_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        elif resume_step is None and self.path.exists():
            self.path.unlink()  # a fresh run in an old directory starts a fresh log
        (self.run_dir / "config.json").write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")
        self._wandb = self._start_wandb(config, project, wandb_mode, name)

    def _start_wandb(self, config: Mapping[str, Any], project: str, mode: str, name: str | None) -> Any:
        mode = os.environ.get("WANDB_MODE", mode)
        if mode == "disabled":
            return None
        try:
            import wandb

            return wandb.init(project=project, name=name or self.run_dir.name, dir=str(self.run_dir), mode=mode,
                              config=dict(config), reinit="finish_previous")
        except Exception as e:  # noqa: BLE001  wandb raises many types; logging must never end a training run
            log.warning("wandb is off for this run (%s: %s); metrics still go to %s", type(e).__name__, e, self.path)
            return None

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            try:
                self._wandb.log(dict(metrics), step=int(step))
            except Exception as e:  # noqa: BLE001  as above
                log.warning("wandb.log failed (%s); continuing with metrics.jsonl only", e)
                self._wandb = None

    def close(self, plot_keys: Sequence[str] | None = None) -> Path | None:
        png = plot_metrics(self.path, self.run_dir / "curves.png", plot_keys)
        if self._wandb is not None:
            try:
                self._wandb.finish()
            except Exception as e:  # noqa: BLE001  as above
                log.warning("wandb.finish failed (%s)", e)
        return png
