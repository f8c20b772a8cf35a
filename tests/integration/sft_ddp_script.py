"""Run under `accelerate launch --num_processes 2 --cpu`: the gradients of SFT step 0
(rank 0 writes them to argv[3]), then two full SFT steps into the run directory argv[4]."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from sft_setup import step_grads

from webdancer.algos.sft import train_sft
from webdancer.conf.sft import SFTConfig


def main() -> None:
    model_dir, data, grads_out, run_dir = (Path(a) for a in sys.argv[1:5])
    torch.set_num_threads(1)
    grads, metrics = step_grads(model_dir, data, batch_size=4, row_tokens=1100)
    if torch.distributed.get_rank() == 0:
        torch.save({"grads": grads, "metrics": metrics, "world": torch.distributed.get_world_size()}, grads_out)
    train_sft(SFTConfig(model=str(model_dir), data=[str(data)], out=str(run_dir), batch_size=4, max_length=1100,
                        max_steps=2, lr=1e-3, wandb_mode="disabled", progress=False, threads=1))


if __name__ == "__main__":
    main()
