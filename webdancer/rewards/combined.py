"""Weighted sums of registered rewards; WebDancer's default is 0.1 x format + 0.9 x answer."""

from __future__ import annotations

from collections.abc import Mapping

from webdancer.rewards.base import REWARDS, EpisodeLike, RewardResult, TaskLike

DEFAULT_WEIGHTS: Mapping[str, float] = {"format": 0.1, "exact_match": 0.9}


class CombinedReward:
    """``score = sum_i w_i * reward_i``; the breakdown keeps every part."""

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.parts = {name: REWARDS.get(name) for name in self.weights}

    def __call__(self, episode: EpisodeLike | str, task: TaskLike) -> RewardResult:
        total = 0.0
        breakdown: dict[str, float] = {}
        unjudged = False
        for name, fn in self.parts.items():
            result = fn(episode, task)
            unjudged = unjudged or result.unjudged
            total += self.weights[name] * result.score
            breakdown[name] = result.score
            breakdown.update({k: v for k, v in result.breakdown.items() if k != name})
        breakdown["total"] = total
        return RewardResult(total, breakdown, unjudged=unjudged)
