"""The algorithm registry and the pieces several algorithms share.

An ``Algorithm`` bundles what the RL loop needs to run a method by name: its config
dataclass and adapters that unpack that config into the pure tensor functions of the
algorithm's own file. The loop does::

    algo = ALGORITHMS.get(name)
    cfg = algo.make_config(overrides)                        # e.g. {"clip_high": 0.3}
    keep = algo.sample_filter(task_rewards, group_ids, cfg)  # whole groups; before shaping
    first = algo.sample_priority(task_rewards, group_ids, cfg)  # kept first on surplus
    rewards = algo.shape_rewards(task_rewards, lengths, truncated, cfg, max_len=L)
    adv = algo.advantages(rewards[keep], group_ids[keep], cfg)
    loss_ok = algo.loss_sample_mask(truncated[keep], cfg)    # rows whose loss mask stays
    loss, metrics = algo.policy_loss(logp, old_logp, adv, mask, cfg,
                                     ref_logp=..., scale_tokens=..., scale_seqs=...)

Every config has ``kl_coef`` (> 0 means the loop must supply ``ref_logp``),
``dynamic_sampling`` and ``max_gen_rounds`` (how many generation rounds the loop may
run to refill a batch whose groups were filtered out; it raises past that).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from webdancer.registry import Registry


class AlgoConfig(Protocol):
    """Fields the RL loop reads from every algorithm's config."""

    kl_coef: float
    dynamic_sampling: bool
    max_gen_rounds: int


AdvantageFn = Callable[[Tensor, Tensor, Any], Tensor]
PolicyLossFn = Callable[..., tuple[Tensor, dict[str, Tensor]]]
GroupMaskFn = Callable[[Tensor, Tensor, Any], Tensor]
ShapeRewardsFn = Callable[..., Tensor]
LossSampleMaskFn = Callable[[Tensor, Any], Tensor]


def keep_all(rewards: Tensor, group_ids: Tensor, cfg: Any) -> Tensor:
    """A sample filter that keeps every sample. (N,) bool"""
    return torch.ones_like(rewards, dtype=torch.bool)


def dynamic_sampling_filter(rewards: Tensor, group_ids: Tensor, cfg: Any) -> Tensor:
    """When ``cfg.dynamic_sampling``: keep groups whose rewards are not all equal. (N,) bool

    DAPO's filter (``dapo.dynamic_sampling_mask``) for any algorithm whose config
    has the switch; a uniform group has zero advantage and only dilutes the batch.
    """
    if not cfg.dynamic_sampling:
        return keep_all(rewards, group_ids, cfg)
    _, std = group_mean_std(rewards, group_ids, unbiased=False)
    return std > 1e-8


def no_shaping(
    rewards: Tensor, lengths: Tensor, truncated: Tensor, cfg: Any, *, max_len: int
) -> Tensor:
    """Rewards unchanged. (N,)"""
    return rewards


def no_loss_filter(truncated: Tensor, cfg: Any) -> Tensor:
    """Every sample contributes to the loss. (N,) bool"""
    return torch.ones_like(truncated, dtype=torch.bool)


@dataclass(frozen=True)
class Algorithm:
    """One RL method as the loop sees it; every callable takes the config last.

    - ``advantages(rewards (N,), group_ids (N,), cfg) -> (N,)``
    - ``policy_loss(logp (B,T), old_logp (B,T), adv (B,)|(B,T), mask (B,T), cfg, *,
      ref_logp=None, scale_tokens=None, scale_seqs=None) -> (loss, metrics)``
    - ``sample_filter(rewards, group_ids, cfg) -> keep (N,) bool`` (whole groups)
    - ``sample_priority(rewards, group_ids, cfg) -> (N,) bool``: groups to keep first
      when the loop truncates a surplus of groups
    - ``shape_rewards(rewards, lengths, truncated, cfg, *, max_len) -> (N,)``
    - ``loss_sample_mask(truncated (N,) bool, cfg) -> (N,) bool``: samples whose loss
      tokens count
    """

    name: str
    config_type: type
    advantages: AdvantageFn
    policy_loss: PolicyLossFn
    sample_filter: GroupMaskFn = keep_all
    sample_priority: GroupMaskFn = keep_all
    shape_rewards: ShapeRewardsFn = no_shaping
    loss_sample_mask: LossSampleMaskFn = no_loss_filter

    def make_config(self, overrides: Mapping[str, Any] | Any | None = None) -> Any:
        """The config with ``overrides`` applied; an instance of the type passes through.

        An unknown key raises one sentence that lists the valid ones.
        """
        if isinstance(overrides, self.config_type):
            return overrides
        values = dict(overrides or {})
        valid = [f.name for f in dataclasses.fields(self.config_type)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)} for algorithm {self.name!r}; "
                f"valid options: {', '.join(valid)}."
            )
        return self.config_type(**values)


ALGORITHMS: Registry[Algorithm] = Registry("algorithm")


def group_mean_std(values: Tensor, group_ids: Tensor, *, unbiased: bool) -> tuple[Tensor, Tensor]:
    """Per-sample mean and std of the sample's group. ``(N,), (N,)`` in float64.

    ``group_ids`` are integers with any values, in any order. ``unbiased`` divides by
    ``n - 1`` (a group of one has std 0), else by ``n`` (population std).
    """
    if values.dim() != 1 or group_ids.shape != values.shape:
        raise ValueError(
            f"rewards {tuple(values.shape)} and group_ids {tuple(group_ids.shape)} must be "
            "1-D tensors of the same length."
        )
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    x = values.to(torch.float64)
    n = counts.to(torch.float64)  # (G,)
    mean = torch.zeros_like(n).index_add_(0, inverse, x) / n  # (G,)
    centered = x - mean[inverse]  # (N,)
    sq = torch.zeros_like(n).index_add_(0, inverse, centered * centered)
    dof = (n - 1.0).clamp(min=1.0) if unbiased else n
    std = (sq / dof).sqrt()  # (G,)
    return mean[inverse], std[inverse]


def group_max(values: Tensor, group_ids: Tensor) -> Tensor:
    """Per-sample max over the sample's group. (N,) float64"""
    uniq, inverse = torch.unique(group_ids, return_inverse=True)
    x = values.to(torch.float64)
    best = torch.full((uniq.numel(),), -torch.inf, dtype=torch.float64, device=x.device)
    best = best.scatter_reduce(0, inverse, x, reduce="amax", include_self=True)
    return best[inverse]


def float_like(values: Tensor) -> torch.dtype:
    """The dtype results derived from ``values`` come back in (float32 for integers)."""
    return values.dtype if values.is_floating_point() else torch.float32
