"""Masked-observation SFT (WebDancer's masked loss), readable top to bottom.

    webdancer sft runs/synth/trajectories.jsonl model=Qwen/Qwen2.5-0.5B-Instruct
    accelerate launch --config_file webdancer/conf/accelerate/multi_gpu.yaml \\
        -m webdancer.cli sft data.jsonl model=... batch_size=32

The loss of one optimizer step is the mean next-token NLL over the assistant tokens of
*all* its conversations (tool responses and prompts masked):

    L = (1/N) Σ_{t ∈ A} −log p_θ(x_t | x_<t),   A = assistant tokens of the step, N = |A|

The step's conversations are split over processes and, on each, over micro-batches.
So that summed micro-batch gradients, averaged over processes by DDP/FSDP/DeepSpeed,
give ∇L exactly: N is counted over every micro-batch of every process before the
first forward (``accelerator.reduce``), and micro-batch k's loss is
``Σ_{t ∈ A_k} NLL_t / (N / world_size)``; the division by world size undoes the
average the data-parallel wrapper takes. The micro-batch count is made equal across
processes (empty passes of zero loss) so sharded wrappers stay in lockstep.

Data order is a pure function of (seed, epoch, step): step s of epoch e takes the
conversations at ``[k·B, (k+1)·B)`` of a permutation seeded by ``seed + e``. Resuming
from a checkpoint therefore skips exactly the consumed batches, and on CPU the resumed
loss curve equals the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from webdancer.algos.checkpoint import (
    is_sharded,
    latest_checkpoint,
    load_checkpoint,
    save_final,
    save_step,
    seed_everything,
)
from webdancer.algos.rl_batch import loss_positions, takes_logits_to_keep
from webdancer.conf.sft import SFTConfig
from webdancer.data.sft_data import (
    Batch,
    SFTSample,
    block_causal_mask,
    load_sft_samples,
    micro_batches,
)
from webdancer.runlog import RunLogger

log = logging.getLogger("webdancer.sft")


# ----------------------------------------------------------------------------- the loss
def sft_loss(logits: Tensor, labels: Tensor, mask: Tensor, scale_tokens: float | Tensor) -> tuple[Tensor, Tensor]:
    """Masked next-token NLL, summed and divided by ``scale_tokens``.

    ``logits`` (B, T, V) score ``labels`` (B, T) position by position (already shifted:
    ``logits[:, t]`` predicts ``labels[:, t]``); ``mask`` (B, T) is true on the labels
    that count. Computed in float32. -> (Σ_mask NLL / scale_tokens, number of mask
    tokens as a 0-d tensor). Masked positions never reach the result or its gradient.
    """
    maskb = mask.bool()
    # Select first: the softmax then runs on loss positions only, and nothing at the
    # other positions (NaN, an out-of-range label) reaches the value or the gradient.
    nll = F.cross_entropy(logits[maskb].float(), labels[maskb], reduction="sum")  # over (N, V)
    return nll / scale_tokens, maskb.sum()


# ----------------------------------------------------------------------------- data order
def steps_per_epoch(n_samples: int, batch_size: int) -> int:
    return max(1, math.ceil(n_samples / batch_size))


def step_indices(n_samples: int, batch_size: int, seed: int, step: int) -> tuple[int, list[int]]:
    """-> (epoch, indices of the conversations of optimizer step ``step``, 0-based)."""
    epoch, k = divmod(step, steps_per_epoch(n_samples, batch_size))
    order = random.Random(seed + epoch).sample(range(n_samples), n_samples)
    return epoch, order[k * batch_size: (k + 1) * batch_size]


def step_batches(samples: Sequence[SFTSample], cfg: SFTConfig, step: int, rank: int, world: int,
                 pad_id: int) -> list[Batch]:
    """This process's micro-batches of optimizer step ``step``."""
    _, indices = step_indices(len(samples), cfg.batch_size, cfg.seed, step)
    mine = [samples[i] for i in indices[rank::world]]
    return micro_batches(mine, packing=cfg.pack, micro_batch_size=cfg.micro_batch_size,
                         micro_batch_tokens=cfg.row_tokens, pad_id=pad_id)


def _empty_batch(pad_id: int) -> Batch:
    """A one-token pass with nothing in the loss: keeps processes in lockstep."""
    one = torch.full((1, 1), pad_id, dtype=torch.long)
    return Batch(one, torch.zeros_like(one), torch.zeros_like(one), torch.zeros_like(one, dtype=torch.bool),
                 None, 0, 0)


# ----------------------------------------------------------------------------- one step
@dataclasses.dataclass
class ForwardOptions:
    """How the model is called: logits only where the loss needs them, packing by mask or position ids."""

    keep_logits: bool  # the model takes ``logits_to_keep`` (skips the vocab projection elsewhere)
    mask4d: bool  # pass an explicit block-diagonal mask for packed rows
    mask_dtype: torch.dtype = torch.float32


