"""GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization"): the importance
ratio and its clip act on whole sequences, matching a sequence-level reward.

    s_i   = exp( 1/|y_i| Σ_t (log π(y_it) - log π_old(y_it)) )                  (eq. 7)
    J     = 1/G Σ_i min(s_i A_i, clip(s_i, 1-ε_low, 1+ε_high) A_i)              (eq. 5)
    s_it  = sg[s_i] · π(y_it) / sg[π(y_it)]                      (GSPO-token, eq. 13)

The token form has the value ``s_i`` at every token and gradient ``s_i ∇log π(y_it)``,
so with the sequence mean of token means it equals the sequence objective's gradient
while allowing per-token advantages. Ranges are tiny (3e-4, 4e-4) because ``s_i`` is a
geometric mean: it moves far less than any one token's ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from webdancer.algos.base import ALGORITHMS, Algorithm, dynamic_sampling_filter
from webdancer.algos.grpo import config_group_advantages
from webdancer.algos.losses import (
    Scale,
    aggregate,
    check_agg,
    clipped_surrogate,
    expand_advantages,
    kl_penalty,
    masked_log_ratio,
    masked_mean,
)

# Cap on the sequence log-ratio before exp(): e^10 is already far outside any clip range.
MAX_SEQ_LOG_RATIO = 10.0


@dataclass
class GSPOConfig:
    """GSPO knobs, the paper's defaults."""

    clip_low: float = 3e-4
    clip_high: float = 4e-4
    agg: str = "seq-mean-token-mean"
    norm_length: int | None = None  # only for agg="seq-mean-token-sum-norm"
    kl_coef: float = 0.0
    normalize_std: bool = True
    adv_eps: float = 1e-6
    dynamic_sampling: bool = False
    max_gen_rounds: int = 1

    def __post_init__(self) -> None:
        check_agg(self.agg)
        if self.clip_low <= 0 or self.clip_high <= 0:
            raise ValueError(
                f"clip_low and clip_high must be > 0 (got {self.clip_low}, {self.clip_high}); "
                "GSPO uses 3e-4 and 4e-4."
            )


def sequence_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """``log s_i``: the mean over each sequence's masked tokens of ``logp - old_logp``. (B,)"""
    log_ratio = masked_log_ratio(logp, old_logp, mask)  # (B, T)
    n_tokens = mask.bool().sum(-1).to(log_ratio.dtype).clamp(min=1.0)  # (B,)
    return log_ratio.sum(-1) / n_tokens


def token_sequence_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """GSPO-token ratio ``s_it = sg[s_i] · exp(logp_t - sg[logp_t])``. (B, T)

    Every token holds the value ``s_i``; ``d s_it / d logp_t = s_i``. Masked positions
    hold ``s_i`` with no gradient.
    """
    seq = sequence_log_ratio(logp, old_logp, mask).detach().clamp(max=MAX_SEQ_LOG_RATIO)
    own = torch.where(mask.bool(), logp - logp.detach(), torch.zeros_like(logp))  # 0-valued
    return torch.exp(seq[:, None] + own)


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    agg: str = "seq-mean-token-mean",
    kl_coef: float = 0.0,
    ref_logp: Tensor | None = None,
    norm_length: int | None = None,
    scale_tokens: Scale | None = None,
    scale_seqs: Scale | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO-token loss (eq. 13 negated), sequence mean of token means by default.

    ``logp``, ``old_logp``, ``ref_logp``, ``mask``: (B, T); ``advantages``: (B,) or (B, T).
    Metrics (0-d, detached): pg_loss, kl, approx_kl (token mean of old - new), ratio
    mean/max of ``s_i`` and clip fractions, both over sequences with a loss token.
    """
    ratio = token_sequence_ratio(logp, old_logp, mask)  # (B, T)
    adv = expand_advantages(advantages, logp).to(logp.dtype)  # (B, T)
    per_token, events = clipped_surrogate(ratio, adv, clip_low=clip_low, clip_high=clip_high)
    scales = {"norm_length": norm_length, "scale_tokens": scale_tokens, "scale_seqs": scale_seqs}
    pg_loss = aggregate(per_token, mask, agg, **scales)
    kl_term, kl_mean = kl_penalty(logp, ref_logp, mask, kl_coef=kl_coef, agg=agg, **scales)

    maskb = mask.bool()
    has_tokens = maskb.any(-1)  # (B,)

    def seq_frac(token_event: Tensor) -> Tensor:  # sequences where any loss token saw it
        return masked_mean((token_event & maskb).any(-1).float(), has_tokens).detach()

    seq_ratio = ratio[:, 0].detach()  # (B,) every token holds s_i
    metrics = {
        "pg_loss": pg_loss.detach(),
        "kl": kl_mean,
        "clip_frac": seq_frac(events.clipped),
        "clip_frac_low": seq_frac(events.low),
        "clip_frac_high": seq_frac(events.high),
        "approx_kl": masked_mean(-masked_log_ratio(logp, old_logp, mask), maskb).detach(),
        "ratio_mean": masked_mean(seq_ratio, has_tokens).detach(),
        "ratio_max": torch.where(has_tokens, seq_ratio, torch.zeros_like(seq_ratio)).max(),
    }
    return pg_loss + kl_term, metrics


def _policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cfg: GSPOConfig,
    *,
    ref_logp: Tensor | None = None,
    scale_tokens: Scale | None = None,
    scale_seqs: Scale | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    return policy_loss(
        logp, old_logp, advantages, mask,
        clip_low=cfg.clip_low, clip_high=cfg.clip_high, agg=cfg.agg, kl_coef=cfg.kl_coef,
        ref_logp=ref_logp, norm_length=cfg.norm_length,
        scale_tokens=scale_tokens, scale_seqs=scale_seqs,
    )  # fmt: skip


ALGORITHMS.register(
    "gspo",
    Algorithm(
        name="gspo",
        config_type=GSPOConfig,
        advantages=config_group_advantages,
        policy_loss=_policy_loss,
        sample_filter=dynamic_sampling_filter,
    ),
)
