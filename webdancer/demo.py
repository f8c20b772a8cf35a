"""``webdancer demo``: the whole WebDancer recipe on the offline synthetic web.

1. build the synthetic site and its search index
2. synthesize QA with CRAWLQA and E2HQA (train and held-out test splits)
3. sample trajectories with the scripted oracle and filter them in three stages
4. make the tiny model (tokenizer + pretraining on the site's text), SFT it
5. DAPO from the SFT checkpoint
6. evaluate the untrained model, SFT and RL on the same held-out tasks, k runs each

Writes ``report.json``, ``report.md`` and PNGs into the run directory.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from webdancer.conf.demo import STAGES, DemoConfig
from webdancer.envs.tasks import Task, write_jsonl_tasks
from webdancer.envs.web_env import WebEnv

log = logging.getLogger("webdancer.demo")
DATE = "2025-01-01"  # fixed, so prompts (and so runs) are reproducible


def env_factory(cfg: DemoConfig, web: Path, tasks: list[Task]) -> Callable[[], WebEnv]:
    e = cfg.env

    def make() -> WebEnv:
        return WebEnv(web, tasks=tasks, max_turns=e.max_turns, **e.tool_kwargs())

    return make


# ------------------------------------------------------------------------------ stages
def synthesize_qa(cfg: DemoConfig, web: Path) -> dict[str, list[Task]]:
    """CRAWLQA (single page and multi-hop) and E2HQA questions: ``train``, ``val`` (held out
    of the training questions) and ``test`` (questions of the other hash split)."""
    from webdancer.data.crawlqa import GraphQuestionWriter, crawl, questions_from_crawl
    from webdancer.data.e2hqa import synthesize_e2hqa
    from webdancer.web.webdir import WebDir

    q = cfg.qa
    webdir = WebDir(web)
    graph = webdir.graph()
    with webdir.store() as store:
        result = crawl(store, graph.base_url + "/", max_depth=6, max_pages=q.crawl_pages, progress=True)
    writer = GraphQuestionWriter(graph, kinds=("single_page", "multi_hop"), hops=(2, max(2, q.crawlqa_hops_high)))

    def questions(split: str, n_crawl: int, n_e2h: int) -> tuple[list[Task], list[Task]]:
        crawl_tasks = questions_from_crawl(result, writer, n=n_crawl, seed=q.seed, split=split)
        return crawl_tasks, synthesize_e2hqa(graph, web, n=n_e2h, hops=[q.e2hqa_hops], seed=q.seed, split=split,
                                             progress=False)

    crawl_train, e2h_train = questions("train", q.n_crawlqa_train + q.n_crawlqa_val, q.n_e2hqa_train + q.n_e2hqa_val)
    crawl_test, e2h_test = questions("test", q.n_crawlqa_test, q.n_e2hqa_test)
    val = [_as_split(t, "val") for t in crawl_train[q.n_crawlqa_train:] + e2h_train[q.n_e2hqa_train:]]
    return {"train": crawl_train[: q.n_crawlqa_train] + e2h_train[: q.n_e2hqa_train], "val": val,
            "test": crawl_test + e2h_test}


def _as_split(task: Task, split: str) -> Task:
    return Task(task.question, task.answer, task.id.replace("-train-", f"-{split}-"), task.root_url,
                {**task.meta, "split": split})


def oracle_trajectories(cfg: DemoConfig, web: Path, tasks: list[Task], out: Path) -> tuple[Path, dict[str, Any]]:
    from webdancer.data.filtering import FilterConfig, three_stage_filter
    from webdancer.data.formats import write_trajectories
    from webdancer.data.sampling import sample_oracle

    trajs = sample_oracle(env_factory(cfg, web, tasks), tasks, prompt_style=cfg.env.prompt_style, date=DATE,
                          max_turns=cfg.env.max_turns)
    report = three_stage_filter(trajs, FilterConfig(min_tool_calls=1), tasks)
    out.mkdir(parents=True, exist_ok=True)
    report.write(out)
    path = out / "sft.jsonl"
    write_trajectories(report.kept, path, "trajectory")
    write_first_turns(path, out / "first_turns.jsonl")
    return path, dict(report.counts)


def write_first_turns(conversations: Path, out: Path) -> Path:
    """Each conversation cut after its first assistant turn: the short samples of the SFT
    warm-up (``sft.warmup_first_turns``), where the model learns to copy the question's
    entity into its first search before it learns whole trajectories."""
    with conversations.open(encoding="utf-8") as src, out.open("w", encoding="utf-8") as dst:
        for line in src:
            messages = json.loads(line)["messages"]
            first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
            dst.write(json.dumps({"messages": messages[: first + 1]}, ensure_ascii=False) + "\n")
    return out


def site_corpus(web: Path, visit_mode: str = "passages", limit: int | None = None) -> Iterator[str]:
    """The site as the agent reads it: each page with its links, written the way the visit
    tool shows it (``facts``: one sentence, "label: value" row or list item per line).

    Every page ends with a ``Links:`` section, empty when the page has none: the layout the
    demo's defaults were tuned with (the tokenizer is trained on these pages, so a change
    here changes every token id after it).
    """
    from webdancer.envs.tools import visit_text
    from webdancer.web.render import evidence_units, render_page
    from webdancer.web.webdir import WebDir

    with WebDir(web).store() as store:
        for i, page in enumerate(store.pages()):
            if limit is not None and i >= limit:
                return
            r = render_page(page.body, page.url)
            links = "\n".join(link.line() for link in r.links)
            if visit_mode == "facts":
                evidence = "\nEvidence:\n" + "\n".join(evidence_units(r.passages))
                yield visit_text(r, None, evidence, []) + "\n\nLinks:\n" + links
            else:
                yield r.text + "\n" + links


def evaluate_model(cfg: DemoConfig, name: str, model_dir: Path, web: Path, tasks: list[Task],
                   out: Path) -> dict[str, Any]:
    """k runs of every held-out task through ``webdancer eval``'s runner (its own report,
    plots and trajectories land in ``out/name``); -> the demo's summary of them."""
    from webdancer.agents.engines.hf import HFEngine
    from webdancer.agents.rollout import RolloutConfig
    from webdancer.eval.runner import evaluate

    e, k = cfg.env, cfg.eval.runs
    rollout_cfg = RolloutConfig(max_turns=e.max_turns, max_new_tokens=e.max_new_tokens,
                                max_context_tokens=e.max_context_tokens, temperature=cfg.eval.temperature,
                                top_p=cfg.eval.top_p, prompt_style=e.prompt_style, date=DATE, seed=cfg.eval.seed,
                                progress=True)
    engine = HFEngine.from_pretrained(str(model_dir), dtype="float32")
    # The web path, not an env factory: the runner opens the store and index once for all envs.
    report = evaluate(tasks, engine, web, env_kwargs=e.tool_kwargs(), out_dir=out / name, k=k,
                      rollout_cfg=rollout_cfg, reward_spec="exact_match", benchmark="synthetic",
                      batch_size=cfg.eval.batch_size, resume=False, progress=True)
    s = report["overall"]
    by_hops = report["breakdowns"].get("hops", {})
    return {
        "pass_at_1": s["avg_pass@k"],
        "pass_at_1_per_run": s["pass@1_per_run"],
        f"pass_at_{k}": s["pass@k"],
        f"cons_at_{k}": s["cons@k"],
        "invalid_action_rate": s["invalid_action_rate"],
        "tool_calls_mean": s["tool_calls_mean"],
        "turns_mean": s["turns_mean"],
        "termination": s["termination"],
        "by_hops": {key: value["avg_pass@k"] for key, value in by_hops.items()},
        "pass_at_k_curve": s["pass@k_curve"],
        "n_questions": s["n_questions"],
    }


