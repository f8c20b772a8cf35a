"""Rule-based rewards: protocol format and answer matching."""

from __future__ import annotations

import re
import string
from collections import Counter

from webdancer.rewards.base import REWARDS, EpisodeLike, RewardResult, TaskLike, TurnLike, answer_of

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


def _turn_follows_protocol(turn: TurnLike) -> bool:
    return (turn.valid and turn.has_think and turn.n_tool_calls + turn.n_answers == 1
            and not turn.wrote_tool_response)


def format_reward(episode: EpisodeLike | str, task: TaskLike) -> RewardResult:
    """Share of turns that follow the protocol, times whether the episode ended in an answer.

    A turn follows the protocol when it has a non-empty ``<think>``, exactly one tool call
    (valid JSON, a known tool, accepted by the environment) or one answer, and does not
    write a ``<tool_response>`` itself. Turns that do not carry the environment's verdict
    (parsed turns of an env ``Episode`` do not know unknown tools) are capped by
    ``episode.invalid_actions``: at most ``turns - invalid_actions`` turns count as good.

    Breakdown (fractions of turns, in [0, 1]): ``format/turn_ok``, ``format/think``,
    ``format/valid``, ``format/wrote_tool_response``; and ``format/answered`` (0 or 1).
    A plain answer string (no turns) scores 1.0.
    """
    if isinstance(episode, str):
        return RewardResult(1.0, {"format": 1.0})
    turns = list(episode.turns)
    if not turns:
        keys = ("format", "format/turn_ok", "format/answered", "format/think", "format/valid",
                "format/wrote_tool_response")
        return RewardResult(0.0, dict.fromkeys(keys, 0.0))
    n = len(turns)
    not_invalid = n - min(max(int(getattr(episode, "invalid_actions", 0) or 0), 0), n)
    n_ok = min(sum(_turn_follows_protocol(t) for t in turns), not_invalid)
    n_valid = min(sum(bool(t.valid) for t in turns), not_invalid)
    turn_ok = n_ok / n
    answered = float(turns[-1].kind == "answer" and bool(episode.answer))
    score = turn_ok * answered
    return RewardResult(score, {
        "format": score,
        "format/turn_ok": turn_ok,
        "format/answered": answered,
        "format/think": sum(bool(t.has_think) for t in turns) / n,
        "format/valid": n_valid / n,
        "format/wrote_tool_response": sum(bool(t.wrote_tool_response) for t in turns) / n,
    })


REWARDS.register("exact_match", exact_match)
REWARDS.register("f1", f1)
REWARDS.register("contains", contains)
REWARDS.register("format", format_reward)
