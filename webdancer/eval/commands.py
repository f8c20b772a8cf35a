"""``webdancer eval``: load the benchmark, run ``evaluate`` with the engine, print the headline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from webdancer.conf.eval import EvalConfig
from webdancer.envs.tasks import Task

log = logging.getLogger("webdancer.eval")


def load_tasks(cfg: EvalConfig, web: Path) -> tuple[list[Task], str]:
    """-> (the first ``limit`` tasks, benchmark name)."""
    if cfg.benchmark == "synthetic":
        from webdancer.envs.synthetic_tasks import SyntheticTasks
        from webdancer.web.webdir import WebDir

        n = cfg.n if cfg.limit is None else min(cfg.n, cfg.limit)
        hops = (cfg.hops[0], cfg.hops[1])
        tasks: list[Task] = list(SyntheticTasks(WebDir(web).graph(), n=n, hops=hops,
                                                split=cfg.split, seed=cfg.task_seed))
        return tasks, "synthetic"
    from webdancer.eval.loaders import load_benchmark

    loaded = load_benchmark(cfg.benchmark, name=cfg.benchmark_format)
    return list(loaded)[: cfg.limit], loaded.name


def eval_web(cfg: EvalConfig) -> Path:
    """The web directory: ``cfg.web``, or the cached synthetic site for ``benchmark=synthetic``."""
    if cfg.web is not None:
        return Path(cfg.web)
    from webdancer.envs.registration import ensure_synthetic_web

    return ensure_synthetic_web(cfg.pages, cfg.site_seed)


def eval_command(cfg: EvalConfig) -> dict[str, Any]:
    """Run the evaluation ``cfg`` describes; returns the report dict."""
    from webdancer.agents.rollout import RolloutConfig
    from webdancer.eval.runner import evaluate

    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    web = eval_web(cfg)
    tasks, benchmark = load_tasks(cfg, web)
    rollout_cfg = RolloutConfig(max_turns=cfg.max_turns, max_new_tokens=cfg.max_new_tokens,
                                max_context_tokens=cfg.max_context_tokens,
                                temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed,
                                prompt_style=cfg.prompt_style, tool_role=cfg.tool_role,
                                tools=tuple(cfg.tools), date=cfg.date, progress=cfg.progress)
    kind = cfg.engine.partition(":")[0]
    engine_kwargs: dict[str, Any] = {}
    if kind == "hf":
        engine_kwargs = {"dtype": cfg.dtype, "device": cfg.device}
    elif kind == "vllm":
        engine_kwargs = {"dtype": cfg.dtype}
    report = evaluate(tasks, cfg.engine, web, out_dir=cfg.out, k=cfg.k, rollout_cfg=rollout_cfg,
                      reward_spec=cfg.reward, judge_engine=cfg.judge, benchmark=benchmark,
                      mode=cfg.mode, allow_hosts=cfg.allow_hosts, search=cfg.search,
                      engine_kwargs=engine_kwargs, batch_size=cfg.batch_size, resume=cfg.resume,
                      plots=cfg.plots, progress=cfg.progress, env_kwargs=env_kwargs(cfg))
    _print_headline(report, Path(cfg.out))
    return report


def env_kwargs(cfg: EvalConfig) -> dict[str, Any]:
    """The observation budgets of ``cfg`` as ``WebEnv`` arguments."""
    return {"top_k": cfg.top_k, "snippet_chars": cfg.snippet_chars, "visit_mode": cfg.visit_mode,
            "visit_budget_chars": cfg.visit_budget_chars, "max_links": cfg.max_links}


def _print_headline(report: dict[str, Any], out: Path) -> None:
    s = report.get("overall") or {}
    k = report["k"]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    print(f"{report['engine']} on {report['benchmark']}: Avg. Pass@{k} {pct(s.get('avg_pass@k'))}, "
          f"Pass@{k} {pct(s.get('pass@k'))}, Cons@{k} {pct(s.get('cons@k'))}, "
          f"invalid actions {pct(s.get('invalid_action_rate'))}, {s.get('n_episodes', 0)} episodes")
    print(f"report -> {out / 'report.md'}")
