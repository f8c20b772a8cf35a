"""REINFORCE++ with a group baseline (Hu et al. 2025, "REINFORCE++"): subtract the
group mean, then whiten across the whole batch instead of within each group.

    A'_i = R_i - mean(R_group)
    A_i  = (A'_i - mean_batch(A')) / (std_batch(A') + ε)                      (§3.2)
    loss = token mean of -min(r_it A_i, clip(r_it, 1-ε, 1+ε) A_i)

Batch statistics are steadier than those of a group's few samples, and a group whose
rewards barely differ is not blown up to unit scale as a per-group std would do.
Pass the rewards of the whole step (all processes) so the batch statistics are global.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from webdancer.algos.base import ALGORITHMS, Algorithm, dynamic_sampling_filter, float_like
from webdancer.algos.grpo import group_advantages
from webdancer.algos.grpo import policy_loss as clipped_policy_loss
from webdancer.algos.losses import Scale, check_agg


@dataclass
class ReinforcePPConfig:
    """REINFORCE++ knobs."""

    clip_eps: float = 0.2
    agg: str = "token-mean"
    norm_length: int | None = None  # only for agg="seq-mean-token-sum-norm"
    kl_coef: float = 0.0
    adv_eps: float = 1e-6
    dynamic_sampling: bool = False
    max_gen_rounds: int = 1

    def __post_init__(self) -> None:
        check_agg(self.agg)


def batch_normalized_advantages(
    rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6
) -> Tensor:
    """Group-mean baseline, then whitened over the batch (unbiased std). (N,)"""
    centered = group_advantages(rewards, group_ids, normalize_std=False).to(torch.float64)
    std = centered.std(unbiased=True) if centered.numel() > 1 else centered.new_zeros(())
    return ((centered - centered.mean()) / (std + eps)).to(float_like(rewards))


def _advantages(rewards: Tensor, group_ids: Tensor, cfg: ReinforcePPConfig) -> Tensor:
    return batch_normalized_advantages(rewards, group_ids, eps=cfg.adv_eps)


def _policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cfg: ReinforcePPConfig,
    *,
    ref_logp: Tensor | None = None,
    scale_tokens: Scale | None = None,
    scale_seqs: Scale | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    return clipped_policy_loss(
        logp, old_logp, advantages, mask,
        clip_eps=cfg.clip_eps, agg=cfg.agg, kl_coef=cfg.kl_coef, ref_logp=ref_logp,
        norm_length=cfg.norm_length, scale_tokens=scale_tokens, scale_seqs=scale_seqs,
    )  # fmt: skip


ALGORITHMS.register(
    "reinforce_pp",
    Algorithm(
        name="reinforce_pp",
        config_type=ReinforcePPConfig,
        advantages=_advantages,
        policy_loss=_policy_loss,
        sample_filter=dynamic_sampling_filter,
    ),
)
