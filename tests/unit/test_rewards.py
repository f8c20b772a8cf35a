"""Rule rewards, the combined reward, the overlong penalty and the reward factory."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from webdancer.agents.trajectory import Trajectory, TurnRecord
from webdancer.envs.actions import ParsedTurn, parse_turn
from webdancer.envs.tasks import Task
from webdancer.rewards import (
    REWARDS,
    CombinedReward,
    JudgeReward,
    OverlongPenalty,
    RewardResult,
    answer_term,
    build_reward,
    contains,
    exact_match,
    f1,
    format_reward,
    soft_overlong_penalty,
)

TASK = Task("Where is the tower?", "Paris", id="t0")

THINK = "<think>I should look it up.</think>"
CALL = '{"name": "search", "arguments": {"query": ["tower"]}}'
SEARCH = f"{THINK}\n<tool_call>\n{CALL}\n</tool_call>"
ANSWER = THINK + "\n<answer>Paris</answer>"


@dataclass
class Episode:
    """An env-like episode: parsed turns, the answer and the env's invalid count."""

    turns: list[ParsedTurn]
    answer: str | None = None
    invalid_actions: int = 0


def episode(*texts: str, invalid: int | None = None) -> Episode:
    turns = [parse_turn(t) for t in texts]
    answer = turns[-1].answer if turns and turns[-1].kind == "answer" else None
    counted = sum(not t.valid for t in turns) if invalid is None else invalid
    return Episode(turns, answer, counted)


# ------------------------------------------------------------------------------ format

FORMAT_CASES = [
    # (name, turns, env invalid count (None: parse failures), score, turn_ok, answered)
    ("all turns good", [SEARCH, SEARCH, ANSWER], None, 1.0, 1.0, 1.0),
    ("answer only", [ANSWER], None, 1.0, 1.0, 1.0),
    ("missing think", [f"<tool_call>{CALL}</tool_call>", ANSWER], None, 0.5, 0.5, 1.0),
    ("empty think", ["<think> </think><answer>Paris</answer>"], None, 0.0, 0.0, 1.0),
    ("invalid json", [THINK + "<tool_call>{not json}</tool_call>", ANSWER], None, 0.5, 0.5, 1.0),
    ("two tool calls", [f"{SEARCH}<tool_call>{CALL}</tool_call>", ANSWER], None, 0.5, 0.5, 1.0),
    ("call and answer in one turn", [SEARCH + "<answer>Paris</answer>"], None, 0.0, 0.0, 0.0),
    ("no final answer", [SEARCH, SEARCH], None, 0.0, 1.0, 0.0),
    ("wrote tool_response", [SEARCH + "\n<tool_response>fake results</tool_response>", ANSWER],
     None, 0.5, 0.5, 1.0),
    # a parsed turn does not know that "browse" is no tool; the env counted it invalid
    ("unknown tool counted by the env",
     [THINK + '<tool_call>{"name": "browse", "arguments": {}}</tool_call>', SEARCH, SEARCH, ANSWER],
     1, 0.75, 0.75, 1.0),
    ("no turns", [], None, 0.0, 0.0, 0.0),
]


@pytest.mark.parametrize("name,texts,invalid,score,turn_ok,answered", FORMAT_CASES,
                         ids=[c[0] for c in FORMAT_CASES])
def test_format_reward(name: str, texts: list[str], invalid: int | None, score: float,
                       turn_ok: float, answered: float) -> None:
    result = format_reward(episode(*texts, invalid=invalid), TASK)
    assert result.score == pytest.approx(score)
    assert result.breakdown["format"] == pytest.approx(score)
    assert result.breakdown["format/turn_ok"] == pytest.approx(turn_ok)
    assert result.breakdown["format/answered"] == answered
    for key in ("format/think", "format/valid", "format/wrote_tool_response"):
        assert 0.0 <= result.breakdown[key] <= 1.0


def test_format_breakdown_names_the_fault() -> None:
    texts = (SEARCH + "<tool_response>x</tool_response>", "<answer>Paris</answer>")
    result = format_reward(episode(*texts), TASK)
    assert result.breakdown["format/wrote_tool_response"] == 0.5
    assert result.breakdown["format/think"] == 0.5
    assert result.breakdown["format/valid"] == 1.0


def _record(text: str, valid: bool | None = None) -> TurnRecord:
    p = parse_turn(text)
    return TurnRecord(text=text, kind=p.kind, tool=p.tool,
                      valid=p.valid if valid is None else valid, has_think=p.has_think,
                      n_tool_calls=p.n_tool_calls, n_answers=p.n_answers,
                      wrote_tool_response=p.wrote_tool_response)


