from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from webdancer.envs.tasks import Task
from webdancer.rewards import REWARDS
from webdancer.rewards.judge import JUDGE_PROMPT, REMINDER, JudgeReward, parse_verdict


@pytest.mark.parametrize("text,expected", [
    ("Verdict: correct", True),
    ("Verdict: incorrect", False),
    ("verdict: CORRECT", True),
    ("VERDICT:incorrect.", False),
    ("**Verdict:** correct", True),
    ("**Verdict: Incorrect**", False),
    ("Verdict: **correct**", True),
    ("## Verdict: correct", True),
    ("> Verdict: incorrect", False),
    ("- Verdict: correct", True),
    ("Final verdict: incorrect", False),
    ("Verdict - correct", True),
    ("Correct", True),
    ("**Incorrect**", False),
    ("correct.", True),
    ("  Verdict: correct  ", True),
    ("Verdict: correct, the dates agree.", True),
    ("The reasoning shows it.\nVerdict: incorrect", False),
    # the last verdict wins: a judge that revises itself is read by its final word
    ("Verdict: correct\nWait, the year differs.\nVerdict: incorrect", False),
    ("Verdict: incorrect\nOn reflection the units match.\n**Verdict: Correct**", True),
    # not at line start, or not a verdict at all
    ("The prediction is correct.", None),
    ("I think it is Verdict: correct", None),
    ("Correctness is hard to judge here.", None),
    ("Verdict: not correct", None),
    ("Verdict: partially correct", None),
    ("Verdict: correctly matches", None),
    ("", None),
    ("Verdict:", None),
])
def test_parse_verdict(text: str, expected: bool | None) -> None:
    assert parse_verdict(text) is expected


def test_prompt_names_the_three_fields_and_the_verdict_line() -> None:
    text = JUDGE_PROMPT.format(question="Q?", gold="G", predicted="P")
    assert "Question: Q?" in text and "Gold answer: G" in text and "Predicted answer: P" in text
    assert "Verdict: correct" in text and "Verdict: incorrect" in text


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str = "stop"


class ScriptedEngine:
    """A ChatEngine that answers from a script keyed by the predicted answer.

    Each script entry is a list of outcomes, one per call for that item: a string
    reply, or an Exception to raise for the whole batch the item is in.
    """

    def __init__(self, script: Mapping[str, list[str | Exception]]) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[list[list[Mapping[str, str]]]] = []

    def chat(self, conversations: Sequence[Sequence[Mapping[str, str]]],
             params: Any) -> list[Reply]:
        self.calls.append([list(c) for c in conversations])
        replies: list[Reply] = []
        error: Exception | None = None
        for conversation in conversations:
            predicted = conversation[0]["content"].split("Predicted answer: ")[1].split("\n")[0]
            outcome = self.script[predicted].pop(0)
            if isinstance(outcome, Exception):
                error = outcome
            else:
                replies.append(Reply(outcome))
        if error is not None:
            raise error
        return replies


def make_judge(script: Mapping[str, list[str | Exception]], **kw: Any
               ) -> tuple[JudgeReward, ScriptedEngine]:
    engine = ScriptedEngine(script)
    return JudgeReward(engine, params=object(), **kw), engine


def test_batch_of_clear_verdicts_uses_one_call() -> None:
    judge, engine = make_judge({"Paris": ["Same city.\nVerdict: correct"],
                                "Lyon": ["Different city.\nVerdict: incorrect"]})
    verdicts = judge.judge_batch([("Capital?", "Paris", "Paris"), ("Capital?", "Paris", "Lyon")])
    assert verdicts == [True, False]
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 2


def test_unparseable_reply_is_reasked_with_reminder() -> None:
    judge, engine = make_judge({"Paris": ["It looks right to me.", "Verdict: correct"]})
    [judgement] = judge.judge_many([("Capital?", "Paris", "Paris")])
    assert judgement.verdict is True and judgement.attempts == 2
    second = engine.calls[1][0]
    assert second[-2] == {"role": "assistant", "content": "It looks right to me."}
    assert second[-1] == {"role": "user", "content": REMINDER}


def test_raised_call_is_retried_unchanged() -> None:
    judge, engine = make_judge({"Paris": [TimeoutError("slow"), "Verdict: correct"],
                                "Lyon": ["Verdict: incorrect", "Verdict: incorrect"]})
    verdicts = judge.judge_batch([("Capital?", "Paris", "Paris"), ("Capital?", "Paris", "Lyon")])
    assert verdicts == [True, False]
    # the batch raised, so both items were asked again, with their original prompts
    assert len(engine.calls) == 2 and len(engine.calls[1]) == 2
    assert engine.calls[0] == engine.calls[1]


