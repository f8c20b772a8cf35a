"""Checkpoints: weights as safetensors, optimizer/scheduler/RNG state, written atomically.

    run_dir/checkpoints/step-000010/
        model.safetensors, config.json, tokenizer files   (a loadable HF directory)
        optimizer.pt, scheduler.pt, rng.pt, trainer_state.json

A checkpoint is written into a temporary sibling directory and renamed into place,
so a kill mid-write never leaves a half checkpoint that ``latest_checkpoint`` picks.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "trainer_state.json"


def seed_everything(seed: int, threads: int = 0) -> None:
    """Seed Python, NumPy and torch; ``threads`` > 0 also fixes torch's CPU thread count."""
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any], rank: int = 0) -> None:
    """Restore ``state``: one process's RNG states, or every process's under ``ranks`` (this
    process takes its own; a resume on more processes than were saved falls back to rank 0's)."""
    if "ranks" in state:
        ranks = state["ranks"]
        state = ranks[rank] if rank < len(ranks) else ranks[0]
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(ckpt_dir: str | Path, *, model: Any, tokenizer: Any = None, optimizer: Any = None,
                    scheduler: Any = None, state: Mapping[str, Any], accelerator: Any = None,
                    state_dict: Mapping[str, Any] | None = None,
                    rng_states: list[dict[str, Any]] | None = None) -> Path:
    """Write a checkpoint atomically; ``state_dict`` replaces the model's own (a full
    state dict gathered from sharded FSDP/DeepSpeed weights); ``rng_states`` holds every
    process's RNG states (default: this process's)."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ckpt_dir.name}.", dir=ckpt_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True,
                              **({} if state_dict is None else {"state_dict": dict(state_dict)}))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(_rng_state() if rng_states is None else {"ranks": list(rng_states)}, tmp / "rng.pt")
        (tmp / STATE_FILE).write_text(json.dumps(dict(state), indent=2), encoding="utf-8")
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
        os.replace(tmp, ckpt_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ckpt_dir


def load_checkpoint(ckpt_dir: str | Path, *, model: Any = None, optimizer: Any = None,
                    scheduler: Any = None, rank: int = 0) -> dict[str, Any]:
    """Restore what is given (and process ``rank``'s RNG states); -> the saved trainer state."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / STATE_FILE).exists():
        raise FileNotFoundError(f"{ckpt_dir} is not a checkpoint (no {STATE_FILE}); point resume at a run directory.")
    if model is not None:
        from safetensors.torch import load_file

        weights = load_file(ckpt_dir / "model.safetensors")
        missing, unexpected = model.load_state_dict(weights, strict=False)
        tied = set(getattr(model, "_tied_weights_keys", None) or [])
        missing = [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint {ckpt_dir} does not fit the model (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}); resume with the same model config.")
    if optimizer is not None and (ckpt_dir / "optimizer.pt").exists():
        optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=False))
    if scheduler is not None and (ckpt_dir / "scheduler.pt").exists():
        scheduler.load_state_dict(torch.load(ckpt_dir / "scheduler.pt", weights_only=False))
    if (ckpt_dir / "rng.pt").exists():
        _set_rng_state(torch.load(ckpt_dir / "rng.pt", weights_only=False), rank)
    return json.loads((ckpt_dir / STATE_FILE).read_text(encoding="utf-8"))


def checkpoints(run_dir: str | Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.exists():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    if keep <= 0:
        return
    for path in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------- from a training loop
def is_sharded(accelerator: Any) -> bool:
    """Whether the weights are split over processes, so that gathering them is a collective."""
    return accelerator.distributed_type.name in ("FSDP", "DEEPSPEED", "MEGATRON_LM")


def save_step(run_dir: Path, step: int, *, model: Any, tokenizer: Any, optimizer: Any, scheduler: Any,
              accelerator: Any, state: Mapping[str, Any], keep: int) -> None:
    """Checkpoint ``step`` into ``run_dir/checkpoints`` and keep the latest ``keep``.

    Every process calls it: under FSDP/DeepSpeed gathering the full weights takes all of them,
    and every process's RNG states are gathered. Only the main process writes; sharded
    optimizer state is left out (no process holds all of it).
    """
    from accelerate.utils import gather_object

    sharded = is_sharded(accelerator)
    full = accelerator.get_state_dict(model) if sharded else None  # gathers sharded weights
    rngs = gather_object([_rng_state()]) if accelerator.num_processes > 1 else None
    if accelerator.is_main_process:
        save_checkpoint(run_dir / "checkpoints" / f"step-{step:06d}", model=model, tokenizer=tokenizer,
                        optimizer=None if sharded else optimizer, scheduler=scheduler, accelerator=accelerator,
                        state={**state, "step": step}, state_dict=full, rng_states=rngs)
        prune_checkpoints(run_dir, keep)
    accelerator.wait_for_everyone()


def save_final(out: Path, *, model: Any, tokenizer: Any, accelerator: Any) -> None:
    """The trained model as a plain HF directory (``from_pretrained(out)``); every process calls it,
    the main one writes."""
    full = accelerator.get_state_dict(model) if is_sharded(accelerator) else None
    if accelerator.is_main_process:
        kwargs = {} if full is None else {"state_dict": full}
        accelerator.unwrap_model(model).save_pretrained(out, safe_serialization=True, **kwargs)
        tokenizer.save_pretrained(out)
    accelerator.wait_for_everyone()