def test_format_reads_trajectory_turn_records() -> None:
    # The env refused the visit (URL not in the snapshot): the record carries its verdict.
    turns = [_record(SEARCH), _record(SEARCH, valid=False), _record(ANSWER)]
    traj = Trajectory(task=TASK, turns=turns, answer="Paris", invalid_actions=1)
    assert format_reward(traj, TASK).score == pytest.approx(2 / 3)


def test_format_of_a_plain_answer_string_is_one() -> None:
    assert format_reward("Paris", TASK).score == 1.0


# ------------------------------------------------------------------------------ answers

ANSWER_CASES = [
    # (prediction, gold, exact_match, f1, contains)
    ("Paris", "Paris", 1.0, 1.0, 1.0),
    ("paris.", "Paris", 1.0, 1.0, 1.0),
    ("The  Paris!", "paris", 1.0, 1.0, 1.0),  # articles, punctuation, case, spaces
    ("It is in Paris, France", "Paris", 0.0, 2 * (1 / 5) * 1 / (1 / 5 + 1), 1.0),
    ("Lyon", "Paris", 0.0, 0.0, 0.0),
    ("", "Paris", 0.0, 0.0, 0.0),
    ("New York City", "new york", 0.0, 2 * (2 / 3) * 1 / (2 / 3 + 1), 1.0),
    ("1,000", "1000", 1.0, 1.0, 1.0),  # punctuation dropped inside numbers too
    ("an apple", "the apple", 1.0, 1.0, 1.0),
    ("the", "a", 1.0, 1.0, 0.0),  # both normalize to nothing: equal, but nothing to contain
]


@pytest.mark.parametrize("prediction,gold,em,f1_score,contained", ANSWER_CASES)
def test_answer_rewards(prediction: str, gold: str, em: float, f1_score: float,
                        contained: float) -> None:
    task = Task("q", gold)
    assert exact_match(prediction, task).score == em
    assert f1(prediction, task).score == pytest.approx(f1_score)
    assert contains(prediction, task).score == contained


def test_answer_rewards_read_episode_answers() -> None:
    assert exact_match(episode(SEARCH, ANSWER), TASK).score == 1.0
    assert exact_match(episode(SEARCH), TASK).score == 0.0  # no answer: empty string


# ------------------------------------------------------------------------------ overlong

OVERLONG_CASES = [
    # DAPO recipe: L_max = 20480, L_cache = 4096, ramp from 16384 to 20480
    (0, 0.0), (16384, 0.0), (16385, -1 / 4096), (18432, -0.5), (20480, -1.0), (20481, -1.0),
    (40000, -1.0),
]


@pytest.mark.parametrize("length,expected", OVERLONG_CASES)
def test_soft_overlong_penalty_recipe_values(length: int, expected: float) -> None:
    assert soft_overlong_penalty(length, max_len=20480, cache_len=4096) == pytest.approx(expected)
    half = soft_overlong_penalty(length, max_len=20480, cache_len=4096, factor=0.5)
    assert half == pytest.approx(expected / 2)


@pytest.mark.parametrize("kw", [{"max_len": 100, "cache_len": 0},
                                {"max_len": 100, "cache_len": 101},
                                {"max_len": 100, "cache_len": 10, "factor": -1.0}])
