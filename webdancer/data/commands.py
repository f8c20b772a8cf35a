"""What the ``webdancer synth ...`` commands do, given their config dataclasses.

    webdancer synth qa web=runs/web/site n=200 n_test=50
    webdancer synth trajectories tasks=.../tasks.train.jsonl engines='[oracle,hf:runs/sft/model]' k=4
    webdancer synth filter .../trajectories.jsonl min_tool_calls=2
    webdancer synth convert .../kept.jsonl out=sft.jsonl out_format=messages

Hydra plumbing lives in ``webdancer.cli``; these functions take plain dataclasses so
they can be called from Python and tests as well.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webdancer.agents.engines.factory import make_engine
from webdancer.conf.synth import (
    EngineSpec,
    SynthConvertConfig,
    SynthFilterConfig,
    SynthQAConfig,
    SynthTrajectoriesConfig,
    engine_labels,
    parse_engine_spec,
)
from webdancer.data.filtering import (
    ChatQualityJudge,
    FilterConfig,
    FilterReport,
    three_stage_filter,
)
from webdancer.data.formats import convert, read_trajectories, write_trajectories
from webdancer.envs.tasks import Task, load_jsonl_tasks, write_jsonl_tasks

log = logging.getLogger("webdancer.data")


def run_dir() -> Path:
    """The Hydra run directory when running under Hydra, else the current directory."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def _output(out: str, default_name: str) -> Path:
    return Path(out) if out else run_dir() / default_name


# ---------------------------------------------------------------- synth qa


def _synthesize(cfg: SynthQAConfig, store: Any, graph: Any, kind: str, split: str, n: int) -> list[Task]:
    if kind == "crawlqa":
        from webdancer.data.crawlqa import GraphQuestionWriter, synthesize_crawlqa

        root = cfg.root_url or graph.base_url.rstrip("/") + "/"
        writer = GraphQuestionWriter(graph, kinds=cfg.crawlqa_kinds, hops=(cfg.hops[0], cfg.hops[1]))
        return synthesize_crawlqa(store, root, writer, n=n, seed=cfg.seed, max_depth=cfg.crawl_depth,
                                  max_pages=cfg.crawl_pages, split=split, test_fraction=cfg.test_fraction,
                                  progress=cfg.progress)
    from webdancer.data.e2hqa import synthesize_e2hqa

    return synthesize_e2hqa(graph, store, n=n, hops=(cfg.hops[0], cfg.hops[1]), seed=cfg.seed, split=split,
                            test_fraction=cfg.test_fraction, progress=cfg.progress)


def qa(cfg: SynthQAConfig) -> dict[str, Path]:
    """Synthesize tasks of each kind for each split; -> {split: JSONL path}."""
    from webdancer.web.webdir import WebDir

    webdir = WebDir(cfg.web)
    graph = webdir.graph()
    kinds = ["crawlqa", "e2hqa"] if cfg.kind == "both" else [cfg.kind]
    splits = ["train", "test"] if cfg.split == "both" else [cfg.split]
    stem = _output(cfg.out, "tasks.jsonl")
    paths: dict[str, Path] = {}
    with webdir.store() as store:
        for split in splits:
            n = cfg.n if split == "train" else cfg.n_test
            tasks: list[Task] = []
            for kind in kinds:
                made = _synthesize(cfg, store, graph, kind, split, n)
                log.info("%s %s: %d tasks", kind, split, len(made))
                tasks += made
            path = stem.with_name(f"{stem.stem}.{split}{stem.suffix or '.jsonl'}")
            write_jsonl_tasks(tasks, path)
            paths[split] = path
            print(f"{len(tasks)} {split} tasks ({', '.join(kinds)}) -> {path}")
    return paths


# ---------------------------------------------------------------- synth trajectories


def _env_factory(cfg: SynthTrajectoriesConfig) -> tuple[Callable[[], Any], Any]:
    """-> (env_fn, store): every env shares one snapshot store and search index."""
    from webdancer.envs.backends import open_web
    from webdancer.envs.web_env import WebEnv

    store, search = open_web(cfg.web)
    return (lambda: WebEnv(store=store, search=search, max_turns=cfg.max_turns)), store


