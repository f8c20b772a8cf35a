"""Build a ``CombinedReward`` from a config mapping of term names to weights.

    build_reward({"format": 0.1, "judge": 0.9}, judge_engine=chat_model)
    build_reward({"format": 0.1, "exact_match": 0.9, "overlong": 1.0},
                 overlong={"max_len": 20480, "cache_len": 4096, "factor": 1.0})

Plain registered functions need only their name; ``judge`` needs a chat engine (or a
ready ``JudgeReward``) and ``overlong`` its lengths (or a ready ``OverlongPenalty``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webdancer.rewards.base import RewardFn
from webdancer.rewards.combined import CombinedReward, registered_part
from webdancer.rewards.judge import JudgeReward
from webdancer.rewards.overlong import OverlongPenalty

# Terms that measure something other than the answer (format, length shaping).
SHAPING_TERMS = ("format", "overlong")


def build_reward(spec: Mapping[str, float] | None, *, judge_engine: Any = None,
                 overlong: OverlongPenalty | Mapping[str, float] | None = None) -> CombinedReward:
    """A ``CombinedReward`` for ``spec`` (name -> weight; None: the default weights).

    ``judge_engine``: a ``ChatEngine`` (or a ``JudgeReward``) for the ``judge`` term.
    ``overlong``: ``{"max_len", "cache_len", "factor"?}`` (or an ``OverlongPenalty``)
    for the ``overlong`` term. A term whose requirement is missing raises ValueError.
    """
    if spec is None:
        return CombinedReward()
    parts: dict[str, RewardFn] = {}
    for name in spec:
        if name == "judge":
            parts[name] = _judge(judge_engine)
        elif name == "overlong":
            parts[name] = _overlong(overlong)
        else:
            parts[name] = registered_part(name)
    return CombinedReward(spec, parts=parts)


def _judge(engine: Any) -> RewardFn:
    if engine is None:
        raise ValueError("the 'judge' reward needs a judge model; pass judge_engine= "
                         "(e.g. judge=openai:BASE_URL#MODEL on the command line).")
    return engine if isinstance(engine, JudgeReward) else JudgeReward(engine)


def _overlong(params: OverlongPenalty | Mapping[str, float] | None) -> RewardFn:
    if params is None:
        raise ValueError("the 'overlong' reward needs its lengths; pass overlong={'max_len': ..., "
                         "'cache_len': ..., 'factor': ...} (the DAPO recipe: 20480, 4096, 1.0).")
    if isinstance(params, OverlongPenalty):
        return params
    unknown = sorted(set(params) - {"max_len", "cache_len", "factor"})
    if unknown or not {"max_len", "cache_len"} <= set(params):
        raise ValueError(f"overlong={dict(params)} must give max_len and cache_len (and optionally "
                         f"factor); unknown keys: {unknown or 'none'}.")
    return OverlongPenalty(int(params["max_len"]), int(params["cache_len"]),
                           float(params.get("factor", 1.0)))


def answer_term(spec: Mapping[str, float]) -> str:
    """The term that says whether the answer is right: the first that is not shaping."""
    names = [name for name in spec if name not in SHAPING_TERMS]
    if not names:
        raise ValueError(f"reward {dict(spec)} has no answer term; add one such as exact_match, "
                         "gaia_exact_match or judge.")
    return names[0]
