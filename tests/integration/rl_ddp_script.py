"""Run under `accelerate launch` (two processes: `--config_file webdancer/conf/accelerate/cpu_2proc.yaml`): one policy-gradient step on a
fixed batch split across processes; rank 0 writes the gradients to argv[2], and the RL
loop's checkpoint state for per-rank stream positions (and whether a checkpoint gave each
process back its own RNG state) to argv[2] + ".state.json"."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from grad_capture import CaptureGrads, NoSchedule
from transformers import AutoModelForCausalLM

from webdancer.algos import ALGORITHMS
from webdancer.algos.checkpoint import load_checkpoint, save_step
from webdancer.algos.rl import loop_state
from webdancer.algos.rl_batch import Sample, recompute_logprobs, update_step


def fixed_samples(vocab: int) -> list[Sample]:
    gen = torch.Generator().manual_seed(0)
    samples = []
    for i in range(8):  # uneven lengths and loss-token counts across what each rank gets
        n = 12 + 7 * i
        ids = torch.randint(0, vocab, (n,), generator=gen).tolist()
        mask = [0] * 5 + [int(torch.rand((), generator=gen) < 0.7) for _ in range(n - 5)]
        samples.append(Sample(ids, mask, advantage=float(i % 3) - 1.0))
    return samples


def rng_round_trip(accelerator: Accelerator, model: torch.nn.Module, run_dir: Path) -> list[list[float]]:
    """Checkpoint with a different RNG state on each process, scramble it, load it back:
    -> per process, the draws after saving and after loading (equal when each got its own)."""
    from accelerate.utils import gather_object

    rank = accelerator.process_index
    torch.manual_seed(100 + rank)
    save_step(run_dir, 1, model=model, tokenizer=None, optimizer=None, scheduler=None, accelerator=accelerator,
              state={}, keep=1)
    after_save = torch.rand(3).tolist()
    torch.manual_seed(999)
    load_checkpoint(run_dir / "checkpoints" / "step-000001", rank=rank)
    return gather_object([[after_save, torch.rand(3).tolist()]])


def main() -> None:
    model_dir, out = sys.argv[1], sys.argv[2]
    algo_name = sys.argv[3] if len(sys.argv) > 3 else "dapo"
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    samples = fixed_samples(model.config.vocab_size)
    recompute_logprobs(model, samples, pad_id=0, micro_batch_size=4)
    for s in samples:  # make pi_old differ from pi so the ratio and clipping matter
        s.old_logp = [x + 0.1 * ((j % 5) - 2) for j, x in enumerate(s.old_logp)]
    capture = CaptureGrads(model)
    model, _ = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.0))
    algo = ALGORITHMS.get(algo_name)
    mine = samples[accelerator.process_index:: accelerator.num_processes]
    update_step(model, capture, NoSchedule(), accelerator, algo, algo.make_config({}), mine, pad_id=0,
                micro_batch_size=2, grad_clip=1e9)
    rank = accelerator.process_index
    state = loop_state(accelerator, 7 + rank, 40 + 3 * rank)  # ranks that drew different prompt counts
    rng = rng_round_trip(accelerator, model, Path(out + ".run"))
    if accelerator.is_main_process:
        torch.save(capture.grads, out)
        with open(out + ".state.json", "w") as f:
            json.dump({**state, "world": accelerator.num_processes, "rng": rng}, f)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