def _sample_one(spec: EngineSpec, label: str, cfg: SynthTrajectoriesConfig, env_fn: Callable[[], Any],
                tasks: list[Task]) -> list[Any]:
    from webdancer.agents.engines.base import SamplingParams
    from webdancer.data.sampling import sample_chat, sample_engines, sample_oracle

    common = {"prompt_style": cfg.prompt_style, "date": cfg.date}
    if spec.kind == "oracle":
        return sample_oracle(env_fn, tasks, tool_role=cfg.tool_role, max_turns=cfg.max_turns,
                             progress=cfg.progress, **common)
    if spec.kind == "hf":
        from webdancer.agents.rollout import RolloutConfig

        engine = make_engine(f"hf:{spec.path}", dtype=cfg.dtype, device=cfg.device)
        rollout_cfg = RolloutConfig(max_turns=cfg.max_turns, max_new_tokens=cfg.max_new_tokens,
                                    max_context_tokens=cfg.max_context_tokens, temperature=cfg.temperature,
                                    top_p=cfg.top_p, seed=cfg.seed, tool_role=cfg.tool_role,
                                    progress=cfg.progress, **common)
        return sample_engines([(label, engine)], env_fn, tasks, k=cfg.k, rollout_cfg=rollout_cfg,
                              batch_size=cfg.batch_size)
    chat = make_engine("openai", base_url=spec.base_url, model=spec.model)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                            seed=cfg.seed)
    return sample_chat(chat, env_fn, tasks, cfg.k, params, name=label, tool_role=cfg.tool_role,
                       max_turns=cfg.max_turns, batch_size=cfg.batch_size, progress=cfg.progress, **common)


def trajectories(cfg: SynthTrajectoriesConfig) -> Path:
    """Sample with every engine of ``cfg.engines`` and write one trajectory JSONL."""
    from webdancer.data.sampling import summarize

    tasks = list(load_jsonl_tasks(cfg.tasks))[: cfg.limit]
    specs = [parse_engine_spec(s) for s in cfg.engines]
    env_fn, store = _env_factory(cfg)
    out: list[Any] = []
    try:
        for spec, label in zip(specs, engine_labels(specs)):
            out += _sample_one(spec, label, cfg, env_fn, tasks)
    finally:
        store.close()
    path = _output(cfg.out, "trajectories.jsonl")
    write_trajectories(out, path)
    for engine, row in summarize(out).items():
        print(f"{engine}: {row['episodes']} episodes, reward {row['mean_reward']:.3f}, "
              f"answered {row['answer_rate']:.1%}, {row['mean_tool_calls']:.1f} tool calls, "
              f"{row['mean_invalid_actions']:.2f} invalid actions per episode")
    print(f"{len(out)} trajectories -> {path}")
    return path


# ---------------------------------------------------------------- synth filter / convert


def filter_trajectories(cfg: SynthFilterConfig) -> FilterReport:
    """Filter a trajectory file; write the kept ones and report.md / report.json beside them."""
    trajs = read_trajectories(cfg.trajectories, cfg.in_format)
    tasks = list(load_jsonl_tasks(cfg.tasks)) if cfg.tasks else None
    fcfg = FilterConfig(
        max_turns=cfg.max_turns, max_tokens=cfg.max_tokens, max_chars=cfg.max_chars,
        require_think=cfg.require_think, require_no_invalid=cfg.require_no_invalid,
        reward=cfg.reward, min_reward=cfg.min_reward,
        judge_engine=make_engine(cfg.judge) if cfg.judge else None,
        min_tool_calls=cfg.min_tool_calls, max_tool_calls=cfg.max_tool_calls,
        no_repeated_calls=cfg.no_repeated_calls, no_answer_before_evidence=cfg.no_answer_before_evidence,
        quality_judge=ChatQualityJudge(make_engine(cfg.quality_judge)) if cfg.quality_judge else None)
    report = three_stage_filter(trajs, fcfg, tasks)
    path = _output(cfg.out, "kept.jsonl")
    write_trajectories(report.kept, path, cfg.out_format)
    md, js = report.write(path.parent)
    print(report.to_markdown())
    print(f"{len(report.kept)} kept -> {path}; report -> {md}, {js}")
    return report


def convert_command(cfg: SynthConvertConfig) -> Path:
    n = convert(cfg.input, cfg.out, cfg.in_format, cfg.out_format, tools=cfg.tools)
    print(f"{n} trajectories ({cfg.in_format} -> {cfg.out_format}) -> {cfg.out}")
    return Path(cfg.out)
