"""Structured config of ``webdancer demo``: every stage of the recipe on the offline web.

Each section is one stage; any field can be overridden, e.g.
``webdancer demo rl.steps=20 model.hidden_size=192 eval.runs=3``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webdancer.conf.rl import check_batch_options

STAGES = ("web", "qa", "trajectories", "model", "sft", "rl", "eval")


@dataclass
class DemoWeb:
    pages: int = 2000
    seed: int = 0


@dataclass
class DemoEnv:
    """Observation budgets sized for a small model's context."""

    top_k: int = 1
    snippet_chars: int = 40
    visit_mode: str = "facts"  # the goal's sentences and rows, not whole sections
    visit_budget_chars: int = 200
    max_links: int = 1
    max_turns: int = 6
    max_new_tokens: int = 96
    max_context_tokens: int = 1536
    prompt_style: str = "compact"

    def tool_kwargs(self) -> dict[str, Any]:
        """What the tools show, as ``WebEnv`` arguments (also the keys of ``rl``'s env section)."""
        return {"top_k": self.top_k, "snippet_chars": self.snippet_chars, "visit_mode": self.visit_mode,
                "visit_budget_chars": self.visit_budget_chars, "max_links": self.max_links}


@dataclass
class DemoQA:
    """CRAWLQA (single page + multi-hop) and E2HQA tasks; test questions never appear in train.

    The validation split is held out of the training questions (never trained on): tune on
    it with ``eval.split=val`` and keep the test split for the final figures.
    """

    crawl_pages: int = 2000
    n_crawlqa_train: int = 2200
    n_e2hqa_train: int = 1600  # 3-hop questions: with 800, SFT solved 0.13 of val 3-hop, with 1,600 0.45
    n_crawlqa_val: int = 40
    n_e2hqa_val: int = 20
    n_crawlqa_test: int = 40
    n_e2hqa_test: int = 20
    crawlqa_hops_high: int = 2
    e2hqa_hops: int = 3
    seed: int = 0


@dataclass
class DemoModel:
    vocab_size: int = 4096
    hidden_size: int = 128
    num_layers: int = 3
    head_dim: int = 64
    rope_theta: float = 1e9  # slow rotary pairs: room for the induction head's content match
    induction_heads: bool = True  # a copying circuit written into layers 0-1 (agents.induction)
    seed: int = 0
    entity_tokens: bool = False  # site entity names and URL slugs as single tokens (see demo_stages.entity_tokens)
    pretrain_steps: int = 300  # LM steps on the site's rendered pages; 0 skips pretraining
    pretrain_seq_len: int = 256
    pretrain_batch_size: int = 16
    pretrain_lr: float = 3e-3
    pretrain_copy_fraction: float = 0.5  # share of pretraining rows that are a window written twice (copying)


@dataclass
class DemoSFT:
    steps: int = 480
    lr: float = 3e-3
    batch_size: int = 8  # conversations per optimizer step
    warmup_first_turns_steps: int = 0  # steps on first turns only before whole trajectories; 0 skips
    warmup_batch_size: int = 32
    # On CPU one conversation per forward pass is fastest: a packed row pays attention over
    # its whole length (a step of 8 demo conversations: 0.84 s packed, 0.51 s unpacked).
    pack: bool = False
    micro_batch_size: int = 1  # conversations per padded forward pass (pack=false)
    micro_batch_tokens: int = 0  # tokens per packed forward pass (pack=true); 0: max_length
    warmup_steps: int = 20
    max_length: int = 1536


@dataclass
class DemoRL:
    algo: str = "dapo"
    algo_options: dict[str, Any] = field(default_factory=dict)
    steps: int = 10
    prompts_per_step: int = 8
    group_size: int = 8
    filter_on: str = "accuracy"  # dynamic sampling keeps groups with some but not all answers right
    oversample: float = 2.0  # prompts rolled out per dynamic-sampling round / prompts still missing
    after_invalid: str = "train"  # "mask": no loss on the tokens after an episode's first invalid action
    surplus: str = "drop"  # "train": also learn from the groups that pass the filter beyond prompts_per_step
    balance_by: str | None = None  # "hops": a surplus of kept groups is taken round-robin over hop counts
    grad_noise: bool = False  # log the gradient noise scale (grad_noise/scale_episodes) of every update
    mini_batch_prompts: int = 8
    # Episodes per forward/backward pass. On CPU one is fastest, as for SFT: a 64-episode update
    # took 16.1 s with 1, 19.4 s with 4 and 32.4 s with 16 (benchmarks/rl_bench.py
    # --mt-micro-batch), and the demo's DAPO stage 260 s with 1 against 319 s with 16.
    micro_batch_size: int = 1
    # Episodes generated together. The model's keys and values take 3 KiB a token, so the
    # engine's 256 MB prefix cache holds about 87,000 tokens: 128 episodes of up to 680
    # tokens. A larger round (a larger prompts_per_step) prefills whole contexts again
    # every turn once the cache is full.
    max_in_flight: int = 128
    lr: float = 1e-4
    temperature: float = 1.0
    seed: int | None = None  # DAPO's sampling seed; None: model.seed (several seeds give RL's own spread)


@dataclass
class DemoEval:
    split: str = "test"  # "val" while tuning; "test" for the figures you report
    runs: int = 3
    temperature: float = 0.6  # WebDancer's evaluation sampling (see REFERENCES: 0.6, top-p 0.95)
    top_p: float = 0.95
    seed: int = 1234
    batch_size: int = 64  # episodes in flight at once


@dataclass
class DemoConfig:
    """``webdancer demo``: site -> QA -> oracle trajectories -> SFT -> DAPO -> evaluation."""

    out: str = "runs/demo"
    threads: int = 0  # torch CPU threads; 0: all cores
    wandb_mode: str = "offline"
    resume: bool = False  # reuse the stages already finished in `out` (see out/stages.json)
    rerun_from: str | None = None  # with resume: run again from this stage on (e.g. rl)
    web: DemoWeb = field(default_factory=DemoWeb)
    env: DemoEnv = field(default_factory=DemoEnv)
    qa: DemoQA = field(default_factory=DemoQA)
    model: DemoModel = field(default_factory=DemoModel)
    sft: DemoSFT = field(default_factory=DemoSFT)
    rl: DemoRL = field(default_factory=DemoRL)
    eval: DemoEval = field(default_factory=DemoEval)

    def __post_init__(self) -> None:
        if self.rerun_from is not None and self.rerun_from not in STAGES:
            raise ValueError(f"rerun_from={self.rerun_from!r} is not a stage; use one of: {', '.join(STAGES)}.")
        if self.eval.split not in ("val", "test"):
            raise ValueError(f"eval.split={self.eval.split!r} is not a split; use 'val' (tuning) or 'test'.")
        if self.eval.runs < 1:
            raise ValueError(f"eval.runs={self.eval.runs} must be at least 1.")
        from webdancer.algos import ALGORITHMS

        r = self.rl  # checked here, so a bad value fails before the stages before rl have run
        check_batch_options(r.filter_on, r.oversample, r.prompts_per_step, r.mini_batch_prompts, r.after_invalid,
                            r.surplus)
        ALGORITHMS.get(r.algo).make_config(r.algo_options)
