"""Weighted sums of rewards; WebDancer's default is 0.1 x format + 0.9 x answer.

Terms are named by their weight's key. A name that is registered as a plain function
(``format``, ``exact_match``, ``gaia_exact_match``...) needs nothing more; a term that
needs arguments (``judge`` needs a chat model, ``overlong`` its lengths) is passed as
an instance in ``parts``, or built by ``webdancer.rewards.factory.build_reward``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from webdancer.rewards.base import REWARDS, EpisodeLike, RewardFn, RewardResult, TaskLike

DEFAULT_WEIGHTS: Mapping[str, float] = {"format": 0.1, "exact_match": 0.9}


def registered_part(name: str) -> RewardFn:
    """The registered reward ``name`` as a callable; terms that need arguments raise ValueError."""
    fn = REWARDS.get(name)
    if isinstance(fn, type):
        raise ValueError(f"reward {name!r} needs arguments ({fn.__name__}); build it with "
                         "webdancer.rewards.build_reward(...) or pass parts={name: instance}.")
    return fn


class CombinedReward:
    """``score = sum_i w_i * reward_i``; the breakdown keeps every part and ``"total"``.

    ``weights`` maps term names to weights (default ``DEFAULT_WEIGHTS``); ``parts`` gives
    ready reward objects for some (or all) of those names, the rest are looked up in
    ``REWARDS``. ``unjudged`` is set when any part could not decide.
    """

    def __init__(self, weights: Mapping[str, float] | None = None, *,
                 parts: Mapping[str, RewardFn] | None = None) -> None:
        weights = DEFAULT_WEIGHTS if weights is None else weights
        self.weights = {name: float(w) for name, w in weights.items()}
        if not self.weights:
            raise ValueError("a combined reward needs at least one weighted term, "
                             "e.g. {'exact_match': 1.0}.")
        given = dict(parts or {})
        extra = sorted(set(given) - set(self.weights))
        if extra:
            raise ValueError(f"parts {extra} have no weight; add them to the weights or drop them.")
        self.parts: dict[str, RewardFn] = {
            name: given[name] if name in given else registered_part(name) for name in self.weights}

    def __call__(self, episode: EpisodeLike | str, task: TaskLike) -> RewardResult:
        return self._combine({name: fn(episode, task) for name, fn in self.parts.items()})

    def score_batch(self, episodes: Sequence[EpisodeLike | str],
                    tasks: Sequence[TaskLike]) -> list[RewardResult]:
        """One result per (episode, task) pair; a part with ``score_batch`` (a judge) is
        called once for the whole batch, the others per pair."""
        if len(episodes) != len(tasks):
            raise ValueError(f"got {len(episodes)} episodes for {len(tasks)} tasks; "
                             "pass one task per episode.")
        by_part = {name: _score_part(fn, episodes, tasks) for name, fn in self.parts.items()}
        return [self._combine({name: results[i] for name, results in by_part.items()})
                for i in range(len(episodes))]

    def _combine(self, results: Mapping[str, RewardResult]) -> RewardResult:
        total = 0.0
        breakdown: dict[str, float] = {}
        unjudged = False
        for name, result in results.items():
            unjudged = unjudged or result.unjudged
            total += self.weights[name] * result.score
            breakdown[name] = math.nan if result.unjudged else result.score  # undecided, not wrong
            breakdown.update({k: v for k, v in result.breakdown.items() if k != name})
        breakdown["total"] = total
        return RewardResult(total, breakdown, unjudged=unjudged)

    def __repr__(self) -> str:
        return f"CombinedReward({self.weights})"


def _score_part(fn: RewardFn, episodes: Sequence[EpisodeLike | str],
                tasks: Sequence[TaskLike]) -> list[RewardResult]:
    batch = getattr(fn, "score_batch", None)
    if callable(batch):
        results = list(batch(episodes, tasks))
        if len(results) != len(episodes):
            raise RuntimeError(f"{fn!r}.score_batch returned {len(results)} results for "
                               f"{len(episodes)} episodes.")
        return results
    return [fn(e, t) for e, t in zip(episodes, tasks)]
