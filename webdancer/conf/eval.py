"""Structured config of ``webdancer eval``.

    webdancer eval engine=hf:runs/rl/final benchmark=synthetic web=runs/web/site
    webdancer eval engine='openai:http://127.0.0.1:8000/v1#qwen' benchmark=data/webwalkerqa.json \
        web=runs/web/webwalker mode=record judge='openai:http://127.0.0.1:8001/v1#judge'
    webdancer eval ... out=runs/eval/rl            # run again with the same out= to resume

Sampling defaults are the reference evaluation's: temperature 0.6, top-p 0.95, 3 runs
per question, 40 LLM calls per episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from webdancer.conf.web import MODES, VISIT_MODES, check_choice

PROMPT_STYLES = ("webdancer", "compact")
SEARCH_BACKENDS = ("auto", "bm25", "serper", "recorded", "none")
SPLITS = ("train", "test", "all")


@dataclass
class EvalConfig:
    """``webdancer eval``: k runs per question, metrics, report.md/json, plots, trajectories."""

    engine: str = MISSING  # hf:PATH | openai:BASE_URL#MODEL | vllm:PATH
    benchmark: str = "synthetic"  # a benchmark file (GAIA, WebWalkerQA, JSONL...) or "synthetic"
    benchmark_format: str | None = None  # gaia | webwalkerqa | hotpotqa | webdancer | jsonl
    limit: int | None = None  # only the first `limit` questions
    # the web
    web: str | None = None  # web directory; None with benchmark=synthetic: the cached site
    pages: int = 2000  # synthetic site size when web is None
    site_seed: int = 0
    mode: str = "replay"  # replay (offline) | record (fetch what is missing into web) | live
    search: str = "auto"  # auto | bm25 | serper (SERPER_API_KEY) | recorded | none
    allow_hosts: list[str] = field(default_factory=list)  # SSRF allowlist (intranets, tests)
    # what the tools show (WebEnv's observation budgets)
    top_k: int = 10  # search results per query
    snippet_chars: int = 300
    visit_mode: str = "passages"  # passages | facts (single sentences, rows, items) | full
    visit_budget_chars: int = 3000
    max_links: int = 20
    # synthetic tasks (benchmark=synthetic)
    n: int = 100
    hops: list[int] = field(default_factory=lambda: [1, 3])  # [low, high]
    split: str = "test"
    task_seed: int = 0
    # runs and sampling
    k: int = 3
    temperature: float = 0.6
    top_p: float = 0.95
    max_turns: int = 40
    max_new_tokens: int = 1024  # per assistant turn
    max_context_tokens: int = 31 * 1024 - 500
    prompt_style: str = "webdancer"  # webdancer | compact
    tool_role: bool = False
    tools: list[str] = field(default_factory=lambda: ["search", "visit"])
    date: str | None = None  # the date in the system prompt; None: today
    seed: int = 0
    batch_size: int = 32  # episodes in flight at once
    # scoring
    # auto | exact_match | f1 | contains | gaia_exact_match | judge | name:weight,name:weight
    reward: str = "auto"
    judge: str | None = None  # chat engine spec of the judge (openai:BASE_URL#MODEL)
    # engine loading (hf, vllm)
    dtype: str = "auto"
    device: str | None = None
    # output
    out: str = "${hydra:runtime.output_dir}"  # trajectories.jsonl, report.json/md, PNGs
    resume: bool = True  # skip (question, run) pairs already in out/trajectories.jsonl
    plots: bool = True
    progress: bool = True
    threads: int = 0  # torch CPU threads; 0 leaves torch's default

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        check_choice("search", self.search, SEARCH_BACKENDS)
        check_choice("split", self.split, SPLITS)
        check_choice("prompt_style", self.prompt_style, PROMPT_STYLES)
        check_choice("visit_mode", self.visit_mode, VISIT_MODES)
        for name in ("k", "max_turns", "max_new_tokens", "max_context_tokens", "batch_size", "n", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1.")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit} must be at least 1 (or null for every question).")
        if self.temperature < 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 and "
                             f"top_p={self.top_p} in (0, 1].")
        if len(self.hops) != 2 or not 1 <= self.hops[0] <= self.hops[1]:
            raise ValueError(f"hops={list(self.hops)} must be [low, high] with 1 <= low <= high.")
        if self.benchmark != "synthetic" and self.web is None:
            raise ValueError("a benchmark file needs web=DIR: a recorded web directory "
                             "(mode=replay) or where to record (mode=record).")
        if self.mode != "replay" and self.web is None:
            raise ValueError(f"mode={self.mode} needs web=DIR, the directory that receives "
                             "the recording.")
        terms = [item.partition(":")[0].strip() for item in self.reward.split(",")]
        if "judge" in terms and not self.judge:
            raise ValueError("reward=judge needs judge=openai:BASE_URL#MODEL; "
                             "give the judge model.")