def test_undecided_after_all_retries_is_none_not_false() -> None:
    judge, engine = make_judge({"Paris": ["hmm", "hmm", "hmm"],
                                "Rome": [RuntimeError("down")] * 3,
                                "Lyon": ["Verdict: incorrect"]}, retries=2, batch_size=1)
    judgements = judge.judge_many([("Capital?", "Paris", "Paris"), ("Capital?", "Paris", "Rome"),
                                   ("Capital?", "Paris", "Lyon")])
    assert [j.verdict for j in judgements] == [None, None, False]
    assert judgements[0].attempts == 3 and judgements[0].reply == "hmm"
    assert judgements[1].error == "RuntimeError: down"
    assert all(not script for script in engine.script.values())


def test_batch_size_splits_calls_and_isolates_a_failing_chunk() -> None:
    judge, engine = make_judge({"a": ["Verdict: correct"], "b": [ValueError("bad"), "Correct"],
                                "c": ["Verdict: incorrect"]}, batch_size=1)
    items = [("q", "a", "a"), ("q", "a", "b"), ("q", "a", "c")]
    assert judge.judge_batch(items) == [True, True, False]
    assert [len(c) for c in engine.calls] == [1, 1, 1, 1]


def test_wrong_number_of_replies_counts_as_a_failed_call() -> None:
    class ShortEngine:
        def __init__(self) -> None:
            self.n = 0

        def chat(self, conversations: Sequence[Any], params: Any) -> list[Reply]:
            self.n += 1
            return [Reply("Verdict: correct")] * (len(conversations) - (self.n == 1))

    judge = JudgeReward(ShortEngine(), params=object())
    assert judge.judge_batch([("q", "g", "x"), ("q", "g", "y")]) == [True, True]


def test_empty_prediction_is_incorrect_without_a_call() -> None:
    judge, engine = make_judge({})
    assert judge.judge_batch([("q", "gold", ""), ("q", "gold", "   ")]) == [False, False]
    assert engine.calls == []


def test_call_returns_reward_results() -> None:
    judge, _ = make_judge({"Paris": ["Verdict: correct"], "Lyon": ["nope", "nope", "nope"]})
    task = Task(question="Capital?", answer="Paris")
    good = judge("Paris", task)
    assert good.score == 1.0 and good.breakdown == {"judge": 1.0} and not good.unjudged
    undecided = judge("Lyon", task)
    assert undecided.unjudged and undecided.score == 0.0
    assert math.isnan(undecided.breakdown["judge"])


def test_score_batch_reads_episode_answers() -> None:
    class Episode:
        turns = ()
        invalid_actions = 0

        def __init__(self, answer: str | None) -> None:
            self.answer = answer

    judge, engine = make_judge({"Paris": ["Verdict: correct"]})
    task = Task(question="Capital?", answer="Paris")
    results = judge.score_batch([Episode("Paris"), Episode(None)], [task, task])
    assert [r.score for r in results] == [1.0, 0.0]
    assert len(engine.calls) == 1 and len(engine.calls[0]) == 1
    with pytest.raises(ValueError, match="one task per episode"):
        judge.score_batch([Episode("x")], [])


def test_system_prompt_and_default_params() -> None:
    captured: list[Any] = []

    class Engine:
        def chat(self, conversations: Sequence[Sequence[Mapping[str, str]]],
                 params: Any) -> list[Reply]:
            captured.append((conversations, params))
            return [Reply("Verdict: correct") for _ in conversations]

    pytest.importorskip("webdancer.agents.engines.base")
    judge = JudgeReward(Engine(), system="You are strict.")
    assert judge("x", Task(question="q", answer="x")).score == 1.0
    conversations, params = captured[0]
    assert conversations[0][0] == {"role": "system", "content": "You are strict."}
    assert params.temperature == 0.0 and params.stop == ()


@pytest.mark.parametrize("kw,match", [({"retries": -1}, "retries"),
                                      ({"batch_size": 0}, "batch_size")])
def test_bad_arguments(kw: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        JudgeReward(ScriptedEngine({}), params=object(), **kw)  # type: ignore[arg-type]


def test_registered_as_judge() -> None:
    factory: Callable[..., Any] = REWARDS.get("judge")
    assert factory is JudgeReward
