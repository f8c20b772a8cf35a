"""DAPO's soft overlong punishment (Yu et al. 2025, eq. 13) as a reward term.

With ``L_max`` the longest response allowed and ``L_cache`` a buffer before it::

    R_length(y) = 0                                    if |y| <= L_max - L_cache
                = -(|y| - (L_max - L_cache)) / L_cache  if L_max - L_cache < |y| <= L_max
                = -1                                    if |y| > L_max

times ``factor``. The recipe uses ``L_max = 20480``, ``L_cache = 4096``, ``factor = 1``.
The term is added to the task reward with weight 1.0 (``CombinedReward``).
"""

from __future__ import annotations

from typing import Any

from webdancer.rewards.base import REWARDS, EpisodeLike, RewardResult, TaskLike


def soft_overlong_penalty(length: int, *, max_len: int, cache_len: int,
                          factor: float = 1.0) -> float:
    """The penalty (``<= 0``) for a response of ``length`` tokens; see the module doc."""
    if not 0 < cache_len <= max_len:
        raise ValueError(f"overlong cache_len={cache_len} must lie in (0, max_len={max_len}]; "
                         "lower cache_len or raise max_len.")
    if factor < 0:
        raise ValueError(f"overlong factor={factor} must be >= 0 (it scales a penalty).")
    over = (length - (max_len - cache_len)) / cache_len
    return -factor * min(max(over, 0.0), 1.0)


def recipe_lengths(max_len: int) -> dict[str, int]:
    """The term's lengths for a response budget of ``max_len`` tokens (``L_max``), with
    ``L_cache = L_max / 5`` as in the recipe's 4096 of 20480."""
    return {"max_len": max_len, "cache_len": max(1, max_len // 5)}


class OverlongPenalty:
    """Reward term (registered as ``"overlong"``) reading ``episode.response_length``.

    ``response_length`` is the number of generated tokens (``Trajectory`` has it). An
    episode without it is an error rather than a silent zero: a length penalty that the
    reward loop cannot see is a known way to train without it (verl #4268).
    """

    def __init__(self, max_len: int, cache_len: int, factor: float = 1.0) -> None:
        soft_overlong_penalty(0, max_len=max_len, cache_len=cache_len, factor=factor)  # validates
        self.max_len = int(max_len)
        self.cache_len = int(cache_len)
        self.factor = float(factor)

    def __call__(self, episode: EpisodeLike | str, task: TaskLike) -> RewardResult:
        length = _response_length(episode)
        penalty = soft_overlong_penalty(length, max_len=self.max_len, cache_len=self.cache_len,
                                        factor=self.factor)
        return RewardResult(penalty, {"overlong": penalty,
                                      "overlong/response_tokens": float(length)})

    def __repr__(self) -> str:
        return (f"OverlongPenalty(max_len={self.max_len}, cache_len={self.cache_len}, "
                f"factor={self.factor})")


def _response_length(episode: Any) -> int:
    length = getattr(episode, "response_length", None)
    if length is None:
        raise TypeError(f"the overlong penalty needs episode.response_length (generated tokens), "
                        f"which a {type(episode).__name__} does not have; score Trajectory "
                        "objects with it.")
    return int(length)


REWARDS.register("overlong", OverlongPenalty)
