"""Pieces every policy loss shares: masked log-ratios, the clipped PPO surrogate,
the k3 KL penalty, and loss aggregation over tokens and sequences.

All functions are pure: tensors and scalars in, tensors out, no ``.item()``.
Shapes: ``B`` sequences, ``T`` tokens per sequence; ``mask`` is ``(B, T)``, true
(or 1) on the tokens the model generated and the loss should see.

Aggregation and the global mean
-------------------------------
``aggregate`` divides by a count. Left alone it uses the counts of the tensors it
sees, which is right for one batch on one process. Under gradient accumulation and
data parallel that gives a mean of means, which weighs short micro-batches more
than long ones (verl #5625, #7321, #2776). To keep the exact global mean, the loop:

1. counts, before the first micro-batch of an optimizer step, the loss tokens and the
   non-empty sequences of *all* its micro-batches: ``step_loss_scales(masks)``
   (it all-reduces the counts across processes and divides by the world size,
   because DDP/FSDP/DeepSpeed *average* gradients over processes);
2. passes them to every micro-batch loss as ``scale_tokens`` / ``scale_seqs``;
3. calls ``backward`` on each micro-batch loss as is: no division by the number of
   micro-batches (keep ``Accelerator(gradient_accumulation_steps=1)``, or it will
   divide) and no ``* world_size``.

Then the summed gradient on each process, averaged over processes, is the gradient
of the global token mean (or sequence mean) of the whole step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

AGG_MODES: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
)

# exp() of a log-ratio beyond this overflows float16/bfloat16 and means the policy has
# moved so far that the clip zeroes the gradient anyway.
MAX_LOG_RATIO = 20.0

Scale = float | Tensor


def check_agg(agg: str) -> None:
    """Raise a one-sentence error for an unknown aggregation mode."""
    if agg not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation {agg!r}; use one of {', '.join(AGG_MODES)}.")


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the true entries of ``mask`` (0 when there are none)."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def masked_max(values: Tensor, mask: Tensor) -> Tensor:
    """Max of ``values`` over the mask; ``values`` must be >= 0 (e.g. ratios); 0 if empty."""
    return torch.where(mask.bool(), values, torch.zeros_like(values)).max()


def aggregate(
    per_token_loss: Tensor,
    mask: Tensor,
    agg: str,
    *,
    norm_length: int | None = None,
    scale_tokens: Scale | None = None,
    scale_seqs: Scale | None = None,
) -> Tensor:
    """Reduce a ``(B, T)`` per-token loss to a scalar over the ``(B, T)`` mask.

    - ``token-mean`` (DAPO eq. 12): ``sum(loss·mask) / N_tokens``.
    - ``seq-mean-token-mean`` (GRPO eq. 3): mean over sequences of each sequence's
      token mean.
    - ``seq-mean-token-sum``: mean over sequences of each sequence's token sum.
    - ``seq-mean-token-sum-norm`` (Dr. GRPO): ``sum(loss·mask) / (N_seqs · norm_length)``,
      ``norm_length`` a constant (default the mask's ``T``; set it to the max response
      length so micro-batches padded to different ``T`` agree).

    ``N_seqs`` counts sequences with at least one loss token, so rows a filter masked
    out entirely do not dilute the mean. ``scale_tokens`` replaces ``N_tokens`` and
    ``scale_seqs`` replaces ``N_seqs`` (see the module docstring for the contract);
    each mode ignores the scale it does not use. Masked positions never reach the
    result nor its gradient, whatever they hold (NaN included).
    """
    check_agg(agg)
    maskb = mask.bool()
    loss = torch.where(maskb, per_token_loss, torch.zeros_like(per_token_loss))  # (B, T)
    if agg == "token-mean":
        n_tokens = maskb.sum().to(loss.dtype).clamp(min=1.0)
        return loss.sum() / (n_tokens if scale_tokens is None else scale_tokens)

    tokens_per_seq = maskb.sum(-1).to(loss.dtype)  # (B,)
    n_seqs = (tokens_per_seq > 0).sum().to(loss.dtype).clamp(min=1.0)
    n_seqs = n_seqs if scale_seqs is None else scale_seqs
    if agg == "seq-mean-token-mean":
        return (loss.sum(-1) / tokens_per_seq.clamp(min=1.0)).sum() / n_seqs
    if agg == "seq-mean-token-sum":
        return loss.sum() / n_seqs
    length = mask.shape[-1] if norm_length is None else norm_length
    return loss.sum() / (n_seqs * length)


def step_loss_scales(masks: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """``(scale_tokens, scale_seqs)`` for one optimizer step, as 0-d float tensors.

    ``masks`` are the ``(B_k, T_k)`` loss masks of all micro-batches this process will
    run in the step. The counts are summed over micro-batches, all-reduced over
    processes when ``torch.distributed`` is initialized, and divided by the world size
    because the data-parallel wrapper averages gradients (module docstring).
    """
    if not masks:
        raise ValueError("step_loss_scales needs the masks of at least one micro-batch.")
    tokens = sum(m.bool().sum() for m in masks).to(torch.float64)
    seqs = sum((m.bool().sum(-1) > 0).sum() for m in masks).to(torch.float64)
    counts = torch.stack([tokens, seqs])
    world = 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        torch.distributed.all_reduce(counts, op=torch.distributed.ReduceOp.SUM)
    counts = counts.clamp(min=1.0) / world
    return counts[0].float(), counts[1].float()


def expand_advantages(advantages: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` sequence advantages -> ``(B, T)``: every token gets its sequence's value."""
    if advantages.dim() == 1:
        return advantages[:, None].expand_as(like)
    if advantages.shape != like.shape:
        raise ValueError(
            f"advantages of shape {tuple(advantages.shape)} match neither (B,) nor the "
            f"(B, T) log-probs {tuple(like.shape)}; pass one per sequence or per token."
        )
    return advantages


