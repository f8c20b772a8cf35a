"""RL step throughput: our DAPO update path against TRL's GRPOTrainer, and the multi-turn loop.

    python benchmarks/rl_bench.py --out bench_out/rl.json [--threads 2] [--steps 4]

Single-turn, an identical workload on both sides: the default tiny model
(``make_tiny``: hidden 128, 2 layers, ~0.85M parameters), both starting from the same
saved weights; 32 short chat questions; each step takes ``--prompts-per-step`` of them
(default 4) with G = 8 completions each (32 sequences), at most 64 new tokens,
temperature 1.0, top-p 1.0; reward 1.0 when the decoded completion contains the
question's target word, else 0.0 (the same function on both sides); DAPO loss
(clip 0.2 / 0.28, token mean, no KL, no dual clip, group advantages with ε 1e-4, no
dynamic sampling, no overlong shaping); AdamW lr 1e-6, no weight decay, grad clip 1.0,
one optimizer step per batch with the whole batch in one forward pass; float32 on the CPU.

* ``ours``: ``rl_batch.single_turn_step`` (``HFEngine.generate`` for sampling,
  ``recompute_logprobs``, ``update_step`` with ``ALGORITHMS.get("dapo")``), once with
  pi_old recomputed by a forward pass (``recompute``, the RL loop's default) and once with
  the sampling log-probs as pi_old (``engine``).
* ``trl``: ``GRPOTrainer`` with ``GRPOConfig(loss_type="dapo", ...)``, gradient
  checkpointing off (TRL turns it on by default; we do not checkpoint). With one update per
  batch TRL skips the pi_old forward pass (it takes the current log-probs, detached).
  TRL's profiling times go only to wandb/mlflow/trackio, so the phases are timed here by
  wrapping its methods: generation = ``_generate_single_turn``; logprob = calls of
  ``_get_per_token_logps_and_entropies`` inside ``_generate_and_score_completions``;
  reward+other = the rest of ``_generate_and_score_completions`` (decode, rewards,
  advantages, metrics); update = the rest of the step (loss forward, backward, optimizer,
  logging). TRL's own logged ``step_time`` (``training_step`` only) is reported too.

Each side runs 1 warm-up step, then ``--steps`` measured steps, in each of ``--rounds``
rounds that take the sides in turn; a step's time runs from the start of one step to the
start of the next (TRL: ``on_step_begin`` callbacks, one extra step run to close the last
interval), so logging and data loading count. Reported: the median over all measured steps
of tokens/s (generated tokens / step seconds) and of each phase, plus summed totals; the
medians keep the comparison fair when other work shares the CPU (the load average is
recorded). Target: ours >= 1.3x TRL.

Multi-turn: ``train_rl`` for ``--mt-steps`` steps on the cached 2,000-page synthetic web
(4 prompts x G 8, max_turns 4, 48 new tokens per turn, compact prompt); reports
``perf/rollout_tokens_per_s``, ``perf/update_tokens_per_s`` and ``perf/env_share`` from
its ``metrics.jsonl``. ``--mt-model DIR`` runs it from a trained model (e.g. the demo's
``sft/final``, whose turns end in tool calls and answers rather than at the token budget)
instead of the random tiny one;
``--mt-micro-batch 1,4,16`` runs it once per micro-batch size (episodes per
forward/backward pass; default G) and reports each run's update seconds and tokens/s
(``multi_turn_by_micro_batch``), from the same model, prompts and seed every time (the
first step's rollouts are identical; later ones differ as the update's rounding does).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

TARGET_SPEEDUP = 1.3
PHASES = ["generation", "logprob", "update", "reward+other"]
LR = 1e-6
SUBJECTS = ("the river delta", "Marlow Quen", "the Glass Orchard", "Port Aldery", "the Blue Ashwing moth",
            "Ostrava Vale", "the Siege of Harrowmere", "the Telmark Guild")
TEMPLATES = (("Where is {}?", "in"), ("Who founded {}?", "the"), ("When was {} first recorded?", "of"),
             ("What is {} known for?", "a"))
QUESTIONS = [(tpl.format(s), target) for s in SUBJECTS for tpl, target in TEMPLATES]  # 32 questions


def word_reward(text: str, target: str) -> float:
    """1.0 when ``target`` appears in ``text`` as a whole word (case-insensitive), else 0.0."""
    return 1.0 if re.search(rf"\b{re.escape(target)}\b", text, flags=re.IGNORECASE) else 0.0


def dapo_config() -> Any:
    from webdancer.algos import ALGORITHMS

    return ALGORITHMS.get("dapo").make_config(
        {"dynamic_sampling": False, "soft_overlong": False, "clip_c": None, "adv_eps": 1e-4})


def summarize(steps: list[dict[str, float]], phases: list[str]) -> dict[str, Any]:
    """Medians over the measured steps (robust to other load on the machine) and totals.

    ``tokens_per_s`` is the median of the per-step rates; ``total_tokens_per_s`` divides the
    summed tokens by the summed seconds."""
    tokens = sum(s["tokens"] for s in steps)
    seconds = sum(s["step_s"] for s in steps)
    return {"steps": len(steps), "generated_tokens": tokens,
            "tokens_per_s": statistics.median(s["tokens"] / s["step_s"] for s in steps),
            "total_tokens_per_s": tokens / seconds, "step_s": statistics.median(s["step_s"] for s in steps),
            "phases_s": {p: statistics.median(s[p] for s in steps) for p in phases}, "per_step": steps}


# ----------------------------------------------------------------------------- ours
def run_ours(model_dir: Path, args: argparse.Namespace, old_logprobs: str) -> list[dict[str, float]]:
    """Per-step records of the measured steps of our single-turn loop."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_constant_schedule

    from webdancer.agents.engines.base import SamplingParams
    from webdancer.agents.engines.hf import HFEngine
    from webdancer.algos import ALGORITHMS
    from webdancer.algos.rl_batch import single_turn_step

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    scheduler = get_constant_schedule(optimizer)
    model, optimizer = accelerator.prepare(model, optimizer)
    engine = HFEngine(accelerator.unwrap_model(model), tokenizer, device="cpu")
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"] for q, _ in QUESTIONS]
    params = SamplingParams(max_new_tokens=args.max_completion, temperature=1.0, top_p=1.0, top_k=0, stop=())
    batch = args.prompts_per_step * args.group_size
    steps = []
    for step in range(1 + args.steps):
        first = (step * args.prompts_per_step) % len(QUESTIONS)
        chosen = list(range(first, first + args.prompts_per_step))

        def reward(i: int, ids: list[int], chosen: list[int] = chosen) -> float:
            return word_reward(tokenizer.decode(ids, skip_special_tokens=True), QUESTIONS[chosen[i]][1])

        m = single_turn_step(model, engine, optimizer, scheduler, accelerator, ALGORITHMS.get("dapo"), dapo_config(),
                             [prompts[i] for i in chosen], reward, group_size=args.group_size, params=params,
                             pad_id=engine.pad_id, micro_batch_size=batch, grad_clip=1.0, old_logprobs=old_logprobs)
        if step >= 1:  # step 0 warms up
            steps.append({"tokens": m["perf/generated_tokens"], "step_s": m["perf/step_s"],
                          "generation": m["perf/generate_s"], "logprob": m["perf/logprob_s"],
                          "update": m["perf/update_s"], "reward+other": m["perf/reward_s"],
                          "reward_mean": m["reward/mean"]})
    return steps


