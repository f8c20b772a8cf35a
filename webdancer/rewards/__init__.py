"""Rewards: pure functions registered by name, combined by weights from config."""

from webdancer.rewards.base import REWARDS, RewardFn, RewardResult
from webdancer.rewards.combined import DEFAULT_WEIGHTS, CombinedReward
from webdancer.rewards.factory import SHAPING_TERMS, answer_term, build_reward
from webdancer.rewards.gaia import gaia_exact_match, gaia_match
from webdancer.rewards.judge import JUDGE_PROMPT, Judgement, JudgeReward, parse_verdict
from webdancer.rewards.overlong import OverlongPenalty, recipe_lengths, soft_overlong_penalty
from webdancer.rewards.rules import contains, exact_match, f1, format_reward, normalize_answer

__all__ = [
    "DEFAULT_WEIGHTS",
    "JUDGE_PROMPT",
    "REWARDS",
    "SHAPING_TERMS",
    "CombinedReward",
    "JudgeReward",
    "Judgement",
    "OverlongPenalty",
    "RewardFn",
    "RewardResult",
    "answer_term",
    "build_reward",
    "contains",
    "exact_match",
    "f1",
    "format_reward",
    "gaia_exact_match",
    "gaia_match",
    "normalize_answer",
    "parse_verdict",
    "recipe_lengths",
    "soft_overlong_penalty",
]