def masked_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """``logp - old_logp`` on the mask, 0 elsewhere, clamped to +-``MAX_LOG_RATIO``. (B, T)

    Zeroing before ``exp`` keeps padding (which may hold -inf or NaN) out of the
    forward pass and out of the backward pass.
    """
    diff = torch.where(mask.bool(), logp - old_logp.detach(), torch.zeros_like(logp))
    return diff.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)


class ClipEvents(NamedTuple):
    """Where each branch of the clipped surrogate was taken, ``(B, T)`` bool each."""

    clipped: Tensor  # the clipped term was the active (larger-loss) one
    low: Tensor  # ratio < 1 - clip_low with A < 0
    high: Tensor  # ratio > 1 + clip_high with A > 0
    dual: Tensor  # the dual-clip cap -c·A was active (A < 0)


def clipped_surrogate(
    ratio: Tensor,
    advantages: Tensor,
    *,
    clip_low: float,
    clip_high: float,
    clip_c: float | None = None,
) -> tuple[Tensor, ClipEvents]:
    """Per-token PPO-clip loss with decoupled ranges and optional dual clip. (B, T)

    DAPO eq. 10: ``-min(r·A, clip(r, 1-ε_low, 1+ε_high)·A)``. Dual clip (Ye et al.
    2020, as in verl): where ``A < 0`` the loss is further capped at ``-c·A``, so a
    token whose ratio exploded cannot dominate the batch. ``advantages`` is ``(B, T)``.
    """
    pg_unclipped = -advantages * ratio
    pg_clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(pg_unclipped, pg_clipped)
    negative = advantages < 0
    dual = torch.zeros_like(negative)
    if clip_c is not None:
        if clip_c <= 1.0:
            raise ValueError(f"dual-clip constant clip_c must be > 1 (got {clip_c}); try 3 or 10.")
        cap = -advantages * clip_c
        dual = negative & (loss > cap)
        loss = torch.where(negative, torch.minimum(loss, cap), loss)
    events = ClipEvents(
        clipped=pg_clipped > pg_unclipped,
        low=(ratio < 1.0 - clip_low) & negative,
        high=(ratio > 1.0 + clip_high) & (advantages > 0),
        dual=dual,
    )
    return loss, events


def clip_metrics(events: ClipEvents, mask: Tensor) -> dict[str, Tensor]:
    """Fractions of masked tokens where each clip branch was taken (detached)."""
    m = mask.bool()
    return {
        "clip_frac": masked_mean(events.clipped.float(), m).detach(),
        "clip_frac_low": masked_mean(events.low.float(), m).detach(),
        "clip_frac_high": masked_mean(events.high.float(), m).detach(),
        "dual_clip_frac": masked_mean(events.dual.float(), m).detach(),
    }


def ratio_metrics(log_ratio: Tensor, ratio: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """``approx_kl`` = mean of ``old_logp - logp`` (k1), ratio mean and max (detached)."""
    return {
        "approx_kl": masked_mean(-log_ratio, mask).detach(),
        "ratio_mean": masked_mean(ratio, mask).detach(),
        "ratio_max": masked_max(ratio, mask).detach(),
    }


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(π || π_ref) (Schulman 2020; GRPO eq. 4). (B, T)

    ``exp(ref - logp) - (ref - logp) - 1``: unbiased, always >= 0.
    """
    diff = (ref_logp.detach() - logp).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    return torch.exp(diff) - diff - 1.0


def kl_penalty(
    logp: Tensor,
    ref_logp: Tensor | None,
    mask: Tensor,
    *,
    kl_coef: float,
    agg: str,
    norm_length: int | None = None,
    scale_tokens: Scale | None = None,
    scale_seqs: Scale | None = None,
) -> tuple[Tensor, Tensor]:
    """``(kl_coef · aggregate(k3), masked mean of k3)``; zeros when there is no reference.

    Raises when ``kl_coef > 0`` and no reference log-probs were given.
    """
    zero = logp.new_zeros(())
    if ref_logp is None:
        if kl_coef > 0:
            raise ValueError(
                f"kl_coef={kl_coef} needs ref_logp from a reference model; "
                "pass it or set kl_coef=0."
            )
        return zero, zero
    maskb = mask.bool()
    # Padding may hold anything; keep it out of exp() and of the backward pass.
    safe_logp = torch.where(maskb, logp, torch.zeros_like(logp))
    safe_ref = torch.where(maskb, ref_logp, torch.zeros_like(ref_logp))
    kl = k3_kl(safe_logp, safe_ref)  # (B, T)
    term = aggregate(
        kl, mask, agg, norm_length=norm_length, scale_tokens=scale_tokens, scale_seqs=scale_seqs
    )
    return kl_coef * term, masked_mean(kl, maskb).detach()
