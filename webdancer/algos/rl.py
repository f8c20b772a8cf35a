"""The RL loop shared by every algorithm: rollout -> reward -> filter -> update -> log.

    webdancer rl model=runs/sft/final algo=dapo algo.clip_high=0.28 steps=50

One step: draw prompts, roll out ``group_size`` samples of each through WebEnv with
the policy itself as the engine, score them (the env's reward: 0.1 x format + 0.9 x
answer by default), let the algorithm drop groups (DAPO's dynamic sampling) and
generate more until the batch holds ``prompts_per_step`` groups or the round cap is
hit, shape rewards (soft overlong), compute advantages, recompute pi_old, then run
``epochs`` passes of mini-batch updates. The algorithm is only ever called by name
through ``ALGORITHMS``; its math lives in its own file.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from webdancer.agents.engines.factory import make_engine
from webdancer.agents.engines.hf import HFEngine
from webdancer.agents.rollout import Rollout, RolloutConfig
from webdancer.agents.trajectory import Trajectory
from webdancer.algos import ALGORITHMS
from webdancer.algos.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_final,
    save_step,
    seed_everything,
)
from webdancer.algos.rl_batch import GradientNoise, Sample, recompute_logprobs, update_step
from webdancer.conf.rl import RLConfig, split_algo
from webdancer.envs.registration import ensure_synthetic_web
from webdancer.envs.synthetic_tasks import SyntheticTasks
from webdancer.envs.tasks import Task, load_jsonl_tasks
from webdancer.envs.web_env import WebEnv
from webdancer.rewards import CombinedReward, answer_term, build_reward, recipe_lengths
from webdancer.runlog import RunLogger, read_metrics
from webdancer.web.webdir import WebDir

log = logging.getLogger("webdancer.rl")


# ----------------------------------------------------------------------------- setup
def load_tasks(cfg: RLConfig, web: Path) -> tuple[list[Task], list[Task]]:
    t = cfg.tasks
    graph = None
    if t.train is None or t.test is None:
        graph = WebDir(web).graph()
    hops = (t.hops_low, t.hops_high)
    train = (list(load_jsonl_tasks(t.train)) if t.train else
             list(SyntheticTasks(graph, n=t.n_train, hops=hops, split="train", seed=t.seed)))
    test = (list(load_jsonl_tasks(t.test)) if t.test else
            list(SyntheticTasks(graph, n=t.n_test, hops=hops, split="test", seed=t.seed)))
    overlap = {x.question for x in train} & {x.question for x in test}
    if overlap:
        raise ValueError(f"{len(overlap)} questions are in both the train and test tasks; held-out means disjoint.")
    for name, key in (("metrics_by", cfg.metrics_by), ("balance_by", cfg.balance_by)):
        if key and not any(key in x.meta for x in train):
            known = sorted({k for x in train for k in x.meta})
            raise ValueError(f"{name}={key!r} is in no training task's meta; use one of: {', '.join(known) or '(none)'}.")
    return train, test


def meta_value(traj: Trajectory, key: str) -> str:
    """The trajectory's task meta ``key`` as a string; "none" when the task has no such key."""
    return str(traj.task.meta.get(key, "none"))


def make_reward(cfg: RLConfig) -> CombinedReward:
    """The configured reward, with the judge model when a term needs one. Length shaping is
    the algorithm's (DAPO's ``soft_overlong``): the env scores an episode, not its tokens."""
    judge = make_engine(cfg.judge) if cfg.judge else None
    return build_reward(dict(cfg.reward), judge_engine=judge)


def make_env_fn(cfg: RLConfig, web: Path, tasks: list[Task], reward: CombinedReward) -> Any:
    e = cfg.env

    def env_fn() -> WebEnv:
        return WebEnv(web, tasks=tasks, mode=e.mode, max_turns=cfg.rollout.max_turns, top_k=e.top_k,
                      visit_mode=e.visit_mode, visit_budget_chars=e.visit_budget_chars, max_links=e.max_links,
                      snippet_chars=e.snippet_chars, max_observation_chars=e.max_observation_chars,
                      max_turn_observation_chars=e.max_turn_observation_chars, reward_fn=reward)

    return env_fn


