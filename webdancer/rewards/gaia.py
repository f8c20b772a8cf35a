"""GAIA's official quasi-exact match.

The rule, by the kind of the ground truth:

1. **Number** (``float(truth)`` parses): strip ``$``, ``%`` and ``,`` from the prediction
   and compare the two as floats. Nothing else is stripped, so a prediction with a unit
   (``"17 km"``) does not parse and does not match. An unparseable prediction never
   matches.
2. **List** (the truth contains ``,`` or ``;``): split both strings on ``[,;]``; the
   lists must have the same length, and each pair must match in order: as numbers when
   the truth element is a number (rule 1), otherwise as strings lowercased with all
   whitespace removed but punctuation kept. A truth of ``"1,000"`` is therefore the
   two-element list ``["1", "000"]``, exactly as the official scorer treats it.
3. **String**: compare both lowercased with all whitespace and all ASCII punctuation
   removed. Articles are kept (``"the Beatles"`` does not match ``"Beatles"``).

Numbers are parsed with Python's ``float``, as the official scorer does, so surrounding
whitespace, exponents (``"1e3"``) and digit underscores (``"1_000"``) are accepted.
"""

from __future__ import annotations

import math
import re
import string

from webdancer.rewards.base import REWARDS, EpisodeLike, RewardResult, TaskLike, answer_of

_LIST_SEPARATORS = re.compile(r"[,;]")
_WHITESPACE = re.compile(r"\s")
_PUNCT = str.maketrans("", "", string.punctuation)


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _prediction_number(text: str) -> float | None:
    """The prediction as a float after dropping ``$``, ``%`` and ``,``; None if unparseable."""
    for char in "$%,":
        text = text.replace(char, "")
    return _as_float(text)


def _numbers_equal(prediction: str, truth: float) -> bool:
    value = _prediction_number(prediction)
    # The official scorer maps an unparseable prediction to inf, which would match a
    # truth of "inf"; here an unparseable prediction never matches.
    return value is not None and not math.isnan(value) and value == truth


def _normalize(text: str, *, remove_punct: bool) -> str:
    text = _WHITESPACE.sub("", text).lower()
    return text.translate(_PUNCT) if remove_punct else text


def gaia_match(prediction: str, truth: str) -> bool:
    """True when ``prediction`` matches ``truth`` under GAIA's quasi-exact match (module doc)."""
    truth_number = _as_float(truth)
    if truth_number is not None:
        return _numbers_equal(prediction, truth_number)
    if _LIST_SEPARATORS.search(truth):
        truth_items = _LIST_SEPARATORS.split(truth)
        predicted_items = _LIST_SEPARATORS.split(prediction)
        if len(truth_items) != len(predicted_items):
            return False
        return all(_item_match(p, t) for p, t in zip(predicted_items, truth_items))
    return _normalize(prediction, remove_punct=True) == _normalize(truth, remove_punct=True)


def _item_match(prediction: str, truth: str) -> bool:
    truth_number = _as_float(truth)
    if truth_number is not None:
        return _numbers_equal(prediction, truth_number)
    # Punctuation is kept inside list items: it can be part of the answer ("St. Louis").
    return _normalize(prediction, remove_punct=False) == _normalize(truth, remove_punct=False)


def gaia_exact_match(episode: EpisodeLike | str, task: TaskLike) -> RewardResult:
    """Reward 1.0 when the episode's answer passes :func:`gaia_match` against the task's answer."""
    hit = float(gaia_match(answer_of(episode), task.answer))
    return RewardResult(hit, {"gaia_exact_match": hit})


REWARDS.register("gaia_exact_match", gaia_exact_match)