# ----------------------------------------------------------------------------- TRL
class _Timed:
    """Wraps a bound method: adds its wall time (and a count from its result) to ``self.totals``."""

    def __init__(self, totals: dict[str, float], key: str, fn: Any, count: Any = None) -> None:
        self.totals, self.key, self.fn, self.count = totals, key, fn, count

    def __call__(self, *a: Any, **kw: Any) -> Any:
        t = time.perf_counter()
        out = self.fn(*a, **kw)
        self.totals[self.key] = self.totals.get(self.key, 0.0) + time.perf_counter() - t
        if self.count is not None:
            self.totals["tokens"] = self.totals.get("tokens", 0.0) + self.count(out)
        return out


def run_trl(model_dir: Path, args: argparse.Namespace, work: Path) -> tuple[list[dict[str, float]], list[float]]:
    """Per-step records of the measured steps of GRPOTrainer, and its own logged step times."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q, _ in QUESTIONS],
                                 "target": [t for _, t in QUESTIONS]})

    def contains_target(completions: list[Any], target: list[str], **_: Any) -> list[float]:
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [word_reward(text, t) for text, t in zip(texts, target)]

    batch = args.prompts_per_step * args.group_size
    config = GRPOConfig(
        output_dir=str(work / "trl"), loss_type="dapo", num_generations=args.group_size,
        max_completion_length=args.max_completion, per_device_train_batch_size=batch,
        gradient_accumulation_steps=1, epsilon=0.2, epsilon_high=0.28, beta=0.0, temperature=1.0, top_p=1.0,
        top_k=0, use_vllm=False, report_to=[], logging_steps=1, max_steps=args.steps + 2, bf16=False,
        use_cpu=True, gradient_checkpointing=False, learning_rate=LR, weight_decay=0.0,
        lr_scheduler_type="constant", max_grad_norm=1.0, save_strategy="no", seed=args.seed, disable_tqdm=True,
        dataloader_num_workers=0)
    trainer = GRPOTrainer(model=model, reward_funcs=contains_target, args=config, train_dataset=dataset,
                          processing_class=tokenizer)
    totals: dict[str, float] = {}
    in_scoring = {"on": False}
    gen_score = trainer._generate_and_score_completions
    logps = trainer._get_per_token_logps_and_entropies

    def scoring(*a: Any, **kw: Any) -> Any:
        in_scoring["on"] = True
        try:
            return gen_score(*a, **kw)
        finally:
            in_scoring["on"] = False

    def logps_split(*a: Any, **kw: Any) -> Any:
        return (logp_in_scoring if in_scoring["on"] else logp_in_loss)(*a, **kw)

    logp_in_scoring = _Timed(totals, "logprob", logps)
    logp_in_loss = _Timed(totals, "loss_logprob", logps)
    trainer._generate_single_turn = _Timed(totals, "generation", trainer._generate_single_turn,
                                           count=lambda out: sum(len(c) for c in out[0]))
    trainer._generate_and_score_completions = _Timed(totals, "generate_and_score", scoring)
    trainer._get_per_token_logps_and_entropies = logps_split
    marks: list[tuple[float, dict[str, float]]] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, *a: Any, **kw: Any) -> None:
            marks.append((time.perf_counter(), dict(totals)))

    trainer.add_callback(StepClock())
    trainer.train()
    steps = []
    for (t0, a), (t1, b) in list(itertools.pairwise(marks))[1:]:  # interval 0 is the warm-up step
        d = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in ("tokens", "generation", "logprob", "generate_and_score")}
        step_s = t1 - t0
        steps.append({"tokens": d["tokens"], "step_s": step_s, "generation": d["generation"],
                      "logprob": d["logprob"], "update": step_s - d["generate_and_score"],
                      "reward+other": d["generate_and_score"] - d["generation"] - d["logprob"]})
    logged = [r["step_time"] for r in trainer.state.log_history if "step_time" in r][1: 1 + args.steps]
    rewards = [r["reward"] for r in trainer.state.log_history if "reward" in r][1: 1 + args.steps]
    for step, reward_mean in zip(steps, rewards):
        step["reward_mean"] = reward_mean
    return steps, logged


# ----------------------------------------------------------------------------- multi-turn
def run_multi_turn(model_dir: Path, web: Path, args: argparse.Namespace, work: Path,
                   micro_batch_size: int) -> dict[str, Any]:
    from webdancer.algos.rl import train_rl
    from webdancer.conf.rl import EnvSection, RLConfig, RolloutSection, TaskSection

    cfg = RLConfig(
        algo={"name": "dapo", "dynamic_sampling": False}, model=str(model_dir),
        out=str(work / f"multi_turn_mb{micro_batch_size}"),
        env=EnvSection(web=str(web)), tasks=TaskSection(n_train=64, n_test=8),
        rollout=RolloutSection(max_turns=4, max_new_tokens=48, max_context_tokens=2048, prompt_style="compact"),
        steps=args.mt_steps, prompts_per_step=args.prompts_per_step, group_size=args.group_size,
        mini_batch_prompts=args.prompts_per_step, micro_batch_size=micro_batch_size, lr=LR, progress=False,
        wandb_mode="disabled", threads=args.threads, seed=args.seed)
    run = train_rl(cfg)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = ("perf/rollout_tokens_per_s", "perf/update_tokens_per_s", "perf/env_share", "perf/rollout_s",
            "perf/step_s", "actor/tokens", "rollout/response_length_mean", "rollout/turns_mean")
    per_step = [{k: r.get(k) for k in ("step", *keys)} for r in rows]
    for step in per_step:
        step["update_s"] = step["perf/step_s"] - step["perf/rollout_s"]
    return {"per_step": per_step, "last": per_step[-1],
            "median_update_s": statistics.median(step["update_s"] for step in per_step),
            "median_update_tokens_per_s": statistics.median(step["perf/update_tokens_per_s"] for step in per_step),
            "settings": {"prompts_per_step": args.prompts_per_step, "group_size": args.group_size,
                         "micro_batch_size": micro_batch_size, "model": str(model_dir),
                         "max_turns": 4, "max_new_tokens": 48, "max_context_tokens": 2048}}


# ----------------------------------------------------------------------------- report
def versions() -> dict[str, str]:
    import accelerate
    import transformers

    out = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "accelerate": accelerate.__version__}
    try:
        import datasets
        import trl

        out.update(trl=trl.__version__, datasets=datasets.__version__)
    except ImportError:
        pass
    return out


def print_table(result: dict[str, Any]) -> None:
    rows = [(name, r) for name, r in result["single_turn"].items() if isinstance(r, dict) and "tokens_per_s" in r]
    print(f"{'single-turn':<16}{'tok/s':>9}{'step s':>9}{'gen s':>9}{'logp s':>9}{'update s':>10}{'other s':>9}")
    for name, r in rows:
        p = r["phases_s"]
        print(f"{name:<16}{r['tokens_per_s']:>9.0f}{r['step_s']:>9.3f}{p['generation']:>9.3f}{p['logprob']:>9.3f}"
              f"{p['update']:>10.3f}{p['reward+other']:>9.3f}")
    for key, value in result["single_turn"].get("speedup_vs_trl", {}).items():
        print(f"speedup {key}: {value:.2f}x (target >= {TARGET_SPEEDUP}x)")
    mt = result.get("multi_turn")
    if mt:
        last = mt["last"]
        print(f"multi-turn (step {last['step']}): rollout {last['perf/rollout_tokens_per_s']:.0f} tok/s, "
              f"update {last['perf/update_tokens_per_s']:.0f} tok/s, env share {last['perf/env_share']:.1%}")
    by_micro = result.get("multi_turn_by_micro_batch", {})
    if len(by_micro) > 1:
        print(f"{'micro-batch':<14}{'update s':>10}{'update tok/s':>14}   (medians over the steps)")
        for size, r in by_micro.items():
            print(f"{size:<14}{r['median_update_s']:>10.2f}{r['median_update_tokens_per_s']:>14.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--steps", type=int, default=4, help="measured steps per side and round (after 1 warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every side once, in turn")
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-completion", type=int, default=64, help="max new tokens per completion")
    parser.add_argument("--mt-steps", type=int, default=2, help="multi-turn train_rl steps (0 skips it)")
    parser.add_argument("--web", help="synthetic web directory (default: the cached 2,000-page site, seed 0)")
    parser.add_argument("--mt-model", help="model directory for the multi-turn loop (default: the random tiny model)")
    parser.add_argument("--mt-micro-batch", default="",
                        help="comma-separated micro-batch sizes for the multi-turn loop (default: the group size)")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "disabled")

    from webdancer.agents.tiny import make_tiny
    from webdancer.envs.registration import ensure_synthetic_web

    result: dict[str, Any] = {"versions": versions(), "threads": args.threads, "settings": vars(args),
                              "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg(), "single_turn": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = make_tiny(work / "tiny")
        runs: dict[str, list[dict[str, float]]] = {"ours_recompute": [], "ours_engine": []}
        if not args.skip_trl:
            runs["trl"] = []
        trl_logged: list[float] = []
        for _ in range(args.rounds):  # rounds interleave the sides, so that load spikes hit all of them
            runs["ours_recompute"] += run_ours(model_dir, args, "recompute")
            runs["ours_engine"] += run_ours(model_dir, args, "engine")
            if not args.skip_trl:
                steps, logged = run_trl(model_dir, args, work)
                runs["trl"] += steps
                trl_logged += logged
        single = result["single_turn"]
        for name, steps in runs.items():
            single[name] = summarize(steps, PHASES)
        if not args.skip_trl:
            single["trl"]["trl_logged_step_time_s"] = statistics.median(trl_logged)
            rate = single["trl"]["tokens_per_s"]
            single["speedup_vs_trl"] = {"recompute": single["ours_recompute"]["tokens_per_s"] / rate,
                                        "engine": single["ours_engine"]["tokens_per_s"] / rate}
        if args.mt_steps:
            web = Path(args.web) if args.web else ensure_synthetic_web(pages=2000, seed=0)
            sizes = [int(v) for v in args.mt_micro_batch.split(",") if v] or [args.group_size]
            mt_model = Path(args.mt_model) if args.mt_model else model_dir
            by_micro = {str(size): run_multi_turn(mt_model, web, args, work, size) for size in sizes}
            result["multi_turn"] = by_micro[str(sizes[0])]
            result["multi_turn_by_micro_batch"] = by_micro
    result["load_avg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print_table(result)


if __name__ == "__main__":
    main()