def rollout_config(cfg: RLConfig, **changes: Any) -> RolloutConfig:
    r = cfg.rollout
    base = RolloutConfig(max_turns=r.max_turns, max_new_tokens=r.max_new_tokens,
                         max_context_tokens=r.max_context_tokens, temperature=r.temperature, top_p=r.top_p,
                         top_k=r.top_k, prompt_style=r.prompt_style, tool_role=r.tool_role, seed=cfg.seed,
                         date="2025-01-01", progress=cfg.progress, max_in_flight=r.max_in_flight)
    return dataclasses.replace(base, **changes)


def rollout_engine(cfg: RLConfig, policy: Any, tokenizer: Any) -> Any:
    """The engine that generates rollouts: the policy itself through transformers (an update
    is visible to the next rollout at once), or vLLM, given the new weights after each update."""
    if cfg.rollout_engine == "hf":
        return HFEngine(policy, tokenizer, prefix_cache_mb=cfg.rollout.prefix_cache_mb)
    from webdancer.agents.engines.vllm import VLLMEngine

    return VLLMEngine.from_pretrained(cfg.model, dtype=cfg.dtype, seed=cfg.seed,
                                      gpu_memory_utilization=cfg.vllm_gpu_memory_utilization)


def max_response_tokens(cfg: RLConfig) -> int:
    """L_max of the overlong penalty: the most tokens a policy can generate in one episode."""
    return rollout_config(cfg).max_response_tokens


def fit_overlong_cache(algo_cfg: Any, cfg: RLConfig) -> Any:
    """Scale an overlong buffer larger than the response budget to the recipe's ratio (0.2 L_max)."""
    cache = getattr(algo_cfg, "overlong_cache", None)
    max_len = max_response_tokens(cfg)
    if cache is None or cache <= max_len:
        return algo_cfg
    fitted = recipe_lengths(max_len)["cache_len"]
    log.warning("overlong_cache=%d exceeds the %d-token response budget; using %d (0.2 x L_max, as the "
                "DAPO recipe's 4096 of 20480)", cache, max_len, fitted)
    return dataclasses.replace(algo_cfg, overlong_cache=fitted)


# ----------------------------------------------------------------------------- metrics
def answer_scores(trajs: list[Trajectory], answer_key: str) -> list[float]:
    """Each trajectory's answer term (1.0 right, 0.0 wrong for a rule): its accuracy."""
    return [t.reward_breakdown.get(answer_key, 0.0) for t in trajs]


def rollout_metrics(trajs: list[Trajectory], answer_key: str) -> dict[str, float]:
    if not trajs:
        return {}
    rewards = np.array([t.reward for t in trajs])
    turns = sum(len(t.turns) for t in trajs)
    return {
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std()),
        "rollout/accuracy": float(np.mean(answer_scores(trajs, answer_key))),
        "rollout/format_score": float(np.mean([t.reward_breakdown.get("format", 0.0) for t in trajs])),
        "rollout/invalid_action_rate": sum(t.invalid_actions for t in trajs) / max(turns, 1),
        "rollout/tool_calls_mean": float(np.mean([t.tool_calls for t in trajs])),
        "rollout/turns_mean": turns / len(trajs),
        "rollout/response_length_mean": float(np.mean([t.response_length for t in trajs])),
        "rollout/episode_length_mean": float(np.mean([t.length for t in trajs])),
        "rollout/answered_rate": float(np.mean([t.answer is not None for t in trajs])),
    }


def stratum_metrics(kept: list[Trajectory], generated: list[Trajectory], key: str,
                    answer_key: str) -> dict[str, float]:
    """Per value of the task meta ``key``: the accuracy of the generated rollouts and the share
    of the kept groups (what the update trains on). Tasks without the key count as "none"."""
    out: dict[str, float] = {}
    kept_groups = {t.group: meta_value(t, key) for t in kept}
    for v in sorted({meta_value(t, key) for t in generated}):
        scores = answer_scores([t for t in generated if meta_value(t, key) == v], answer_key)
        out[f"by_{key}/{v}/accuracy"] = float(np.mean(scores))
        out[f"by_{key}/{v}/kept_share"] = sum(x == v for x in kept_groups.values()) / max(len(kept_groups), 1)
    return out


