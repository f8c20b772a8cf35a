"""Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training"): GRPO without
its two biases.

    A_i = R_i - mean(R_group)                          (no division by the std, §3.1)
    J   = 1/(G·L) Σ_i Σ_t min(r_it A_i, clip(r_it, 1-ε, 1+ε) A_i)   (no 1/|o_i|; L constant)

Dividing by each response's own length favours long wrong answers and short right
ones; dividing by the std up-weights nearly-solved and nearly-hopeless questions.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from webdancer.algos import grpo
from webdancer.algos.base import ALGORITHMS, Algorithm, dynamic_sampling_filter
from webdancer.algos.losses import Scale, check_agg


@dataclass
class DrGRPOConfig:
    """Dr. GRPO knobs. Set ``norm_length`` to the max response length (tokens) so the
    divisor stays constant across micro-batches padded to different lengths;
    None uses each batch's padded length."""

    clip_eps: float = 0.2
    agg: str = "seq-mean-token-sum-norm"
    norm_length: int | None = None
    kl_coef: float = 0.0
    dynamic_sampling: bool = False
    max_gen_rounds: int = 1

    def __post_init__(self) -> None:
        check_agg(self.agg)
        if self.norm_length is not None and self.norm_length < 1:
            raise ValueError(
                f"norm_length must be a positive token count (got {self.norm_length})."
            )


def advantages(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """``R - mean_group``: GRPO's advantage without the std normalization. (N,)"""
    return grpo.group_advantages(rewards, group_ids, normalize_std=False)


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float = 0.2,
    norm_length: int | None = None,
    agg: str = "seq-mean-token-sum-norm",
    kl_coef: float = 0.0,
    ref_logp: Tensor | None = None,
    scale_tokens: Scale | None = None,
    scale_seqs: Scale | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The GRPO clipped loss with the token sum divided by ``N_seqs · norm_length``.

    Shapes and metrics as ``grpo.policy_loss``.
    """
    return grpo.policy_loss(
        logp, old_logp, advantages, mask,
        clip_eps=clip_eps, agg=agg, kl_coef=kl_coef, ref_logp=ref_logp,
        norm_length=norm_length, scale_tokens=scale_tokens, scale_seqs=scale_seqs,
    )  # fmt: skip


def _advantages(rewards: Tensor, group_ids: Tensor, cfg: DrGRPOConfig) -> Tensor:
    return advantages(rewards, group_ids)


def _policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    cfg: DrGRPOConfig,
    *,
    ref_logp: Tensor | None = None,
    scale_tokens: Scale | None = None,
    scale_seqs: Scale | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    return policy_loss(
        logp, old_logp, adv, mask,
        clip_eps=cfg.clip_eps, norm_length=cfg.norm_length, agg=cfg.agg, kl_coef=cfg.kl_coef,
        ref_logp=ref_logp, scale_tokens=scale_tokens, scale_seqs=scale_seqs,
    )  # fmt: skip


ALGORITHMS.register(
    "dr_grpo",
    Algorithm(
        name="dr_grpo",
        config_type=DrGRPOConfig,
        advantages=_advantages,
        policy_loss=_policy_loss,
        sample_filter=dynamic_sampling_filter,
    ),
)