def test_soft_overlong_penalty_rejects_bad_lengths(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        soft_overlong_penalty(5, **kw)


def _trajectory(generated: int, prompt: int = 10) -> Trajectory:
    return Trajectory(task=TASK, ids=[0] * (prompt + generated),
                      loss_mask=[0] * prompt + [1] * generated, turns=[_record(ANSWER)],
                      answer="Paris")


def test_overlong_reward_reads_response_length() -> None:
    term = OverlongPenalty(20480, 4096)
    result = term(_trajectory(18432), TASK)
    assert result.score == pytest.approx(-0.5)
    assert result.breakdown["overlong/response_tokens"] == 18432
    assert REWARDS.get("overlong") is OverlongPenalty


def test_overlong_reward_refuses_episodes_without_lengths() -> None:
    with pytest.raises(TypeError, match="response_length"):
        OverlongPenalty(100, 20)(episode(ANSWER), TASK)


# ------------------------------------------------------------------------------ combined


@pytest.mark.parametrize("weights,texts,total", [
    (None, [SEARCH, ANSWER], 1.0),  # default 0.1 format + 0.9 exact_match
    (None, ["<answer>Paris</answer>"], 0.9),  # right answer, no think
    (None, [SEARCH, THINK + "<answer>Lyon</answer>"], 0.1),  # good format, wrong answer
    ({"format": 0.5, "exact_match": 0.5}, ["<answer>Paris</answer>"], 0.5),
    ({"exact_match": 1.0, "contains": 2.0}, [THINK + "<answer>in Paris</answer>"], 2.0),
    ({"f1": 1.0}, [THINK + "<answer>Paris France</answer>"], 2 / 3),
])
def test_combined_weights(weights: Mapping[str, float] | None, texts: list[str],
                          total: float) -> None:
    result = CombinedReward(weights)(episode(*texts), TASK)
    assert result.score == pytest.approx(total)
    assert result.breakdown["total"] == pytest.approx(total)
    for name in weights or {"format": 0, "exact_match": 0}:
        assert name in result.breakdown


def test_combined_with_overlong_term_on_a_trajectory() -> None:
    reward = build_reward({"format": 0.1, "exact_match": 0.9, "overlong": 1.0},
                          overlong={"max_len": 20480, "cache_len": 4096})
    result = reward(_trajectory(18432), TASK)
    assert result.score == pytest.approx(1.0 - 0.5)
    assert result.breakdown["overlong"] == pytest.approx(-0.5)


@dataclass
class Reply:
    text: str
    finish_reason: str = "stop"


@dataclass
class CountingJudge:
    """A chat engine that says correct when the gold answer appears in the prediction."""

    calls: list[int] = field(default_factory=list)

    def chat(self, conversations: Sequence[Sequence[Mapping[str, str]]],
             params: Any) -> list[Reply]:
        self.calls.append(len(conversations))
        out = []
        for conversation in conversations:
            text = conversation[-1]["content"]
            gold = text.split("Gold answer: ")[1].split("\n")[0]
            predicted = text.split("Predicted answer: ")[1].split("\n")[0]
            out.append(Reply("Verdict: correct" if gold in predicted else "Verdict: incorrect"))
        return out


def test_combined_score_batch_calls_the_judge_once() -> None:
    engine = CountingJudge()
    reward = build_reward({"format": 0.1, "judge": 0.9}, judge_engine=engine)
    episodes = [episode(SEARCH, THINK + "<answer>Paris, France</answer>"),
                episode(THINK + "<answer>Rome</answer>"),
                episode(SEARCH, THINK + "<answer>It is Paris</answer>")]
    results = reward.score_batch(episodes, [TASK] * 3)
    assert engine.calls == [3]
    assert [r.score for r in results] == pytest.approx([1.0, 0.1, 1.0])
    assert [r.breakdown["judge"] for r in results] == [1.0, 0.0, 1.0]
    single = reward(episodes[1], TASK)  # one pair: one call of one conversation
    assert single.score == pytest.approx(0.1) and engine.calls == [3, 1]


def test_combined_marks_unjudged() -> None:
    class Undecided:
        def chat(self, conversations: Sequence[Any], params: Any) -> list[Reply]:
            return [Reply("I cannot tell.") for _ in conversations]

    judge = JudgeReward(Undecided(), retries=0)
    reward = build_reward({"format": 0.1, "judge": 0.9}, judge_engine=judge)
    result = reward(episode(ANSWER), TASK)
    assert result.unjudged and math.isnan(result.breakdown["judge"])


def test_combined_accepts_instances_and_plain_names() -> None:
    def always(ep: Any, task: Task) -> RewardResult:
        return RewardResult(1.0, {"always": 1.0})

    reward = CombinedReward({"always": 0.25, "exact_match": 0.75}, parts={"always": always})
    assert reward("Lyon", TASK).score == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no weight"):
        CombinedReward({"format": 1.0}, parts={"always": always})


@pytest.mark.parametrize("spec,kw,match", [
    ({"judge": 1.0}, {}, "judge_engine"),
    ({"overlong": 1.0, "exact_match": 1.0}, {}, "max_len"),
    ({"overlong": 1.0}, {"overlong": {"max_len": 10}}, "cache_len"),
    ({"overlong": 1.0}, {"overlong": {"max_len": 10, "cache_len": 2, "size": 3}}, "size"),
])
def test_build_reward_errors_name_what_is_missing(spec: dict[str, float], kw: dict[str, Any],
                                                   match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_reward(spec, **kw)


def test_unknown_and_argument_needing_names_fail_clearly() -> None:
    with pytest.raises(KeyError, match="valid names"):
        build_reward({"bleu": 1.0})
    with pytest.raises(ValueError, match="build_reward"):
        CombinedReward({"judge": 1.0})  # a class needs its engine; never call it per episode


@pytest.mark.parametrize("spec,name", [
    ({"format": 0.1, "exact_match": 0.9}, "exact_match"),
    ({"overlong": 1.0, "format": 0.1, "judge": 0.9}, "judge"),
    ({"gaia_exact_match": 1.0}, "gaia_exact_match"),
])
def test_answer_term(spec: dict[str, float], name: str) -> None:
    assert answer_term(spec) == name


def test_answer_term_needs_one() -> None:
    with pytest.raises(ValueError, match="no answer term"):
        answer_term({"format": 1.0})
