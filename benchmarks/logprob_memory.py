"""Peak memory of the RL update's token log-probs and entropy: ours against a full log-softmax.

    python benchmarks/logprob_memory.py --out bench_out/logprob_memory.json [--vocab 151936] [--tokens 1024]

The workload is the part of an RL step that grows with the vocabulary: logits (B, T, V) from
a stand-in model (embedding, tanh, a V-way projection; hidden 64), the per-token log-probs of
the sequence with their backward pass, and the per-token entropy (no gradient), in float32 on
the CPU. Two ways:

* ``full_log_softmax``: log_softmax over the vocabulary, gather, and the entropy from the
  log-softmax tensor in one expression (what ``rl_batch.token_logprobs`` did before);
* ``ours``: ``rl_batch.token_logprobs`` (``TokenLogProb``: logsumexp, entropy and the softmax
  gradient in pieces of rows).

Each runs in its own process after one warm-up step; reported: the peak RSS of the measured
step (``VmHWM``, reset after the warm-up) above the RSS before it, seconds per step, and the
(B, T, V) float32 tensor size for scale. The two must give the same log-probs, gradients
and entropy (checked in ``tests/unit/test_algos.py``).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch


class StandIn(torch.nn.Module):
    def __init__(self, vocab: int, dim: int = 64) -> None:
        super().__init__()
        self.emb, self.head = torch.nn.Embedding(vocab, dim), torch.nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.head(torch.tanh(self.emb(input_ids))))


def full_log_softmax(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(ids, mask).logits[:, :-1].float()
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, ids[:, 1:, None])[..., 0]
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def ours(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from webdancer.algos.rl_batch import token_logprobs

    logp, entropy = token_logprobs(model, ids, mask, with_entropy=True)
    assert entropy is not None
    return logp, entropy


def status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS (Linux)
        f.write("5")


def child(variant: str, vocab: int, tokens: int) -> dict[str, float]:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = StandIn(vocab)
    ids = torch.randint(0, vocab, (1, tokens))
    fn = {"full_log_softmax": full_log_softmax, "ours": ours}[variant]
    fn(model, ids, torch.ones_like(ids))[0].sum().backward()  # warm-up: allocator, kernels, grads
    model.zero_grad(set_to_none=False)
    reset_peak()  # the warm-up's peak must not count
    base = status_mb("VmRSS")
    t0 = time.perf_counter()
    logp, _ = fn(model, ids, torch.ones_like(ids))
    logp.sum().backward()
    seconds = time.perf_counter() - t0
    return {"peak_above_start_mb": status_mb("VmHWM") - base, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_out/logprob_memory.json")
    parser.add_argument("--vocab", type=int, default=151936)  # Qwen2.5 / Qwen3
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.vocab, args.tokens)))
        return
    results = {}
    for variant in ("full_log_softmax", "ours"):
        run = subprocess.run([sys.executable, __file__, "--child", variant, "--vocab", str(args.vocab),
                              "--tokens", str(args.tokens)], capture_output=True, text=True, check=True)
        results[variant] = json.loads(run.stdout.strip().splitlines()[-1])
    tensor_mb = args.tokens * args.vocab * 4 / 2**20
    report = {"vocab": args.vocab, "tokens": args.tokens, "btv_float32_mb": tensor_mb, "results": results,
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"vocab {args.vocab}, {args.tokens} tokens; one (B, T, V) float32 tensor = {tensor_mb:.0f} MB")
    print("| way | peak above start (MB) | seconds |")
    print("|---|---|---|")
    for variant, r in results.items():
        print(f"| {variant} | {r['peak_above_start_mb']:.0f} | {r['seconds']:.2f} |")


if __name__ == "__main__":
    main()
