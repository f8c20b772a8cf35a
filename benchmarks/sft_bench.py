"""SFT training throughput: ``webdancer.algos.sft`` against TRL's ``SFTTrainer``.

    python benchmarks/sft_bench.py --out bench_out/sft.json [--conversations 48] [--epochs 2] [--threads 2]

Same model, data, batch and optimizer for every variant:

* model: ``make_tiny`` with hidden 256, 4 layers, 4 heads (2 KV), MLP 768, its
  default vocabulary, float32, sdpa attention, no gradient checkpointing;
* data: oracle trajectories on the synthetic web (compact prompt, short
  observations), tokenized once by ``tokenize_conversation``: every variant trains on
  the very same ids and the same assistant-only mask;
* batch: ``--batch`` conversations per optimizer step, AdamW (lr 1e-4, weight decay
  0.1), cosine schedule, grad clip 1.0, ``--epochs`` epochs.

Variants, each in its own process (so peak RSS is its own):

* ``webdancer``: ``train_sft`` with packing (rows of at most ``--row-tokens`` tokens,
  no padding, logits only at loss positions);
* ``webdancer_unpacked``: the same with ``pack=false, micro_batch_size=1`` (one
  conversation per forward pass: on CPU, attention over a packed row costs its whole
  length squared, so this can be the faster layout there);
* ``trl``: ``trl.SFTTrainer`` on a pre-tokenized dataset with an ``assistant_masks``
  column (TRL sets labels to -100 outside it: its assistant-only loss on the same
  mask), padded micro-batches of ``--trl-micro`` conversations with gradient
  accumulation up to ``--batch``. TRL's conversational ``assistant_only_loss=True``
  would re-tokenize and needs ``{% generation %}`` markers the tiny template lacks;
* ``trl_padding_free``: the same with TRL's ``padding_free=True`` (a micro-batch
  flattened into one row with restarting position ids).

Throughput is non-padding tokens (every token of every conversation, prompt and tool
responses included) per second of the training loop (ours: the sum of step times;
TRL: ``on_train_begin`` to ``on_train_end``); model loading and data preparation are
outside both. Peak memory is the process's peak RSS on CPU (max CUDA memory on GPU).
Target: webdancer >= 1.3x TRL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 1.3
VARIANTS = ("webdancer", "webdancer_unpacked", "trl", "trl_padding_free")


# ----------------------------------------------------------------------------- setup
def prepare(work: Path, n_conversations: int) -> dict[str, Any]:
    """Synthetic web -> oracle conversations -> tiny model -> tokenized samples (JSONL)."""
    from transformers import AutoTokenizer

    from webdancer.agents.tiny import make_tiny
    from webdancer.data.sampling import sample_oracle
    from webdancer.data.sft_data import load_sft_samples
    from webdancer.envs.backends import open_web
    from webdancer.envs.synthetic_tasks import SyntheticTasks
    from webdancer.envs.web_env import WebEnv
    from webdancer.web.webdir import WebDir, build_synthetic_web

    web = work / "web"
    if not (web / "graph.json").exists():
        build_synthetic_web(web, pages=600, seed=0, progress=False)
    store, search = open_web(web)
    tasks = list(SyntheticTasks(WebDir(web).graph(), n=n_conversations, hops=(1, 3), split="all", seed=0))
    env_fn = lambda: WebEnv(store=store, search=search, max_turns=12, top_k=5, snippet_chars=150,
                            visit_budget_chars=1200, max_links=5)
    trajs = sample_oracle(env_fn, tasks, prompt_style="compact", date="2025-01-01", progress=False)
    store.close()
    conversations = work / "conversations.jsonl"
    conversations.write_text("".join(json.dumps({"messages": t.messages}) + "\n" for t in trajs), encoding="utf-8")
    model = make_tiny(work / "model", hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
                      intermediate_size=768)
    samples, stats = load_sft_samples(AutoTokenizer.from_pretrained(model), conversations, max_length=4096)
    tokenized = work / "tokenized.jsonl"
    tokenized.write_text("".join(json.dumps({"input_ids": s.ids, "assistant_masks": s.mask}) + "\n"
                                 for s in samples), encoding="utf-8")
    lengths = sorted(len(s) for s in samples)
    return {"model": str(model), "conversations": str(conversations), "tokenized": str(tokenized),
            "n_conversations": len(samples), "tokens": stats.tokens, "loss_tokens": stats.loss_tokens,
            "length_min": lengths[0], "length_median": lengths[len(lengths) // 2], "length_max": lengths[-1]}


# ----------------------------------------------------------------------------- workers
def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_webdancer(spec: dict[str, Any], pack: bool = True) -> dict[str, Any]:
    from webdancer.algos.sft import train_sft
    from webdancer.conf.sft import SFTConfig

    out = Path(spec["work"]) / ("run_webdancer" if pack else "run_webdancer_unpacked")
    layout = {"micro_batch_tokens": spec["row_tokens"]} if pack else {"micro_batch_size": 1}
    cfg = SFTConfig(model=spec["model"], data=[spec["conversations"]], out=str(out), lr=1e-4, weight_decay=0.1,
                    batch_size=spec["batch"], pack=pack, **layout, max_length=4096,
                    epochs=spec["epochs"], schedule="cosine", wandb_mode="disabled", progress=False,
                    threads=spec["threads"], seed=0)
    train_sft(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = sum(r["perf/step_s"] for r in rows)
    tokens = sum(r["sft/tokens"] for r in rows)
    return {"steps": len(rows), "train_s": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "first_loss": rows[0]["sft/loss"], "last_loss": rows[-1]["sft/loss"], "peak_mem_mb": _peak_memory_mb()}


def run_trl(spec: dict[str, Any], padding_free: bool) -> dict[str, Any]:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    torch.set_num_threads(spec["threads"])
    rows = [json.loads(line) for line in Path(spec["tokenized"]).read_text().splitlines()]
    dataset = Dataset.from_list(rows)
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    micro = spec["trl_micro"]
    args = trl.SFTConfig(
        output_dir=str(Path(spec["work"]) / ("run_trl_pf" if padding_free else "run_trl")),
        per_device_train_batch_size=micro, gradient_accumulation_steps=spec["batch"] // micro,
        num_train_epochs=spec["epochs"], learning_rate=1e-4, weight_decay=0.1, lr_scheduler_type="cosine",
        warmup_steps=0, max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False, gradient_checkpointing=False,
        # the inputs are already within max_length; padding-free TRL refuses to enforce it itself
        max_length=None if padding_free else 4096, padding_free=padding_free, dataloader_num_workers=0,
        disable_tqdm=True, seed=0,
    )

    class Clock(TrainerCallback):
        def on_train_begin(self, *a: Any, **k: Any) -> None:
            self.start = time.perf_counter()

        def on_train_end(self, *a: Any, **k: Any) -> None:
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             callbacks=[clock])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tokens = spec["epochs"] * sum(len(r["input_ids"]) for r in rows)
    return {"steps": trainer.state.global_step, "train_s": clock.seconds, "tokens": tokens,
            "tokens_per_s": tokens / clock.seconds, "first_loss": losses[0], "last_loss": losses[-1],
            "peak_mem_mb": _peak_memory_mb(), "trl_version": trl.__version__}


def worker(variant: str, spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    if variant.startswith("webdancer"):
        result = run_webdancer(spec, pack=variant == "webdancer")
    else:
        result = run_trl(spec, padding_free=variant == "trl_padding_free")
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- driver
def run_variant(variant: str, spec_path: Path) -> dict[str, Any]:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(json.loads(spec_path.read_text())["threads"])}
    proc = subprocess.run([sys.executable, __file__, "--worker", variant, "--spec", str(spec_path)], env=env,
                          capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}"}
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="JSON file to write (required)")
    parser.add_argument("--conversations", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8, help="conversations per optimizer step")
    parser.add_argument("--trl-micro", type=int, default=4, help="TRL conversations per forward pass")
    parser.add_argument("--row-tokens", type=int, default=4096, help="our tokens per packed forward pass")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: "
                        + ", ".join(VARIANTS))
    parser.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.spec)
        return
    if not args.out:
        parser.error("--out FILE is required")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or "webdancer" not in variants:
        parser.error(f"--variants {args.variants!r}: each must be one of {', '.join(VARIANTS)}, "
                     "and webdancer (the reference) must be among them.")
    work = Path(args.work or tempfile.mkdtemp(prefix="sft_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    spec = {**prepare(work, args.conversations), "work": str(work), "batch": args.batch, "epochs": args.epochs,
            "trl_micro": args.trl_micro, "row_tokens": args.row_tokens, "threads": args.threads}
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    print(f"data: {spec['n_conversations']} conversations, {spec['tokens']} tokens ({spec['loss_tokens']} in the "
          f"loss), lengths {spec['length_min']}-{spec['length_max']} (median {spec['length_median']}); "
          f"prepared in {time.perf_counter() - t0:.0f} s")
    results = {v: run_variant(v, spec_path) for v in variants}
    import torch

    ours = results["webdancer"].get("tokens_per_s")
    for name in ("webdancer_unpacked", "trl", "trl_padding_free"):
        theirs = results.get(name, {}).get("tokens_per_s")
        if ours and theirs:
            results[name]["webdancer_speedup"] = ours / theirs
    report = {
        "benchmark": "sft_throughput", "target_speedup_vs_trl": TARGET,
        "meets_target": bool(ours and results.get("trl", {}).get("tokens_per_s")
                             and ours / results["trl"]["tokens_per_s"] >= TARGET),
        "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": args.threads,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()},
        "setup": {k: v for k, v in spec.items() if k not in ("work", "model", "conversations", "tokenized")},
        "results": results,
    }
    print(f"\n{'variant':<18} {'tokens/s':>10} {'train s':>8} {'steps':>6} {'peak MB':>9} {'loss first->last':>18} "
          f"{'ours/x':>7}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<18} error: {r['error'][:300]}")
            continue
        speedup = r.get("webdancer_speedup")
        print(f"{name:<18} {r['tokens_per_s']:>10.0f} {r['train_s']:>8.1f} {r['steps']:>6} {r['peak_mem_mb']:>9.0f} "
              f"{r['first_loss']:>8.3f} -> {r['last_loss']:<7.3f} {'' if speedup is None else f'{speedup:.2f}x':>7}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\n-> {out}")


if __name__ == "__main__":
    main()