# ------------------------------------------------------------------------------ the run
class Stages:
    """Runs the stages in order, records each one's result in ``out/stages.json``, and with
    ``resume`` reuses recorded results up to ``rerun_from`` (or the first unrecorded stage)."""

    def __init__(self, out: Path, resume: bool, rerun_from: str | None) -> None:
        if rerun_from is not None and rerun_from not in STAGES:
            raise ValueError(f"rerun_from={rerun_from!r} is not a stage; use one of: {', '.join(STAGES)}.")
        self.path = out / "stages.json"
        self.done: dict[str, Any] = {}
        if resume and self.path.exists():
            recorded = json.loads(self.path.read_text(encoding="utf-8"))
            for name in STAGES:
                if name == rerun_from or name not in recorded:
                    break
                self.done[name] = recorded[name]
        self.timings: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        n = STAGES.index(name) + 1
        if name in self.done:
            self.timings[name] = self.done[name]["seconds"]
            print(f"[{n}/{len(STAGES)}] {name}: reusing the result in {self.path.parent}", flush=True)
            return self.done[name]["result"]
        print(f"\n[{n}/{len(STAGES)}] {name}", flush=True)
        t0 = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - t0, 2)
        print(f"[{n}/{len(STAGES)}] {name} done in {self.timings[name]:.1f} s", flush=True)
        self.done[name] = {"result": result, "seconds": self.timings[name]}
        self.path.write_text(json.dumps(self.done, indent=1, default=str), encoding="utf-8")
        return result


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    from webdancer.demo_report import write_report
    from webdancer.demo_stages import make_base_model, rl_stage, sft_stage
    from webdancer.envs.tasks import load_jsonl_tasks
    from webdancer.web.webdir import build_synthetic_web

    os.environ.setdefault("WANDB_SILENT", "true")  # the stages' own progress bars say enough
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.model.seed)
    torch.manual_seed(cfg.model.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out, cfg.resume, cfg.rerun_from)
    web = out / "web"

    def build_web() -> dict[str, Any]:
        _, stats = build_synthetic_web(web, cfg.web.pages, cfg.web.seed, overwrite=True)
        return {"pages": stats.pages}

    def make_qa() -> dict[str, int]:
        splits = synthesize_qa(cfg, web)
        for split, tasks in splits.items():
            write_jsonl_tasks(tasks, out / "qa" / f"{split}.jsonl")
        print(", ".join(f"{len(tasks)} {split}" for split, tasks in splits.items()) + " questions")
        return {split: len(tasks) for split, tasks in splits.items()}

    def trajectories() -> dict[str, Any]:
        path, counts = oracle_trajectories(cfg, web, list(load_jsonl_tasks(out / "qa" / "train.jsonl")),
                                           out / "data")
        print(f"filter: {counts}")
        return {"path": str(path), "filter": counts}

    info: dict[str, Any] = {"web": stages.run("web", build_web)}
    info["qa"] = stages.run("qa", make_qa)
    info["trajectories"] = stages.run("trajectories", trajectories)
    base = Path(stages.run("model", lambda: str(make_base_model(cfg, web, out / "model"))))
    sft = Path(stages.run("sft", lambda: str(sft_stage(cfg, base, Path(info["trajectories"]["path"]),
                                                        out / "sft"))))
    rl = Path(stages.run("rl", lambda: str(rl_stage(cfg, sft, web, out / "qa", out / "rl"))))

    def evaluate_all() -> dict[str, Any]:
        split = cfg.eval.split
        held_out = list(load_jsonl_tasks(out / "qa" / f"{split}.jsonl"))
        results: dict[str, Any] = {"split": split}
        for name, path in (("base", base), ("sft", sft), ("rl", rl)):
            results[name] = evaluate_model(cfg, name, path, web, held_out, out / "eval" / split)
            print(f"{name}: Pass@1 {results[name]['pass_at_1']:.3f}  "
                  f"invalid actions {results[name]['invalid_action_rate']:.3f}", flush=True)
        return results

    results = stages.run("eval", evaluate_all)
    report = {**results, "timings_s": stages.timings, "info": info, "config": asdict(cfg)}
    report = write_report(report, out)
    print(f"report -> {out / 'report.md'}")
    return report


def demo_command(cfg: DemoConfig) -> dict[str, Any]:
    return run_demo(cfg)
