"""The three-stage filter: every rule on hand-built trajectories, counts and the report."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest

from webdancer.agents.engines.base import ChatGeneration
from webdancer.agents.trajectory import Trajectory, TurnRecord
from webdancer.data.filtering import (
    ChatQualityJudge,
    FilterConfig,
    has_evidence,
    parse_quality_verdict,
    three_stage_filter,
)
from webdancer.envs.tasks import Task

TASK = Task("What is the capital of Veloria?", "Port Amsel", id="q1")
HIT = "Veloria - SynthWiki: the capital of Veloria is Port Amsel."
MISS = "Veloria - SynthWiki: a country in the north."


def search(query: str, obs: str = MISS, **kw) -> TurnRecord:
    return TurnRecord(text=f"<think>s</think><tool_call>{query}</tool_call>", kind="tool", tool="search",
                      arguments={"query": [query]}, has_think=True, n_tool_calls=1, observation=obs, **kw)


def answer(text: str = "Port Amsel", **kw) -> TurnRecord:
    kw.setdefault("has_think", True)
    return TurnRecord(text=f"<think>a</think><answer>{text}</answer>", kind="answer", n_answers=1, **kw)


def traj(name: str, turns: list[TurnRecord], *, ids: int = 0, engine: str = "e1", task: Task = TASK) -> Trajectory:
    final = turns[-1] if turns else None
    ans = final.text.split("<answer>")[1].split("</answer>")[0] if final and final.kind == "answer" else None
    messages = [{"role": "user", "content": task.question}] + [{"role": "assistant", "content": t.text} for t in turns]
    return Trajectory(task=replace(task, meta={"name": name}), messages=messages, turns=turns, answer=ans,
                      termination="answer" if ans else "call_budget_exhausted", ids=list(range(ids)),
                      tool_calls=sum(t.kind == "tool" for t in turns), engine=engine,
                      invalid_actions=sum(not t.valid for t in turns))


CASES = {
    # name: (trajectory, stage that drops it, rule) ; stage None = kept
    "good": (traj("good", [search("veloria", HIT), answer()]), None, None),
    "good_e2": (traj("good_e2", [search("veloria"), search("veloria capital", HIT), answer()], engine="e2"),
                None, None),
    "no_turns": (traj("no_turns", []), "validity", "no_turns"),
    "invalid": (traj("invalid", [search("x", valid=False, error="bad"), search("y", HIT), answer()]),
                "validity", "invalid_action"),
    "no_think": (traj("no_think", [search("veloria", HIT), answer(has_think=False)]), "validity", "format"),
    "wrote_response": (traj("wrote_response", [search("veloria", HIT, wrote_tool_response=True), answer()]),
                       "validity", "format"),
    "no_answer": (traj("no_answer", [search("veloria", HIT)]), "validity", "no_answer"),
    "too_many_turns": (traj("too_many_turns", [search(f"q{i}") for i in range(4)] + [answer()]),
                       "validity", "too_many_turns"),
    "too_many_tokens": (traj("too_many_tokens", [search("veloria", HIT), answer()], ids=51),
                        "validity", "too_many_tokens"),
    "too_many_chars": (traj("too_many_chars", [search("v" * 3000, HIT), answer()]), "validity", "too_many_chars"),
    "wrong": (traj("wrong", [search("veloria", HIT), answer("Lyon")]), "correctness", "wrong_answer"),
    "too_few_calls": (traj("too_few_calls", [answer()]), "quality", "too_few_tool_calls"),
    "too_many_calls": (traj("too_many_calls", [search("a"), search("b"), search("c", HIT), answer()]),
                       "quality", "too_many_tool_calls"),
    "repeated": (traj("repeated", [search("veloria"), search("veloria", HIT), answer()]), "quality",
                 "repeated_call"),
    "no_evidence": (traj("no_evidence", [search("veloria"), answer()]), "quality", "answer_before_evidence"),
    "judged_bad": (traj("judged_bad", [search("veloria", HIT), answer()], engine="e2"), "quality",
                   "quality_judge"),
}

CFG = FilterConfig(max_turns=4, max_tokens=50, max_chars=2000, min_tool_calls=1, max_tool_calls=2)


def drop_named_judged_bad(trajectories: Sequence[Trajectory]) -> list[str | None]:
    return ["looks careless" if t.task.meta["name"] == "judged_bad" else None for t in trajectories]


def test_every_rule_drops_at_its_stage_and_counts_add_up() -> None:
    trajs = [case[0] for case in CASES.values()]
    report = three_stage_filter(trajs, replace(CFG, quality_judge=drop_named_judged_bad))
    assert sorted(t.task.meta["name"] for t in report.kept) == ["good", "good_e2"]
    got = {t.task.meta["name"]: (stage, reason.split(":")[0])
           for stage, items in report.dropped_by_stage.items() for t, reason in items}
    want = {name: (stage, rule) for name, (_, stage, rule) in CASES.items() if stage}
    assert got == want
    assert report.counts == {"input": 16, "validity": 8, "correctness": 7, "quality": 2}
    assert report.reasons["validity"] == {"format": 2, "no_turns": 1, "invalid_action": 1, "no_answer": 1,
                                          "too_many_turns": 1, "too_many_tokens": 1, "too_many_chars": 1}
    assert report.reasons["quality"]["quality_judge"] == 1
    assert report.per_engine() == {"e1": {"input": 14, "validity": 6, "correctness": 5, "quality": 1},
                                   "e2": {"input": 2, "validity": 2, "correctness": 2, "quality": 1}}


def test_report_markdown_and_json_carry_the_counts(tmp_path) -> None:
    report = three_stage_filter([case[0] for case in CASES.values()], CFG)
    md = report.to_markdown()
    assert "Kept **3** of 16 trajectories" in md
    assert "| validity | 16 | 8 | 8 |" in md
    assert "| correctness | 8 | 1 | 7 |" in md
    assert "| quality | 7 | 4 | 3 |" in md
    assert "| quality | repeated_call | 1 |" in md
    assert "| e1 | 14 | 6 | 5 | 1 |" in md and "| e2 | 2 | 2 | 2 | 2 |" in md
    md_path, json_path = report.write(tmp_path)
    data = json.loads(json_path.read_text())
    assert data["counts"] == report.counts and md_path.read_text() == md
    assert data["config"]["max_tool_calls"] == 2


def test_rules_switch_off() -> None:
    lax = FilterConfig(require_think=False, require_no_invalid=False, min_tool_calls=0, no_repeated_calls=False,
                       no_answer_before_evidence=False)
    names = ["invalid", "no_think", "too_few_calls", "repeated", "no_evidence"]
    report = three_stage_filter([CASES[n][0] for n in names], lax)
    assert report.counts["quality"] == 5


def test_gold_answers_come_from_tasks_by_id_then_question() -> None:
    t = CASES["wrong"][0]  # answered "Lyon"
    by_id = [Task("another wording", "Lyon", id="q1")]
    assert three_stage_filter([t], replace(CFG, no_answer_before_evidence=False), by_id).counts["correctness"] == 1
    by_question = [Task(TASK.question, "Lyon", id="other")]
    assert three_stage_filter([t], replace(CFG, no_answer_before_evidence=False), by_question).counts[
        "correctness"] == 1


def test_evidence_matches_whole_tokens_after_normalization() -> None:
    t = traj("n", [search("q", "The population is 12,345 people."), answer("12,345")], task=Task("Q?", "12,345"))
    assert has_evidence(t, "12,345")
    partial = traj("p", [search("q", "The population is 123 people."), answer("12")], task=Task("Q?", "12"))
    assert not has_evidence(partial, "12")
    after = traj("a", [answer("Port Amsel"), search("q", HIT)])
    assert not has_evidence(after, "Port Amsel")  # evidence after the answer does not count


class ScriptedChat:
    """A ChatEngine that answers each conversation by a rule on its first message (the prompt);
    a retried conversation (the judge appends a reminder) gets the same answer again."""

    def __init__(self, rule) -> None:
        self.rule = rule
        self.calls = 0

    def chat(self, conversations: Sequence[Sequence[Mapping[str, str]]], params) -> list[ChatGeneration]:
        self.calls += 1
        return [ChatGeneration(self.rule(c[0]["content"]), "stop") for c in conversations]


def test_judge_correctness_is_batched_and_unjudged_is_dropped() -> None:
    def verdict(prompt: str) -> str:
        if "Predicted answer: Port Amsel" in prompt:
            return "Same city.\nVerdict: correct"
        return "I am not sure." if "Predicted answer: Lyon" in prompt else "Verdict: incorrect"

    engine = ScriptedChat(verdict)
    trajs = [CASES["good"][0], CASES["wrong"][0], traj("other", [search("v", HIT), answer("Berlin")])]
    report = three_stage_filter(trajs, FilterConfig(reward="judge", judge_engine=engine))
    reasons = {t.task.meta["name"]: r.split(":")[0] for t, r in report.dropped_by_stage["correctness"]}
    assert reasons == {"wrong": "unjudged", "other": "wrong_answer"}
    assert [t.task.meta["name"] for t in report.kept] == ["good"]
    assert engine.calls == 3  # one batch, then two retries for the undecided item
    with pytest.raises(ValueError, match="judge_engine"):
        FilterConfig(reward="judge")
    with pytest.raises(KeyError, match="unknown reward"):
        FilterConfig(reward="nope")


def test_chat_quality_judge_reads_keep_and_drop() -> None:
    replies = {"good": "Fine.\n**Verdict: keep**", "good_e2": "Verdict: drop", "repeated": "no idea"}

    def rule(prompt: str) -> str:
        return next(reply for name, reply in replies.items() if f"[[{name}]]" in prompt)

    judge = ChatQualityJudge(ScriptedChat(rule), prompt="[[{question}]] {gold} {trajectory}")
    trajs = [traj(n, [search("veloria", HIT), answer()], task=Task(f"[[{n}]]", "x")) for n in replies]
    assert judge(trajs) == [None, "judged low quality", "no verdict"]
    assert parse_quality_verdict("Verdict: drop\nVerdict: keep") is True


@pytest.mark.parametrize("text,expected", [
    ("## Verdict: KEEP", True), ("> `verdict` - drop, it guesses", False), ("- *Verdict*: keep", True),
    ("keep", None), ("The verdict: keep", None), ("Verdict: correct", None),
])
def test_parse_quality_verdict_reads_decorated_lines(text: str, expected: bool | None) -> None:
    assert parse_quality_verdict(text) is expected