def evaluate(rollout: Rollout, tasks: list[Task], runs: int, answer_key: str) -> dict[str, float]:
    """Accuracy on held-out tasks: ``runs`` samples each; Pass@1 is their mean."""
    trajs = rollout.run(tasks, group_size=runs)
    m = rollout_metrics(trajs, answer_key)
    return {"eval/accuracy": m["rollout/accuracy"], "eval/invalid_action_rate": m["rollout/invalid_action_rate"],
            "eval/tool_calls_mean": m["rollout/tool_calls_mean"], "eval/reward_mean": m["reward/mean"]}


# ----------------------------------------------------------------------------- the batch
class TaskStream:
    """Training tasks in a seeded order, epoch after epoch; ``position`` is resumable."""

    def __init__(self, tasks: list[Task], seed: int, position: int = 0) -> None:
        self.tasks, self.seed, self.position = tasks, seed, position
        self._epoch, self._order = -1, []

    def order(self, epoch: int) -> list[int]:
        """The task order of ``epoch``, drawn once per epoch."""
        if epoch != self._epoch:
            n = len(self.tasks)
            self._epoch, self._order = epoch, random.Random(self.seed * 1_000_003 + epoch).sample(range(n), n)
        return self._order

    def take(self, n: int) -> list[Task]:
        out = []
        for _ in range(n):
            epoch, i = divmod(self.position, len(self.tasks))
            out.append(self.tasks[self.order(epoch)[i]])
            self.position += 1
        return out


def filter_signal(trajs: list[Trajectory], cfg: RLConfig, answer_key: str) -> Tensor:
    """What the group filter judges each trajectory by (``cfg.filter_on``). (N,)

    DAPO keeps a group when 0 < #correct < G. Judged on the total reward instead, a group
    whose answers are all wrong still passes when its format scores differ, and its
    normalized advantages then pay an early wrong answer (format 0.1) over a search that
    ran out of turns (format 0): the policy learns to give up.
    """
    scores = answer_scores(trajs, answer_key) if cfg.filter_on == "accuracy" else [t.reward for t in trajs]
    return torch.tensor(scores, dtype=torch.float32)


def stratum_turns(trajs: list[Trajectory], key: str | None) -> list[int]:
    """Each trajectory's place among those with the same value of task meta ``key`` (0, 1, ...
    in order); all 0 without a key. Sorting by it takes the values round-robin."""
    if key is None:
        return [0] * len(trajs)
    seen: dict[str, int] = {}
    turns = []
    for t in trajs:
        v = meta_value(t, key)
        turns.append(seen.get(v, 0))
        seen[v] = turns[-1] + 1
    return turns


def collect(rollout: Rollout, stream: TaskStream, algo: Any, algo_cfg: Any, cfg: RLConfig,
            group_counter: int, answer_key: str) -> tuple[list[Trajectory], list[Trajectory], dict[str, float], int]:
    """Roll out until ``prompts_per_step`` groups pass the algorithm's filter.

    -> (kept trajectories, every trajectory generated, filter metrics, next group id).
    Stops after ``max_gen_rounds`` rounds and trains on what it has (logged), rather than
    stalling when every group scores the same (REFERENCES pitfall 4). With dynamic sampling
    a round rolls out ``oversample`` times the missing prompts (the recipe over-generates
    3x), so a filter that keeps half the groups costs one large batched round, not several
    small ones. Surplus groups are dropped, or all kept with ``cfg.surplus == "train"``.
    """
    target, G = cfg.prompts_per_step, cfg.group_size
    factor = cfg.oversample if getattr(algo_cfg, "dynamic_sampling", False) else 1.0
    max_rounds = algo_cfg.max_gen_rounds if getattr(algo_cfg, "dynamic_sampling", False) else 1
    kept: list[list[Trajectory]] = []
    preferred: list[bool] = []
    generated: list[Trajectory] = []
    rounds = 0
    while len(kept) < target and rounds < max_rounds:
        trajs = rollout.run(stream.take(math.ceil(factor * (target - len(kept)))), group_size=G,
                            group_offset=group_counter)
        group_counter += len(trajs) // G
        generated += trajs
        rounds += 1
        signal = filter_signal(trajs, cfg, answer_key)
        groups = torch.tensor([t.group for t in trajs])
        keep = algo.sample_filter(signal, groups, algo_cfg)
        first = algo.sample_priority(signal, groups, algo_cfg)
        for g in range(0, len(trajs), G):
            if bool(keep[g]):
                kept.append(trajs[g: g + G])
                preferred.append(bool(first[g]))
    passed = len(kept)
    if passed > target and cfg.surplus == "drop":
        # preferred groups first, then round-robin over balance_by, then generation order
        turn = stratum_turns([group[0] for group in kept], cfg.balance_by)
        order = sorted(range(len(kept)), key=lambda i: (not preferred[i], turn[i], i))[:target]
        kept = [kept[i] for i in sorted(order)]
    n_groups = len(generated) // G
    metrics = {"filter/gen_rounds": float(rounds), "filter/groups_generated": float(n_groups),
               "filter/passed_group_ratio": passed / max(n_groups, 1),
               "filter/kept_group_ratio": len(kept) / max(n_groups, 1),
               "filter/dropped_groups": float(n_groups - len(kept)),
               "filter/batch_filled": float(len(kept) >= target)}
    if len(kept) < target:
        log.warning("only %d of %d groups passed the filter after %d rounds; training on those", len(kept),
                    target, rounds)
    return [t for group in kept for t in group], generated, metrics, group_counter


