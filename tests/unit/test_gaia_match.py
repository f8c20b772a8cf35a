from __future__ import annotations

import pytest

from webdancer.envs.tasks import Task
from webdancer.rewards import REWARDS
from webdancer.rewards.gaia import gaia_exact_match, gaia_match

# (prediction, truth, expected, why)
NUMBER_CASES = [
    ("17", "17", True, "same integer"),
    ("17.0", "17", True, "compared as floats"),
    (" 17 ", "17", True, "float() ignores surrounding whitespace"),
    ("017", "17", True, "leading zero is still 17"),
    ("1e1", "10", True, "float() reads exponents"),
    ("17 km", "17", False, "units are not stripped, so the prediction does not parse"),
    ("17km", "17", False, "unit glued to the number does not parse either"),
    ("about 17", "17", False, "words around the number do not parse"),
    ("seventeen", "17", False, "number words do not parse"),
    ("", "17", False, "empty prediction does not parse"),
    ("$1,234.50", "1234.5", True, "$ and , are stripped"),
    ("1,234", "1234", True, "thousands separator stripped from the prediction"),
    ("12%", "12", True, "% is stripped"),
    ("0.12", "12", False, "a percentage is not rescaled"),
    ("12 %", "12", True, "stripping % leaves '12 ', which float() reads"),
    ("€12", "12", False, "only $ % , are stripped"),
    ("17.000001", "17", False, "floats must be equal exactly"),
    ("-3", "-3", True, "negative numbers"),
    ("3", "-3", False, "sign matters"),
    ("1_000", "1000", True, "float() reads digit underscores"),
    ("nan", "17", False, "nan never matches"),
    ("inf", "17", False, "inf is a number but not 17"),
    ("1.2.3", "1.2", False, "malformed number does not parse"),
    ("2,5", "2.5", False, "a decimal comma is a thousands separator to the stripper: 25"),
    ("25", "2.5", False, "sanity: 25 is not 2.5"),
]

LIST_CASES = [
    ("a, b, c", "a, b, c", True, "same list"),
    ("A,B,C", "a, b, c", True, "items lowercased with whitespace removed"),
    ("a; b; c", "a, b, c", True, "both separators split"),
    ("a, b", "a, b, c", False, "lengths differ"),
    ("a, b, c, d", "a, b, c", False, "lengths differ the other way"),
    ("b, a, c", "a, b, c", False, "order matters"),
    ("St. Louis, Paris", "St. Louis, Paris", True, "punctuation inside items kept on both sides"),
    ("St Louis, Paris", "St. Louis, Paris", False, "punctuation is not removed inside lists"),
    ("New York, Los Angeles", "newyork, losangeles", True, "whitespace removed inside items"),
    ("1, 2, 3", "1, 2, 3", True, "numeric items"),
    ("1.0, 2, 3.00", "1, 2, 3", True, "numeric items compared as floats"),
    ("1, 2 apples, 3", "1, 2, 3", False, "a numeric item with a unit does not parse"),
    ("$1; 2%; 3", "1; 2; 3", True, "$ and % stripped from numeric items"),
    ("apple, 3", "apple, 3", True, "mixed string and number items"),
    ("apple, three", "apple, 3", False, "number words do not parse in a list either"),
    ("1,000", "1,000", True, "'1,000' is the list ['1', '000']; the same text matches"),
    ("1, 000", "1,000", True, "and so does '1, 000' (items 1 and 0)"),
    ("1000", "1,000", False, "'1000' is a one-item list against a two-item truth"),
    ("1,0", "1,000", True, "'000' and '0' are both the number 0"),
    ("the cat, the dog", "cat, dog", False, "articles are not removed"),
    ("", "a, b", False, "empty prediction is a one-item list"),
    ("a,,b", "a, , b", True, "empty items compare as empty strings"),
]

STRING_CASES = [
    ("Paris", "paris", True, "case-insensitive"),
    ("  Paris. ", "Paris", True, "punctuation and whitespace removed"),
    ("sea gull", "seagull", True, "all whitespace removed, not only folded"),
    ("Saint-Louis", "saint louis", True, "hyphen is punctuation"),
    ("The Beatles", "Beatles", False, "articles are kept"),
    ("a", "a", True, "single letter"),
    ("", "Paris", False, "empty prediction"),
    ("Pari", "Paris", False, "no partial credit"),
    ("Paris, France", "Paris France", True, "no separator in the truth: the comma is punctuation"),
    ("Zürich", "zürich", True, "non-ASCII letters lowercased"),
    ("Zürich", "Zurich", False, "accents are not folded"),
    ("x\u00a0y", "xy", True, "non-breaking space is whitespace"),
    ("“quoted”", "quoted", False, "typographic quotes are not ASCII punctuation"),
    ("1 000 000", "one million", False, "a string truth is compared as a string"),
    ("17 km", "17 km", True, "a truth with a unit is a string, not a number"),
    ("17km", "17 km", True, "whitespace removed on both sides"),
]


@pytest.mark.parametrize("prediction,truth,expected,why", NUMBER_CASES)
def test_number_truth(prediction: str, truth: str, expected: bool, why: str) -> None:
    assert gaia_match(prediction, truth) is expected, why


@pytest.mark.parametrize("prediction,truth,expected,why", LIST_CASES)
def test_list_truth(prediction: str, truth: str, expected: bool, why: str) -> None:
    assert gaia_match(prediction, truth) is expected, why


@pytest.mark.parametrize("prediction,truth,expected,why", STRING_CASES)
def test_string_truth(prediction: str, truth: str, expected: bool, why: str) -> None:
    assert gaia_match(prediction, truth) is expected, why


def test_truth_inf_and_nan_follow_float_semantics() -> None:
    # An unparseable prediction must not match a truth of "inf" (the official scorer's
    # inf sentinel would); a nan truth matches nothing.
    assert gaia_match("inf", "inf") is True
    assert gaia_match("not a number", "inf") is False
    assert gaia_match("nan", "nan") is False


def test_reward_on_answer_string_and_episode() -> None:
    task = Task(question="How many?", answer="1,000")
    result = gaia_exact_match("1, 000", task)
    assert result.score == 1.0 and result.breakdown == {"gaia_exact_match": 1.0}
    assert not result.unjudged

    class Episode:
        turns = ()
        answer = "1000"
        invalid_actions = 0

    assert gaia_exact_match(Episode(), task).score == 0.0

    class NoAnswer:
        turns = ()
        answer = None
        invalid_actions = 0

    assert gaia_exact_match(NoAnswer(), Task(question="q", answer="x")).score == 0.0


def test_registered() -> None:
    assert REWARDS.get("gaia_exact_match") is gaia_exact_match
