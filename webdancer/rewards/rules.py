"""Rule-based rewards: protocol format and answer matching."""

from __future__ import annotations

import re
import string
from collections import Counter

from webdancer.rewards.base import REWARDS, EpisodeLike, RewardResult, TaskLike, answer_of

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalization: lowercase, drop punctuation and articles, fold whitespace."""
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(episode: EpisodeLike | str, task: TaskLike) -> RewardResult:
    hit = float(normalize_answer(answer_of(episode)) == normalize_answer(task.answer))
    return RewardResult(hit, {"exact_match": hit})


def f1(episode: EpisodeLike | str, task: TaskLike) -> RewardResult:
    pred = normalize_answer(answer_of(episode)).split()
    gold = normalize_answer(task.answer).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if not pred or not gold or common == 0:
        score = float(pred == gold)
    else:
        precision, recall = common / len(pred), common / len(gold)
        score = 2 * precision * recall / (precision + recall)
    return RewardResult(score, {"f1": score})


def contains(episode: EpisodeLike | str, task: TaskLike) -> RewardResult:
    gold = normalize_answer(task.answer)
    hit = float(bool(gold) and gold in normalize_answer(answer_of(episode)))
    return RewardResult(hit, {"contains": hit})


def format_reward(episode: EpisodeLike | str, task: TaskLike) -> RewardResult:
    """Share of turns that follow the protocol, times whether the episode ended in an answer.

    A turn follows the protocol when it has a non-empty ``<think>``, exactly one valid
    tool call or one answer, and does not write a ``<tool_response>`` itself.
    """
    if isinstance(episode, str):
        return RewardResult(1.0, {"format": 1.0})
    turns = list(episode.turns)
    if not turns:
        return RewardResult(0.0, {"format": 0.0, "format/turn_ok": 0.0, "format/answered": 0.0})
    ok = [t.valid and t.has_think and not t.wrote_tool_response for t in turns]
    turn_ok = sum(ok) / len(turns)
    answered = float(turns[-1].kind == "answer")
    score = turn_ok * answered
    return RewardResult(score, {"format": score, "format/turn_ok": turn_ok, "format/answered": answered})


REWARDS.register("exact_match", exact_match)
REWARDS.register("f1", f1)
REWARDS.register("contains", contains)
REWARDS.register("format", format_reward)
