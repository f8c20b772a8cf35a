from __future__ import annotations

import json
import math

import pytest

from webdancer.eval.metrics import (
    WEBWALKER_CELLS,
    EpisodeResult,
    breakdown,
    by_gaia_level,
    by_webwalker_cell,
    curve_ks,
    majority_vote,
    pass_at_k,
    question_consensus,
    summarize,
)


def ep(task: str, run: int, correct: bool | None, answer: str = "", **kw: object) -> EpisodeResult:
    return EpisodeResult(task, run, correct, answer, **kw)  # type: ignore[arg-type]


# Four questions x three runs; the expected numbers below are worked out by hand.
#   q1: T "Paris" | F "Lyon" | T "paris."   pass T; votes paris 2 -> run0 verdict T
#   q2: F "A"     | F "B"    | F ""         pass F; A/B tie -> A (first) -> F
#   q3: F "X"     | T "Y"    | F "Z"        pass T; 3-way tie -> X -> F
#   q4: ? "M"     | F "N"    | F "N"        pass undecided; N wins -> run1 verdict F
TABLE = [
    ep("q1", 0, True, "Paris"), ep("q1", 1, False, "Lyon"), ep("q1", 2, True, "paris."),
    ep("q2", 0, False, "A"), ep("q2", 1, False, "B"), ep("q2", 2, False, ""),
    ep("q3", 0, False, "X"), ep("q3", 1, True, "Y"), ep("q3", 2, False, "Z"),
    ep("q4", 0, None, "M"), ep("q4", 1, False, "N"), ep("q4", 2, False, "N"),
]


def test_summarize_hand_computed() -> None:
    s = summarize(TABLE, k=3)
    assert s["runs"] == [0, 1, 2] and s["k"] == 3
    assert s["n_questions"] == 4 and s["n_episodes"] == 12 and s["n_unjudged"] == 1
    # run0 has 3 judged (1 correct), runs 1 and 2 have 4 judged (1 correct)
    assert s["pass@1_per_run"] == pytest.approx([1 / 3, 1 / 4, 1 / 4])
    assert s["avg_pass@k"] == pytest.approx((1 / 3 + 1 / 4 + 1 / 4) / 3)
    assert s["best_pass@1"] == pytest.approx(1 / 3)
    assert s["pass@k"] == pytest.approx(2 / 3)  # q4 undecided, left out
    assert s["n_undecided_pass@k"] == 1
    assert s["cons@k"] == pytest.approx(1 / 4)
    assert s["n_undecided_cons@k"] == 0 and s["n_incomplete"] == 0
    assert s["pass@k_unbiased"] is None  # n == k
    json.dumps(s)  # a report can write it as is


def test_majority_vote_tie_goes_to_first_in_run_order() -> None:
    assert majority_vote(["A", "B"]) == 0
    assert majority_vote(["B", "A"]) == 0
    assert majority_vote(["", "B", "C", "c."]) == 2  # "C" and "c." normalize together
    assert majority_vote(["B", "A", " a"]) == 1  # "A" is all article; it votes as "a"
    assert majority_vote(["the Cat", "cat", "Dog"]) == 0  # articles dropped for voting
    assert majority_vote(["", "  "]) is None


def test_consensus_verdicts() -> None:
    tie_wrong_first = [ep("q", 0, False, "A"), ep("q", 1, True, "B"), ep("q", 2, False, "")]
    tie_right_first = [ep("q", 0, True, "B"), ep("q", 1, False, "A"), ep("q", 2, False, "")]
    assert question_consensus(tie_wrong_first) is False
    assert question_consensus(tie_right_first) is True
    # the winner's first run is unjudged, so the next judged run with that answer decides
    assert question_consensus([ep("q", 0, None, "Paris"), ep("q", 1, True, "paris"),
                               ep("q", 2, False, "Lyon")]) is True
    # every run with the winning answer is unjudged: undecided
    assert question_consensus([ep("q", 0, None, "Paris"), ep("q", 1, None, "paris"),
                               ep("q", 2, True, "Lyon")]) is None
    # no run answered: wrong
    assert question_consensus([ep("q", 0, False, ""), ep("q", 1, False, "")]) is False