def forward_options(model: Any, pack_attention: str) -> ForwardOptions:
    impl = getattr(model.config, "_attn_implementation", "sdpa")
    dtype = torch.bool if impl == "sdpa" else next(model.parameters()).dtype  # eager adds the mask to scores
    return ForwardOptions(takes_logits_to_keep(model), pack_attention == "mask4d", dtype)


def micro_batch_loss(model: Any, batch: Batch, scale_tokens: Tensor, opts: ForwardOptions) -> tuple[Tensor, Tensor]:
    """-> (scaled loss of one micro-batch, its number of loss tokens)."""
    kwargs: dict[str, Any] = {"input_ids": batch.input_ids, "position_ids": batch.position_ids, "use_cache": False}
    if batch.attention_mask is not None:
        kwargs["attention_mask"] = batch.attention_mask
    elif opts.mask4d:
        kwargs["attention_mask"] = block_causal_mask(batch.position_ids, opts.mask_dtype)
    labels, mask = batch.labels, batch.loss_mask
    if opts.keep_logits:
        # Project to the vocabulary only where some row has a loss token: tool responses
        # are most of a trajectory, and the (T, V) logits are most of the memory.
        keep = loss_positions(mask)  # (K,)
        kwargs["logits_to_keep"] = keep
        labels, mask = labels[:, keep], mask[:, keep]
    logits = model(**kwargs).logits  # (B, K or T, V)
    return sft_loss(logits, labels, mask, scale_tokens)


@contextmanager
def _accumulating(accelerator: Any, model: Any, last: bool) -> Iterator[None]:
    """Gradients of a micro-batch stay local until the step's last one.

    DDP/FSDP skip their all-reduce under ``no_sync``; DeepSpeed reads its accumulation
    boundary from accelerate's sync flag (and steps its engine at the boundary).
    """
    if accelerator.distributed_type.name == "DEEPSPEED":
        accelerator.gradient_state._set_sync_gradients(last)
        try:
            yield
        finally:
            accelerator.gradient_state._set_sync_gradients(True)
    elif last or accelerator.num_processes == 1:
        yield
    else:
        with accelerator.no_sync(model):
            yield


def train_step(model: Any, optimizer: Any, scheduler: Any, accelerator: Any, batches: Sequence[Batch], *,
               grad_clip: float, opts: ForwardOptions, pad_id: int) -> dict[str, float]:
    """One optimizer step over this process's micro-batches; -> global metrics of the step."""
    device = accelerator.device
    world = accelerator.num_processes
    counts = torch.tensor([sum(int(b.loss_mask.sum()) for b in batches), sum(b.n_tokens for b in batches),
                           len(batches)], dtype=torch.float64, device=device)
    totals = accelerator.reduce(counts.clone(), reduction="sum") if world > 1 else counts
    n_passes = int(accelerator.gather(counts[2:3]).max()) if world > 1 else len(batches)
    batches = list(batches) + [_empty_batch(pad_id)] * (n_passes - len(batches))
    # DDP/FSDP/DeepSpeed average gradients over processes: divide by N / world, not N.
    scale = (totals[0].clamp(min=1.0) / world).float()
    nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    model.train()
    for k, batch in enumerate(batches):
        last = k == len(batches) - 1
        with _accumulating(accelerator, model, last):
            loss, _ = micro_batch_loss(model, batch.to(device), scale, opts)
            accelerator.backward(loss)
        nll_sum += loss.detach().double() * scale
    lr = scheduler.get_last_lr()[0]
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip)  # DeepSpeed: clipped in its step
    grad_norm = float("nan") if grad_norm is None else float(grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if world > 1:
        nll_sum = accelerator.reduce(nll_sum, reduction="sum")
    loss_tokens, tokens = float(totals[0]), float(totals[1])
    return {"sft/loss": float(nll_sum) / max(loss_tokens, 1.0), "sft/lr": float(lr),
            "sft/grad_norm": grad_norm, "sft/tokens": tokens, "sft/loss_tokens": loss_tokens}


# ----------------------------------------------------------------------------- setup
def load_model(cfg: SFTConfig) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.model)
        dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
    except OSError as e:
        raise ValueError(f"model={cfg.model!r} could not be loaded ({e}); pass a model directory or a hub name "
                         "the machine can reach.") from None
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    return model, tokenizer


def make_scheduler(optimizer: Any, cfg: SFTConfig, total_steps: int) -> Any:
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    if cfg.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, total_steps)
    return get_constant_schedule_with_warmup(optimizer, cfg.warmup_steps)


