"""Structured configs of ``webdancer rl``.

``algo`` is a Hydra config group with one entry per registered algorithm, each
holding that algorithm's own config dataclass, so ``algo=grpo`` swaps the method and
``algo.clip_high=0.32`` tunes it (an unknown key is an error naming the valid ones).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


def check_batch_options(filter_on: str, oversample: float, prompts_per_step: int, mini_batch_prompts: int,
                        after_invalid: str = "train", surplus: str = "drop") -> None:
    """The checks on how a step's batch is drawn and what of it the loss sees, shared by
    ``webdancer rl`` and the demo's rl section (so a bad value fails when the config is
    read, not stages later)."""
    if after_invalid not in ("train", "mask"):
        raise ValueError(f"after_invalid={after_invalid!r} is not valid; use train or mask.")
    if surplus not in ("drop", "train"):
        raise ValueError(f"surplus={surplus!r} is not valid; use drop or train.")
    if oversample < 1.0:
        raise ValueError(f"oversample={oversample} must be at least 1.0 (1.0: no over-generation).")
    if filter_on not in ("accuracy", "reward"):
        raise ValueError(f"filter_on={filter_on!r} is not valid; use accuracy or reward.")
    if prompts_per_step % mini_batch_prompts:
        raise ValueError(f"prompts_per_step={prompts_per_step} must be a multiple of "
                         f"mini_batch_prompts={mini_batch_prompts}.")


@dataclass
class EnvSection:
    """The environment the policy browses: a web directory, or the cached synthetic site."""

    web: str | None = None  # web directory; None: the synthetic site (pages, site_seed), built once
    pages: int = 2000
    site_seed: int = 0
    mode: str = "replay"
    top_k: int = 10  # search results per query
    snippet_chars: int = 300
    visit_mode: str = "passages"  # passages | facts (single sentences, rows, items) | full
    visit_budget_chars: int = 3000
    max_links: int = 20
    max_observation_chars: int = 60_000
    max_turn_observation_chars: int = 8_000


@dataclass
class TaskSection:
    """Training and held-out tasks: JSONL files, or synthetic multi-hop tasks."""

    train: str | None = None  # JSONL; None: synthetic train split
    test: str | None = None  # JSONL; None: synthetic test split
    n_train: int = 1000
    n_test: int = 100
    hops_low: int = 1
    hops_high: int = 3
    seed: int = 0


@dataclass
class RolloutSection:
    max_turns: int = 8
    max_new_tokens: int = 256
    max_context_tokens: int = 4096
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    prompt_style: str = "webdancer"
    tool_role: bool = False
    # Episodes generated together (0: a whole round at once). With the HF engine, keep it
    # where every episode's context fits the prefix cache (see RolloutConfig.max_in_flight).
    max_in_flight: int = 0
    # The HF engine's store of each conversation's keys and values between turns (0: off).
    prefix_cache_mb: float = 256.0


@dataclass
class RLConfig:
    """``webdancer rl``: DAPO (or any registered algorithm) from a model checkpoint."""

    defaults: list[Any] = field(default_factory=lambda: [{"algo": "dapo"}, "_self_"])
    algo: Any = MISSING
    model: str = MISSING  # HF model directory or hub name
    out: str = "${hydra:runtime.output_dir}"  # run directory: Hydra's, one per run of a sweep
    env: EnvSection = field(default_factory=EnvSection)
    tasks: TaskSection = field(default_factory=TaskSection)
    rollout: RolloutSection = field(default_factory=RolloutSection)
    reward: dict[str, float] = field(default_factory=lambda: {"format": 0.1, "exact_match": 0.9})
    judge: str | None = None  # chat engine spec of the judge for a judge term (openai:BASE_URL#MODEL)
    steps: int = 100
    prompts_per_step: int = 16  # groups per update batch (after dynamic sampling)
    group_size: int = 8  # G rollouts per prompt
    # What dynamic sampling (and a curriculum) judges a group by: "accuracy", the answer term
    # alone, as DAPO (a group is kept when some but not all answers are right); or "reward",
    # the whole reward (before length shaping), which also keeps all-wrong groups that differ only in format.
    filter_on: str = "accuracy"
    oversample: float = 1.0  # with dynamic sampling: prompts rolled out per round / prompts still missing
    # Tokens generated after an episode's first invalid action (a failed tool call, a turn
    # with neither call nor answer): "train" keeps them in the loss; "mask" leaves them out,
    # so the invalid turn itself carries the episode's advantage and the off-distribution
    # text that follows it does not (SimpleTIR, arXiv:2509.02479, drops such episodes whole).
    after_invalid: str = "train"
    # Groups that pass dynamic sampling beyond prompts_per_step (oversample > 1 leaves a
    # surplus whenever more than 1 / oversample of the groups differ): "drop" them, as DAPO
    # fills a fixed batch; or "train" on them too, so every informative rollout is learned
    # from. The number of updates per step stays prompts_per_step / mini_batch_prompts; the
    # groups are shared out evenly over them.
    surplus: str = "drop"
    # A task meta key (e.g. "hops", "level"): each step also logs, per value of it, the
    # rollout accuracy and the share of the kept groups (by_<key>/<value>/accuracy, .../kept_share).
    metrics_by: str | None = None
    # A task meta key: when dynamic sampling keeps more groups than the batch needs, take
    # them round-robin over its values (e.g. hop counts) instead of in generation order, so
    # no kind of question fills the update alone (needs oversample > 1 to leave a surplus).
    balance_by: str | None = None
    # Log the gradient noise scale (grad_noise/scale_episodes: the batch, in episodes, at
    # which an update is half signal) from the two halves of every update's groups; one
    # process only, and it holds one extra copy of the gradients.
    grad_noise: bool = False
    mini_batch_prompts: int = 16  # prompts per optimizer step (updates per batch = prompts_per_step / this)
    epochs: int = 1  # passes over each rollout batch
    micro_batch_size: int = 8  # sequences per forward/backward (gradient accumulation inside a mini-batch)
    rollout_engine: str = "hf"  # hf: the policy itself generates | vllm: a vLLM engine on the GPU, synced per step
    vllm_gpu_memory_utilization: float = 0.4  # share of GPU memory vLLM may take (rollout_engine=vllm)
    old_logprobs: str = "recompute"  # recompute | engine (sampling logprobs, importance-corrected)
    lr: float = 1e-6
    weight_decay: float = 0.1
    warmup_steps: int = 0
    grad_clip: float = 1.0
    ref_model: str | None = None  # for algorithms with kl_coef > 0; default: the initial model
    eval_every: int = 0  # steps between held-out evaluations; 0: none (run `webdancer eval` on the result)
    eval_runs: int = 1
    eval_temperature: float = 0.6
    seed: int = 0
    save_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    resume: bool = False
    wandb_mode: str = "offline"
    dtype: str = "float32"
    progress: bool = True
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    sweep_metric: str | None = None  # e.g. "eval/accuracy": the run returns its last value (Optuna's objective)

    def __post_init__(self) -> None:
        if self.rollout_engine not in ("hf", "vllm"):
            raise ValueError(f"rollout_engine={self.rollout_engine!r} is not valid; use hf or vllm.")
        if self.old_logprobs not in ("recompute", "engine"):
            raise ValueError(f"old_logprobs={self.old_logprobs!r} is not valid; use recompute or engine.")
        check_batch_options(self.filter_on, self.oversample, self.prompts_per_step, self.mini_batch_prompts,
                            self.after_invalid, self.surplus)
        if "judge" in self.reward and not self.judge:
            raise ValueError("reward with a judge term needs judge=openai:BASE_URL#MODEL; give the judge model.")
        if "overlong" in self.reward:
            raise ValueError("reward term 'overlong' does not apply to rl (the env scores episodes before their "
                             "tokens are counted); drop it and use the algorithm's length shaping "
                             "(algo.soft_overlong=true with dapo).")
        if self.group_size < 2:
            raise ValueError(f"group_size={self.group_size} must be at least 2 for group-relative advantages.")
        if self.rollout.prefix_cache_mb < 0:
            raise ValueError(f"rollout.prefix_cache_mb={self.rollout.prefix_cache_mb} must be >= 0 (0: no prefix cache).")
        if self.rollout.max_in_flight < 0:
            raise ValueError(f"rollout.max_in_flight={self.rollout.max_in_flight} must be >= 0 "
                             "(0: a whole round at once).")


def algo_node(name: str, config_type: type) -> type:
    """A dataclass for the ``algo`` group entry: ``name`` plus the algorithm's own fields."""
    hints = typing.get_type_hints(config_type)  # real types, also under postponed annotations
    fields: list[Any] = [("name", str, field(default=name))]
    for f in dataclasses.fields(config_type):
        default = f.default if f.default is not dataclasses.MISSING else MISSING
        fields.append((f.name, hints[f.name], field(default=default)))
    return dataclasses.make_dataclass(f"{config_type.__name__}Node", fields)


def register_rl_configs() -> None:
    """Register every algorithm as an entry of the ``algo`` config group."""
    from hydra.core.config_store import ConfigStore

    from webdancer.algos import ALGORITHMS

    cs = ConfigStore.instance()
    for name in ALGORITHMS.names():
        cs.store(group="algo", name=name, node=algo_node(name, ALGORITHMS.get(name).config_type))


def split_algo(node: Any) -> tuple[str, dict[str, Any]]:
    """-> (algorithm name, its config values) from the ``algo`` group entry."""
    values = dataclasses.asdict(node) if dataclasses.is_dataclass(node) else dict(node)
    return values.pop("name"), values
