"""DAPO (Yu et al. 2025): decoupled clip ("clip-higher"), token-level loss, dynamic
sampling, and overlong reward shaping; plus WebDancer's curriculum filter.

    J = 1/Σ|o_i| Σ_i Σ_t min(r_it A_i, clip(r_it, 1-ε_low, 1+ε_high) A_i)       (eq. 8)
    s.t. 0 < |{o_i : is_equivalent(a, o_i)}| < G                   (dynamic sampling)
    R_length(y) = 0 | -(|y| - (L_max - L_cache)) / L_cache | -1          (eq. 13)

Defaults follow the verl DAPO recipe: ε_low 0.2, ε_high 0.28, dual clip c = 10,
token-mean loss, no KL, group-normalized advantages with unbiased std and ε = 1e-6,
at most 10 generation rounds to fill a batch, L_cache 4096.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from webdancer.algos.base import ALGORITHMS, Algorithm, float_like, group_max, group_mean_std
from webdancer.algos.grpo import config_group_advantages
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
from webdancer.rewards.overlong import soft_overlong_penalty as overlong_penalty


@dataclass
class DAPOConfig:
    """Every DAPO knob, recipe defaults. The loop passes the max response length."""

    clip_low: float = 0.2
    clip_high: float = 0.28
    clip_c: float | None = 10.0  # dual clip for A < 0; None turns it off
    agg: str = "token-mean"
    norm_length: int | None = None  # only for agg="seq-mean-token-sum-norm"
    dynamic_sampling: bool = True
    max_gen_rounds: int = 10
    overlong_filter: bool = False  # mask truncated samples out of the loss
    soft_overlong: bool = True
    overlong_cache: int = 4096  # L_cache, tokens
    overlong_factor: float = 1.0
    kl_coef: float = 0.0
    curriculum: bool = False  # WebDancer: skip hopeless prompts, prefer mid-difficulty
    curriculum_min_best: float = 0.2
    curriculum_band_low: float = 0.2
    curriculum_band_high: float = 0.8
    normalize_std: bool = True
    adv_eps: float = 1e-6

    def __post_init__(self) -> None:
        check_agg(self.agg)
        if self.clip_low <= 0 or self.clip_high <= 0:
            raise ValueError(
                f"clip_low and clip_high must be > 0 (got {self.clip_low}, {self.clip_high}); "
                "DAPO uses 0.2 and 0.28."
            )
        if self.max_gen_rounds < 1:
            raise ValueError(f"max_gen_rounds must be >= 1 (got {self.max_gen_rounds}).")


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    clip_c: float | None = None,
    agg: str = "token-mean",
    norm_length: int | None = None,
    loss_scale_tokens: Scale | None = None,
    loss_scale_seqs: Scale | None = None,
    kl_coef: float = 0.0,
    ref_logp: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """DAPO clip-higher loss (eq. 8 negated), token mean over the mask by default.

    ``logp``, ``old_logp``, ``mask``: (B, T); ``advantages``: (B,) or (B, T).
    Per token ``-min(r·A, clip(r, 1-clip_low, 1+clip_high)·A)`` with
    ``r = exp(logp - old_logp)``; ``clip_c`` caps the loss of A < 0 tokens at ``-c·A``.
    ``loss_scale_tokens`` / ``loss_scale_seqs`` keep the mean global under gradient
    accumulation and data parallel (contract in ``webdancer.algos.losses``).
    Metrics (0-d, detached): pg_loss, kl, clip_frac, clip_frac_low, clip_frac_high,
    dual_clip_frac, approx_kl, ratio_mean, ratio_max.
    """
    log_ratio = masked_log_ratio(logp, old_logp, mask)  # (B, T)
    ratio = torch.exp(log_ratio)
    adv = expand_advantages(advantages, logp).to(logp.dtype)  # (B, T)
    per_token, events = clipped_surrogate(
        ratio, adv, clip_low=clip_low, clip_high=clip_high, clip_c=clip_c
    )
    scales = {
        "norm_length": norm_length, "scale_tokens": loss_scale_tokens, "scale_seqs": loss_scale_seqs
    }
    pg_loss = aggregate(per_token, mask, agg, **scales)
    kl_term, kl_mean = kl_penalty(logp, ref_logp, mask, kl_coef=kl_coef, agg=agg, **scales)
    metrics = {"pg_loss": pg_loss.detach(), "kl": kl_mean}
    metrics.update(clip_metrics(events, mask))
    metrics.update(ratio_metrics(log_ratio, ratio, mask))
    return pg_loss + kl_term, metrics


def dynamic_sampling_mask(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-8) -> Tensor:
    """Keep the samples of groups whose rewards are not all equal. (N,) bool

    A group with zero population std has zero advantage everywhere and only dilutes
    the batch (DAPO eq. 11). Filter on the task reward (accuracy), before shaping.
    """
    _, std = group_mean_std(rewards, group_ids, unbiased=False)
    return std > eps


def soft_overlong_penalty(
    lengths: Tensor, *, max_len: int, cache_len: int, factor: float = 1.0
) -> Tensor:
    """DAPO eq. 13, times ``factor``: a length penalty ramping over the last tokens. (N,)

    0 up to ``max_len - cache_len`` tokens, then linear down to ``-factor`` at
    ``max_len``, and ``-factor`` beyond. ``lengths`` (N,) are response lengths in tokens.
    The reward term's formula (``webdancer.rewards.soft_overlong_penalty``) applied per
    sample, so the loop's shaping and the ``overlong`` reward cannot drift apart.
    """
    penalty = functools.partial(
        overlong_penalty, max_len=max_len, cache_len=cache_len, factor=factor
    )
    penalty(0)  # validates the lengths even for an empty batch
    values = [penalty(length) for length in lengths.flatten().tolist()]
    return torch.tensor(values, dtype=torch.float32, device=lengths.device).view(lengths.shape)


def overlong_filter_mask(truncated: Tensor) -> Tensor:
    """Samples that may contribute to the loss: those not cut off by the length limit. (N,)"""
    return ~truncated.bool()


def curriculum_mask(
    rewards: Tensor,
    group_ids: Tensor,
    *,
    min_best: float = 0.2,
    band: tuple[float, float] = (0.2, 0.8),
) -> tuple[Tensor, Tensor]:
    """WebDancer's curriculum: ``(keep, preferred)``, both (N,) bool, per group.

    Skip a group whose best reward is below ``min_best`` (nothing to learn from);
    prefer a kept group whose mean reward lies in ``band`` (inclusive): neither solved
    nor hopeless.
    """
    keep = group_max(rewards, group_ids) >= min_best
    mean, _ = group_mean_std(rewards, group_ids, unbiased=False)
    preferred = keep & (mean >= band[0]) & (mean <= band[1])
    return keep, preferred


def _policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cfg: DAPOConfig,
    *,
    ref_logp: Tensor | None = None,
    scale_tokens: Scale | None = None,
    scale_seqs: Scale | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    return policy_loss(
        logp, old_logp, advantages, mask,
        clip_low=cfg.clip_low, clip_high=cfg.clip_high, clip_c=cfg.clip_c, agg=cfg.agg,
        norm_length=cfg.norm_length, loss_scale_tokens=scale_tokens,
        loss_scale_seqs=scale_seqs, kl_coef=cfg.kl_coef, ref_logp=ref_logp,
    )  # fmt: skip


def _curriculum(rewards: Tensor, group_ids: Tensor, cfg: DAPOConfig) -> tuple[Tensor, Tensor]:
    band = (cfg.curriculum_band_low, cfg.curriculum_band_high)
    return curriculum_mask(rewards, group_ids, min_best=cfg.curriculum_min_best, band=band)


def _sample_filter(rewards: Tensor, group_ids: Tensor, cfg: DAPOConfig) -> Tensor:
    keep = torch.ones_like(rewards, dtype=torch.bool)
    if cfg.dynamic_sampling:
        keep &= dynamic_sampling_mask(rewards, group_ids)
    if cfg.curriculum:
        keep &= _curriculum(rewards, group_ids, cfg)[0]
    return keep


def _sample_priority(rewards: Tensor, group_ids: Tensor, cfg: DAPOConfig) -> Tensor:
    if not cfg.curriculum:
        return torch.ones_like(rewards, dtype=torch.bool)
    return _curriculum(rewards, group_ids, cfg)[1]


def _shape_rewards(
    rewards: Tensor, lengths: Tensor, truncated: Tensor, cfg: DAPOConfig, *, max_len: int
) -> Tensor:
    if not cfg.soft_overlong:
        return rewards
    penalty = soft_overlong_penalty(
        lengths, max_len=max_len, cache_len=cfg.overlong_cache, factor=cfg.overlong_factor
    )
    shaped = rewards.to(float_like(rewards))
    return shaped + penalty.to(shaped.device, shaped.dtype)


def _loss_sample_mask(truncated: Tensor, cfg: DAPOConfig) -> Tensor:
    if not cfg.overlong_filter:
        return torch.ones_like(truncated, dtype=torch.bool)
    return overlong_filter_mask(truncated)


ALGORITHMS.register(
    "dapo",
    Algorithm(
        name="dapo",
        config_type=DAPOConfig,
        advantages=config_group_advantages,
        policy_loss=_policy_loss,
        sample_filter=_sample_filter,
        sample_priority=_sample_priority,
        shape_rewards=_shape_rewards,
        loss_sample_mask=_loss_sample_mask,
    ),
)