def loss_mask_until_invalid(traj: Trajectory) -> list[int]:
    """``traj.loss_mask`` with every token after its first invalid turn left out (that turn kept)."""
    mask = list(traj.loss_mask)
    for turn in traj.turns:
        if not turn.valid:
            end = turn.span[1]
            mask[end:] = [0] * (len(mask) - end)
            break
    return mask


def make_samples(trajs: list[Trajectory], algo: Any, algo_cfg: Any, cfg: RLConfig) -> list[Sample]:
    rewards = torch.tensor([t.reward for t in trajs], dtype=torch.float32)
    groups = torch.tensor([t.group for t in trajs])
    lengths = torch.tensor([t.response_length for t in trajs])
    truncated = torch.tensor([t.termination != "answer" for t in trajs])
    shaped = algo.shape_rewards(rewards, lengths, truncated, algo_cfg, max_len=max_response_tokens(cfg))
    adv = algo.advantages(shaped, groups, algo_cfg)
    loss_ok = algo.loss_sample_mask(truncated, algo_cfg)
    masks = [loss_mask_until_invalid(t) if cfg.after_invalid == "mask" else t.loss_mask for t in trajs]
    return [Sample(t.ids, m if bool(ok) else [0] * len(t.ids), float(a),
                   old_logp=list(t.logprobs) if cfg.old_logprobs == "engine" else None)
            for t, m, a, ok in zip(trajs, masks, adv.tolist(), loss_ok)]