def test_unbiased_pass_at_k_values() -> None:
    assert pass_at_k(5, 1, 3) == pytest.approx(1 - 4 / 10)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_unbiased_reported_when_more_runs_than_k() -> None:
    # q1 correct in 1 of 5 runs, q2 in 2 of 5; k = 3 uses runs 0..2 for Pass@3.
    rows = [ep("q1", r, r == 4, "x") for r in range(5)] + [ep("q2", r, r in (0, 1), "y")
                                                             for r in range(5)]
    s = summarize(rows, k=3)
    assert s["pass@k_unbiased"] == pytest.approx(((1 - 4 / 10) + (1 - 1 / 10)) / 2)
    assert s["pass@k"] == pytest.approx(1 / 2)  # q1's correct run is run 4, outside the first 3
    assert s["avg_pass@k"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert len(s["pass@1_per_run"]) == 5


def test_unbiased_skips_questions_with_too_few_judged_runs() -> None:
    rows = [ep("q1", r, True, "x") for r in range(4)]
    rows += [ep("q2", 0, False, "y"), ep("q2", 1, None, "y"), ep("q2", 2, None, "y"),
             ep("q2", 3, None, "y")]
    assert summarize(rows, k=2)["pass@k_unbiased"] == 1.0


def test_curve_ks_double_up_to_the_number_of_runs() -> None:
    assert curve_ks(1) == [1] and curve_ks(3) == [1, 2, 3] and curve_ks(8) == [1, 2, 4, 8]
    assert curve_ks(16) == [1, 2, 4, 8, 16] and curve_ks(12) == [1, 2, 4, 8, 12]


def test_pass_at_k_curve_uses_every_run_and_only_judged_ones() -> None:
    # q1: 1 of 4 right; q2: 3 of 4; q3: 1 of 2 judged (two unjudged), so it counts up to k = 2.
    rows = [ep("q1", r, r == 3, "x") for r in range(4)] + [ep("q2", r, r != 0, "y") for r in range(4)]
    rows += [ep("q3", 0, True, "z"), ep("q3", 1, False, "z"), ep("q3", 2, None, "z"), ep("q3", 3, None, "z")]
    curve = summarize(rows, k=1)["pass@k_curve"]
    assert list(curve) == ["1", "2", "4"]
    assert curve["1"] == pytest.approx((1 / 4 + 3 / 4 + 1 / 2) / 3)
    assert curve["2"] == pytest.approx(((1 - 3 / 6) + 1.0 + 1.0) / 3)  # q1: C(3,2)/C(4,2) of pairs miss
    assert curve["4"] == pytest.approx(1.0)  # q1 and q2 each right once in 4; q3 has too few judged runs


def test_behaviour_statistics_count_every_episode() -> None:
    rows = [
        ep("q1", 0, True, "a", tool_calls=4, invalid_actions=1, turns=5, termination="answer",
           tokens=100),
        ep("q2", 0, None, "b", tool_calls=2, invalid_actions=0, turns=3, termination="answer",
           tokens=50),
        ep("q3", 0, False, "", tool_calls=9, invalid_actions=3, turns=12, termination="budget",
           tokens=300),
    ]
    s = summarize(rows, k=1)
    assert s["invalid_action_rate"] == pytest.approx(4 / 20)
    assert s["tool_calls_mean"] == pytest.approx(15 / 3)
    assert s["turns_mean"] == pytest.approx(20 / 3)
    assert s["tokens_mean"] == pytest.approx(150.0)
    assert s["termination"] == {"answer": 2, "budget": 1}
    assert s["pass@1_per_run"] == [0.5] and s["pass@k"] == 0.5 and s["n_undecided_pass@k"] == 1


def test_incomplete_question_left_out_of_pass_and_cons() -> None:
    rows = [ep("q1", 0, True, "a"), ep("q1", 1, True, "a"), ep("q2", 0, False, "b")]
    s = summarize(rows, k=2)
    assert s["n_incomplete"] == 1 and s["pass@k"] == 1.0 and s["cons@k"] == 1.0
    assert s["pass@1_per_run"] == [0.5, 1.0]


def test_all_unjudged_gives_none_not_zero() -> None:
    s = summarize([ep("q1", 0, None, "a"), ep("q2", 0, None, "b")], k=1)
    assert s["pass@1_per_run"] == [None] and s["avg_pass@k"] is None
    assert s["best_pass@1"] is None and s["pass@k"] is None and s["cons@k"] is None
    assert s["n_unjudged"] == 2


def test_errors() -> None:
    with pytest.raises(ValueError, match="2 runs but k=3"):
        summarize([ep("q", 0, True), ep("q", 1, True)], k=3)
    with pytest.raises(ValueError, match="two results for task 'q' in run 0"):
        summarize([ep("q", 0, True), ep("q", 0, False)], k=1)
    with pytest.raises(ValueError, match="k=0"):
        summarize([ep("q", 0, True)], k=0)


def test_breakdown_webwalker_cells_and_overall() -> None:
    rows = []
    for i, (kind, level) in enumerate([("single_source", "easy"), ("single_source", "easy"),
                                       ("multi_source", "hard"), ("single_source", "hard")]):
        meta = {"type": kind, "difficulty_level": level}
        rows += [ep(f"q{i}", 0, i % 2 == 0, "a", meta=meta), ep(f"q{i}", 1, i == 3, "a", meta=meta)]
    rows += [ep("nometa", 0, True, "z"), ep("nometa", 1, True, "z")]
    out = breakdown(rows, by_webwalker_cell, k=2, order=WEBWALKER_CELLS)
    assert list(out) == ["single_source/easy", "single_source/hard", "multi_source/hard", "overall"]
    easy = out["single_source/easy"]  # q0: T,F  q1: F,F
    assert easy["pass@1_per_run"] == [0.5, 0.0] and easy["pass@k"] == 0.5
    assert out["single_source/hard"]["pass@1_per_run"] == [0.0, 1.0]
    assert out["overall"]["n_questions"] == 5
    assert out["overall"]["pass@k"] == pytest.approx(4 / 5)


def test_breakdown_group_missing_a_run_keeps_global_runs() -> None:
    rows = [ep("a", 0, True, meta={"level": 1}), ep("a", 1, True, meta={"level": 1}),
            ep("b", 0, False, meta={"level": 2})]
    out = breakdown(rows, by_gaia_level, k=2)
    assert list(out) == ["level 1", "level 2", "overall"]
    assert out["level 2"]["runs"] == [0, 1] and out["level 2"]["pass@1_per_run"] == [0.0, None]
    assert out["level 2"]["n_incomplete"] == 1 and out["level 2"]["pass@k"] is None
    assert math.isclose(out["overall"]["pass@1_per_run"][0], 0.5)


def test_episode_result_round_trip() -> None:
    r = ep("q", 2, None, "x", tool_calls=3, meta={"level": 2})
    assert EpisodeResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
