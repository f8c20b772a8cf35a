"""GRPO (Shao et al. 2024, DeepSeekMath): group-normalized outcome advantages,
symmetric PPO clip, sequence mean of token means, optional k3 KL to a reference.

    A_i = (R_i - mean(R_group)) / (std(R_group) + ε)                          (GRPO §4.1.2)
    J   = 1/G Σ_i 1/|o_i| Σ_t [ min(r_it A_i, clip(r_it, 1-ε, 1+ε) A_i) - β KL_it ]  (eq. 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from webdancer.algos.base import (
    ALGORITHMS,
    Algorithm,
    dynamic_sampling_filter,
    float_like,
    group_mean_std,
)
from webdancer.algos.losses import (
    Scale,
    aggregate,
    check_agg,
    clip_metrics,
    clipped_surrogate,
    expand_advantages,
    kl_penalty,
    masked_log_ratio,
    ratio_metrics,
)


@dataclass
class GRPOConfig:
    """GRPO knobs. ``kl_coef`` is 0 as in TRL and verl (DeepSeekMath used 0.04)."""

    clip_eps: float = 0.2
    agg: str = "seq-mean-token-mean"
    norm_length: int | None = None  # only for agg="seq-mean-token-sum-norm"
    kl_coef: float = 0.0
    normalize_std: bool = True
    adv_eps: float = 1e-6
    dynamic_sampling: bool = False
    max_gen_rounds: int = 1

    def __post_init__(self) -> None:
        check_agg(self.agg)
        if self.clip_eps <= 0:
            raise ValueError(f"clip_eps must be > 0 (got {self.clip_eps}); GRPO uses 0.2.")


def group_advantages(
    rewards: Tensor,
    group_ids: Tensor,
    *,
    normalize_std: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """Outcome advantage of each sample against its group. (N,)

    ``(R - mean_g) / (std_g + eps)`` with the unbiased std (``n - 1``; a group of one
    gets 0), or ``R - mean_g`` when ``normalize_std`` is false (Dr. GRPO §3.1).
    ``rewards`` (N,) float; ``group_ids`` (N,) ints of any value and order.
    """
    mean, std = group_mean_std(rewards, group_ids, unbiased=True)  # (N,), (N,)
    centered = rewards.to(torch.float64) - mean
    adv = centered / (std + eps) if normalize_std else centered
    return adv.to(float_like(rewards))


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float = 0.2,
    agg: str = "seq-mean-token-mean",
    kl_coef: float = 0.0,
    ref_logp: Tensor | None = None,
    norm_length: int | None = None,
    scale_tokens: Scale | None = None,
    scale_seqs: Scale | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO loss (eq. 3, negated): symmetric clip plus ``kl_coef`` times the k3 KL.

    ``logp``, ``old_logp``, ``ref_logp``, ``mask``: (B, T); ``advantages``: (B,) or (B, T).
    Both terms use the same aggregation ``agg`` (see ``losses.aggregate``).
    Metrics (0-d, detached): pg_loss, kl, clip fractions, approx_kl, ratio mean/max.
    """
    log_ratio = masked_log_ratio(logp, old_logp, mask)  # (B, T)
    ratio = torch.exp(log_ratio)
    adv = expand_advantages(advantages, logp).to(logp.dtype)  # (B, T)
    per_token, events = clipped_surrogate(ratio, adv, clip_low=clip_eps, clip_high=clip_eps)
    scales = {"norm_length": norm_length, "scale_tokens": scale_tokens, "scale_seqs": scale_seqs}
    pg_loss = aggregate(per_token, mask, agg, **scales)
    kl_term, kl_mean = kl_penalty(logp, ref_logp, mask, kl_coef=kl_coef, agg=agg, **scales)
    metrics = {"pg_loss": pg_loss.detach(), "kl": kl_mean}
    metrics.update(clip_metrics(events, mask))
    metrics.update(ratio_metrics(log_ratio, ratio, mask))
    return pg_loss + kl_term, metrics


def config_group_advantages(rewards: Tensor, group_ids: Tensor, cfg: Any) -> Tensor:
    """``group_advantages`` as a config sets it (``normalize_std``, ``adv_eps``): the
    ``advantages`` hook of GRPO, Dr. GRPO, DAPO and GSPO."""
    return group_advantages(rewards, group_ids, normalize_std=cfg.normalize_std, eps=cfg.adv_eps)


def _policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cfg: GRPOConfig,
    *,
    ref_logp: Tensor | None = None,
    scale_tokens: Scale | None = None,
    scale_seqs: Scale | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    return policy_loss(
        logp, old_logp, advantages, mask,
        clip_eps=cfg.clip_eps, agg=cfg.agg, kl_coef=cfg.kl_coef, ref_logp=ref_logp,
        norm_length=cfg.norm_length, scale_tokens=scale_tokens, scale_seqs=scale_seqs,
    )  # fmt: skip


ALGORITHMS.register(
    "grpo",
    Algorithm(
        name="grpo",
        config_type=GRPOConfig,
        advantages=config_group_advantages,
        policy_loss=_policy_loss,
        sample_filter=dynamic_sampling_filter,
    ),
)