# ----------------------------------------------------------------------------- the loop
def train_rl(cfg: RLConfig) -> Path:
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_constant_schedule_with_warmup

    seed_everything(cfg.seed, cfg.threads)
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    algo_name, algo_values = split_algo(cfg.algo)
    algo = ALGORITHMS.get(algo_name)
    algo_cfg = fit_overlong_cache(algo.make_config(algo_values), cfg)

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    dtype = getattr(torch, cfg.dtype)
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
    ref_model = None
    if algo_cfg.kl_coef > 0:
        ref_model = AutoModelForCausalLM.from_pretrained(cfg.ref_model or cfg.model, dtype=dtype).eval()
        ref_model.requires_grad_(False)
        ref_model.to(accelerator.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_constant_schedule_with_warmup(optimizer, cfg.warmup_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    policy = accelerator.unwrap_model(model)
    dropout = has_dropout(policy)
    engine = rollout_engine(cfg, policy, tokenizer)
    if cfg.grad_noise and accelerator.num_processes > 1:
        raise ValueError("grad_noise=true splits one process's batch into halves; run it on a single process "
                         "(the estimate needs no more) or set grad_noise=false.")
    noise = GradientNoise() if cfg.grad_noise else None

    web = Path(cfg.env.web) if cfg.env.web else ensure_synthetic_web(cfg.env.pages, cfg.env.site_seed)
    train_tasks, test_tasks = load_tasks(cfg, web)
    # Each process rolls out its own share of the prompts; groups never straddle processes.
    rank, world = accelerator.process_index, accelerator.num_processes
    reward = make_reward(cfg)
    train_rollout = Rollout(engine, make_env_fn(cfg, web, train_tasks, reward), rollout_config(cfg))
    eval_rollout = Rollout(engine, make_env_fn(cfg, web, test_tasks, reward),
                           rollout_config(cfg, temperature=cfg.eval_temperature, top_p=0.95))
    answer_key = answer_term(dict(cfg.reward))

    start, group_counter, position = 0, rank * 10**9, 0
    ckpt = latest_checkpoint(run_dir) if cfg.resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, model=policy, optimizer=optimizer, scheduler=scheduler, rank=rank)
        start, group_counter, position = state["step"], state["group_counter"], state["position"]
        ranks = state.get("ranks") or []
        if len(ranks) == world:  # each process goes on from its own place in its task stream
            group_counter, position = ranks[rank]
        log.info("resumed from %s at step %d", ckpt, start)
    stream = TaskStream(train_tasks[rank::world], cfg.seed, position)
    logger = RunLogger(run_dir, config=dataclasses.asdict(cfg), wandb_mode=cfg.wandb_mode, resume_step=start if ckpt else None)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        stats0 = dataclasses.replace(train_rollout.stats)
        policy.eval()
        trajs, generated, metrics, group_counter = collect(train_rollout, stream, algo, algo_cfg, cfg,
                                                           group_counter, answer_key)
        t_rollout = time.perf_counter() - t0
        metrics.update(rollout_metrics(generated, answer_key))
        if cfg.metrics_by:
            metrics.update(stratum_metrics(trajs, generated, cfg.metrics_by, answer_key))
        gen_tokens = train_rollout.stats.generated_tokens - stats0.generated_tokens
        env_s = train_rollout.stats.env_s - stats0.env_s
        metrics.update({"perf/rollout_tokens_per_s": gen_tokens / max(t_rollout, 1e-9),
                        "perf/env_share": env_s / max(t_rollout, 1e-9), "perf/rollout_s": t_rollout})
        t1 = time.perf_counter()
        if trajs:
            metrics.update(_update(model, policy, ref_model, optimizer, scheduler, accelerator, algo, algo_cfg,
                                   cfg, trajs, pad_id, dropout=dropout, noise=noise))
        if trajs and cfg.rollout_engine == "vllm":
            engine.load_weights(policy)  # the next rollout samples from the updated policy
        t_update = time.perf_counter() - t1
        metrics["perf/update_tokens_per_s"] = metrics.get("actor/tokens", 0.0) / max(t_update, 1e-9)
        metrics["actor/lr"] = scheduler.get_last_lr()[0]
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0:
            policy.eval()
            metrics.update(evaluate(eval_rollout, test_tasks, cfg.eval_runs, answer_key))
        metrics["perf/step_s"] = time.perf_counter() - t0
        if accelerator.is_main_process:
            logger.log(step + 1, metrics)
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            save_step(run_dir, step + 1, model=model, tokenizer=tokenizer, optimizer=optimizer, scheduler=scheduler,
                      accelerator=accelerator, state=loop_state(accelerator, group_counter, stream.position),
                      keep=cfg.keep_checkpoints)
    save_step(run_dir, cfg.steps, model=model, tokenizer=tokenizer, optimizer=optimizer, scheduler=scheduler,
              accelerator=accelerator, state=loop_state(accelerator, group_counter, stream.position),
              keep=cfg.keep_checkpoints)
    save_final(run_dir / "final", model=model, tokenizer=tokenizer, accelerator=accelerator)
    if accelerator.is_main_process:
        logger.close(["reward/mean", "rollout/accuracy", "rollout/invalid_action_rate", "actor/entropy",
                      "actor/clip_frac", "actor/approx_kl", "rollout/response_length_mean",
                      "filter/kept_group_ratio", "eval/accuracy", "grad_noise/scale_episodes"])
    accelerator.wait_for_everyone()
    return run_dir


def loop_state(accelerator: Any, group_counter: int, position: int) -> dict[str, Any]:
    """What a checkpoint needs to go on with the same prompts: the main process's group
    counter and stream position, and every process's under ``ranks`` (dynamic sampling
    can draw a different number of prompts on each). Every process calls it."""
    from accelerate.utils import gather_object

    ranks = gather_object([[group_counter, position]])
    return {"group_counter": group_counter, "position": position, "ranks": ranks}


def _update(model: Any, policy: Any, ref_model: Any, optimizer: Any, scheduler: Any, accelerator: Any,
            algo: Any, algo_cfg: Any, cfg: RLConfig, trajs: list[Trajectory], pad_id: int, *,
            dropout: bool, noise: GradientNoise | None = None) -> dict[str, float]:
    samples = make_samples(trajs, algo, algo_cfg, cfg)
    policy.eval()
    # Updates per epoch: prompts_per_step / mini_batch_prompts for a full batch (fewer for a
    # batch the filter could not fill); a surplus kept by surplus=train is shared out over them.
    n_groups = len(samples) // cfg.group_size
    n_updates = max(1, math.ceil(min(n_groups, cfg.prompts_per_step) / cfg.mini_batch_prompts))
    # pi_old from the trainer itself (REFERENCES pitfall 3); when the batch gets a single
    # update, that is the update's own forward pass, so no extra pass is needed.
    old_from_update = cfg.old_logprobs == "recompute" and cfg.epochs == 1 and n_updates == 1 and not dropout
    temperature = cfg.rollout.temperature  # the loss's log-probs are those of the sampling distribution
    if cfg.old_logprobs == "recompute" and not old_from_update:
        recompute_logprobs(policy, samples, pad_id=pad_id, micro_batch_size=cfg.micro_batch_size,
                           temperature=temperature)
    if ref_model is not None:
        recompute_logprobs(ref_model, samples, pad_id=pad_id, micro_batch_size=cfg.micro_batch_size,
                           field="ref_logp", temperature=temperature)
    sums: dict[str, float] = {}
    rng = random.Random(cfg.seed + len(trajs))
    for _ in range(cfg.epochs):
        # Shuffle whole groups so a mini-batch holds complete groups.
        groups = [samples[i: i + cfg.group_size] for i in range(0, len(samples), cfg.group_size)]
        rng.shuffle(groups)
        for u in range(n_updates):
            part = [s for g in groups[u * len(groups) // n_updates: (u + 1) * len(groups) // n_updates] for s in g]
            m = update_step(model, optimizer, scheduler, accelerator, algo, algo_cfg, part,
                            pad_id=pad_id, micro_batch_size=cfg.micro_batch_size, grad_clip=cfg.grad_clip,
                            old_from_this_pass=old_from_update, temperature=temperature,
                            noise=noise, group_size=cfg.group_size)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
    done = cfg.epochs * n_updates
    out = {k: v / max(done, 1) for k, v in sums.items()}
    out["actor/tokens"] = sums.get("actor/tokens", 0.0)
    out["actor/updates"] = float(done)
    if noise is not None and noise.scale is not None:
        out["grad_noise/scale_episodes"] = noise.scale  # the running value, not a mean over this step's updates
    adv = [s.advantage for s in samples]
    out["actor/advantage_abs_mean"] = float(np.mean(np.abs(adv))) if adv else 0.0
    return out


def has_dropout(model: Any) -> bool:
    """Whether ``model`` drops anything in training mode (then a train-mode forward pass
    is not pi_old, and pi_old needs its own eval-mode pass)."""
    config = getattr(model, "config", None)
    rates = [v for k, v in (vars(config) if config is not None else {}).items()
             if "dropout" in k and isinstance(v, (int, float))]
    rates += [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    return any(r > 0 for r in rates)


def final_metric(run_dir: Path, key: str) -> float:
    """The last value of ``key`` in the run's ``metrics.jsonl``."""
    values = [row[key] for row in read_metrics(run_dir / "metrics.jsonl") if key in row]
    if not values:
        raise ValueError(f"sweep_metric={key!r} was never logged in {run_dir / 'metrics.jsonl'}; name a logged "
                         "metric, and for eval/* set eval_every so that an evaluation runs (e.g. eval_every=steps).")
    return float(values[-1])


def rl_command(cfg: RLConfig) -> Path | float:
    """``webdancer rl``: the run directory is Hydra's unless ``out=`` says otherwise.

    Returns the run directory, or with ``sweep_metric`` set the metric's final value, which
    is what a Hydra sweeper that optimizes (Optuna) reads from each job.
    """
    run_dir = train_rl(cfg)
    return final_metric(run_dir, cfg.sweep_metric) if cfg.sweep_metric else run_dir