def _resume(cfg: SFTConfig, run_dir: Path, model: Any, optimizer: Any, scheduler: Any, n_samples: int,
            accelerator: Any) -> int:
    """Load the latest checkpoint of ``run_dir``; -> the step to continue from."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        log.warning("resume=true but %s holds no checkpoint; starting from step 0", run_dir)
        return 0
    if is_sharded(accelerator):
        log.warning("FSDP/DeepSpeed: optimizer state is not in the checkpoint; Adam moments restart")
    state = load_checkpoint(ckpt, model=accelerator.unwrap_model(model), optimizer=optimizer, scheduler=scheduler,
                            rank=accelerator.process_index)
    if (state.get("n_samples"), state.get("batch_size")) != (n_samples, cfg.batch_size):
        raise ValueError(f"{ckpt} was written for {state.get('n_samples')} conversations in batches of "
                         f"{state.get('batch_size')}; resume with the same data and batch_size.")
    log.info("resumed from %s at step %d", ckpt, state["step"])
    return int(state["step"])


# ----------------------------------------------------------------------------- the loop
def train_sft(cfg: SFTConfig) -> Path:
    """Fine-tune ``cfg.model`` on ``cfg.data``; -> the run directory (``final/`` holds the model)."""
    from accelerate import Accelerator

    seed_everything(cfg.seed, cfg.threads)
    run_dir = Path(cfg.out)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    rank, world = accelerator.process_index, accelerator.num_processes

    model, tokenizer = load_model(cfg)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    samples, stats = load_sft_samples(tokenizer, cfg.data, max_length=cfg.max_length, truncate=cfg.truncate,
                                      tool_role=cfg.tool_role)
    if not samples:
        raise ValueError(f"no conversation of {cfg.data} fits max_length={cfg.max_length} with an assistant "
                         "token; raise max_length or set truncate=true.")
    per_epoch = steps_per_epoch(len(samples), cfg.batch_size)
    total_steps = cfg.max_steps or cfg.epochs * per_epoch

    opts = forward_options(model, cfg.pack_attention)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg, total_steps)  # not prepared: accelerate would step it per process
    model, optimizer = accelerator.prepare(model, optimizer)
    start = _resume(cfg, run_dir, model, optimizer, scheduler, len(samples), accelerator) if cfg.resume else 0
    data_state = {"n_samples": len(samples), "batch_size": cfg.batch_size, "seed": cfg.seed}

    logger = None
    if accelerator.is_main_process:
        logger = RunLogger(run_dir, config=dataclasses.asdict(cfg), project=cfg.wandb_project,
                           wandb_mode=cfg.wandb_mode, resume_step=start if cfg.resume else None)
        log.info("SFT on %d conversations (%d tokens, %d in the loss; dropped %d too long), %d steps",
                 stats.kept, stats.tokens, stats.loss_tokens, stats.dropped_long, total_steps)
    bar = tqdm(total=total_steps, initial=start, desc="sft", unit="step",
               disable=not (cfg.progress and accelerator.is_main_process))
    for step in range(start, total_steps):
        t0 = time.perf_counter()
        batches = step_batches(samples, cfg, step, rank, world, pad_id)
        metrics = train_step(model, optimizer, scheduler, accelerator, batches, grad_clip=cfg.grad_clip,
                             opts=opts, pad_id=pad_id)
        seconds = time.perf_counter() - t0
        metrics.update({"sft/tokens_per_s": metrics["sft/tokens"] / max(seconds, 1e-9),
                        "sft/epoch": (step + 1) / per_epoch, "perf/step_s": seconds})
        if torch.cuda.is_available():
            metrics["perf/peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['sft/loss']:.4f}", lr=f"{metrics['sft/lr']:.2e}")
        if logger is not None and ((step + 1) % cfg.log_every == 0 or step + 1 == total_steps):
            logger.log(step + 1, metrics)
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < total_steps:
            save_step(run_dir, step + 1, model=model, tokenizer=tokenizer, optimizer=optimizer,
                      scheduler=scheduler, accelerator=accelerator, state=data_state, keep=cfg.keep_checkpoints)
    bar.close()
    save_step(run_dir, total_steps, model=model, tokenizer=tokenizer, optimizer=optimizer, scheduler=scheduler,
              accelerator=accelerator, state=data_state, keep=cfg.keep_checkpoints)
    save_final(run_dir / "final", model=model, tokenizer=tokenizer, accelerator=accelerator)
    if logger is not None:
        logger.close(["sft/loss", "sft/lr", "sft/grad_norm", "sft/tokens_per_s"])
    return run_dir


def sft_command(cfg: SFTConfig) -> Path:
    """``webdancer sft``: the run directory is Hydra's unless ``out=`` says otherwise."""
    out = train_sft(cfg)
    print(f"SFT run -> {out} (model in {out / 'final'})")
    return out
