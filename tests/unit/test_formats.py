"""Trajectory formats: WebDancer import quirks, round trips, the TRL messages shape, bad lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from webdancer.agents.prompts import build_messages, observation_message
from webdancer.agents.trajectory import Trajectory
from webdancer.data.formats import (
    convert,
    map_queries,
    normalize_function,
    question_from_prompt,
    read_trajectories,
    turns_from_messages,
    write_trajectories,
)
from webdancer.envs.oracle import answer_turn, tool_turn
from webdancer.envs.tasks import Task

QUESTION = "Which race did the horse Santa Claus win in 1964?"
SEARCH_OBS = ("A search for 'Santa Claus 1964' found 2 results:\n\n## Web Results\n"
              "1. [Santa Claus won the Derby](https://x.example/a)")
VISIT_OBS = "Page: Santa Claus\nURL: https://x.example/a\n\nEvidence:\nSanta Claus won the Derby in 1964."


def webdancer_record(queries_key: str = "queries") -> dict:
    """A record shaped like WebDancer's released sample_traj.jsonl, with its quirks."""
    call = {"name": "search", "arguments": {queries_key: ["Santa Claus 1964", "Derby 1964 winner"]}}
    visit = {"name": "visit", "arguments": {"url": ["https://x.example/a"], "goal": "which race"}}
    return {
        "type": "chatml",
        "task": "agent/multiturn_search",
        "messages": [
            {"role": "system", "content": "You are a Web Information Seeking Master.\nCurrent date: 2025-07-18"},
            {"role": "user", "content": "A conversation between User and Assistant.\n<tools>\n{...}\n</tools>\n\n"
                                        "Example response:\n<think> thinking </think>\n\nUser: " + QUESTION},
            {"role": "assistant", "content": "<think>\nLet me search.\n</think>\n<tool_call>\n"
                                             + json.dumps(call) + "\n</tool_call>"},
            {"role": "user", "content": f"<tool_response>\n{SEARCH_OBS}\n</tool_response>"},
            {"role": "assistant", "content": "<think>\nRead the page.\n</think>\n<tool_call>\n"
                                             + json.dumps(visit) + "\n</tool_call>"},
            {"role": "user", "content": f"<tool_response>\n{VISIT_OBS}\n</tool_response>"},
            {"role": "assistant",
             "content": "<think>\nIt is the Derby.\n</think>\n<answer>\nThe Epsom Derby\n</answer>"},
        ],
        "functions": [
            {"name_for_human": "search", "name_for_model": "search",
             "description_for_model": "Performs batched web searches: supply an array 'queries'.",
             "parameters": {"type": "object",
                            "properties": {"queries": {"type": "array", "items": {"type": "string"}}},
                            "required": ["query"]}},
            {"name_for_human": "visit", "name_for_model": "visit", "description_for_model": "Visit webpage(s).",
             "parameters": {"type": "object", "properties": {"url": {"type": "array"}, "goal": {"type": "string"}},
                            "required": ["url", "goal"]}},
        ],
        "tool_calls": [],
        "answer": [["Epsom Derby", "The Derby"]],
        "tag": "e2hqa",
    }


def our_trajectory() -> Trajectory:
    task = Task(QUESTION, "Epsom Derby", id="t-1", meta={"source": "crawlqa", "hops": 1})
    messages = build_messages(QUESTION, date="2025-01-01")
    turns = [tool_turn("Search first.", "search", {"query": ["Santa Claus 1964"]}), None,
             tool_turn("Read it.", "visit", {"url": ["https://x.example/a"], "goal": "race"}), None,
             answer_turn("It is the Derby.", "Epsom Derby")]
    observations = iter([SEARCH_OBS, VISIT_OBS])
    for text in turns:
        messages.append({"role": "assistant", "content": text} if text else observation_message(next(observations)))
    return Trajectory(task=task, messages=messages, turns=turns_from_messages(messages), answer="Epsom Derby",
                      termination="answer", tool_calls=2, reward=1.0, reward_breakdown={"exact_match": 1.0},
                      engine="oracle")


def test_webdancer_stream_import_maps_queries_and_reads_the_task(tmp_path: Path) -> None:
    # The released file is pretty-printed objects one after another, not one per line.
    path = tmp_path / "sample_traj.jsonl"
    path.write_text("".join(json.dumps(r, indent=4) + "\n" for r in (webdancer_record(), webdancer_record())))
    trajs = read_trajectories(path)  # format detected from the first record
    assert len(trajs) == 2
    traj = trajs[0]
    assert traj.task.question == QUESTION
    assert traj.task.answer == "Epsom Derby"
    assert traj.task.meta["tag"] == "e2hqa"
    assert traj.task.meta["answers"] == ["Epsom Derby", "The Derby"]
    search_turn, visit_turn, final = traj.turns
    assert search_turn.kind == "tool" and search_turn.tool == "search" and search_turn.valid
    assert search_turn.arguments == {"query": ["Santa Claus 1964", "Derby 1964 winner"]}
    assert '"queries"' not in traj.messages[2]["content"] and '"query"' in traj.messages[2]["content"]
    assert search_turn.observation == SEARCH_OBS and visit_turn.observation == VISIT_OBS
    assert final.kind == "answer" and final.observation is None
    assert traj.answer == "The Epsom Derby" and traj.termination == "answer"
    assert traj.tool_calls == 2 and traj.invalid_actions == 0 and traj.engine == "webdancer"
    search_schema = traj.task.meta["functions"][0]
    assert search_schema["name"] == "search"
    assert list(search_schema["parameters"]["properties"]) == ["query"]
    assert search_schema["parameters"]["required"] == ["query"]


def test_webdancer_jsonl_reads_the_same_as_the_stream(tmp_path: Path) -> None:
    stream, lines = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    stream.write_text(json.dumps(webdancer_record(), indent=2))
    lines.write_text(json.dumps(webdancer_record()) + "\n\n")
    (a,), (b,) = read_trajectories(stream, "webdancer"), read_trajectories(lines, "webdancer")
    assert a.messages == b.messages and a.task.question == b.task.question


def test_calls_without_the_quirk_keep_their_text_exactly() -> None:
    record = webdancer_record(queries_key="query")
    for message in record["messages"]:
        if message["role"] == "assistant":
            assert map_queries(message["content"]) == message["content"]
    fixed = map_queries('<tool_call>\n{"name": "search", "arguments": "{\\"queries\\": [\\"a\\"]}"}\n</tool_call>')
    assert json.loads(json.loads(fixed.split("\n")[1])["arguments"]) == {"query": ["a"]}


def test_openai_style_tool_schema_is_normalized() -> None:
    schema = {"type": "function", "function": {"name": "search", "description": "d",
                                               "parameters": {"properties": {"queries": {}}, "required": ["queries"]}}}
    assert normalize_function(schema) == {"name": "search", "description": "d",
                                          "parameters": {"properties": {"query": {}}, "required": ["query"]}}


def test_round_trip_ours_to_webdancer_and_back_keeps_messages(tmp_path: Path) -> None:
    traj = our_trajectory()
    ours, wd, back = tmp_path / "ours.jsonl", tmp_path / "wd.jsonl", tmp_path / "back.jsonl"
    write_trajectories([traj], ours)
    assert read_trajectories(ours)[0].to_dict() == traj.to_dict()  # our own format is lossless
    assert convert(ours, wd, "trajectory", "webdancer") == 1
    record = json.loads(wd.read_text())
    assert record["type"] == "chatml" and record["task"] == "agent/multiturn_search"
    assert record["answer"] == [["Epsom Derby"]] and record["tag"] == "crawlqa" and record["tool_calls"] == []
    assert [f["name_for_model"] for f in record["functions"]] == ["search", "visit"]
    assert convert(wd, back, "auto", "trajectory") == 1
    again = read_trajectories(back)[0]
    assert again.messages == traj.messages
    assert (again.task.question, again.task.answer, again.task.id) == (QUESTION, "Epsom Derby", "t-1")
    assert [(t.kind, t.tool, t.arguments, t.observation) for t in again.turns] == \
           [(t.kind, t.tool, t.arguments, t.observation) for t in traj.turns]
    assert again.answer == traj.answer


def test_messages_export_has_the_exact_trl_shape(tmp_path: Path) -> None:
    traj = our_trajectory()
    path = tmp_path / "sft.jsonl"
    write_trajectories([traj, traj], path, "messages")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert set(row) == {"messages"}
        assert all(set(m) == {"role", "content"} and isinstance(m["content"], str) for m in row["messages"])
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
        assert row["messages"] == traj.messages
    write_trajectories([traj], path, "messages", tools=True)
    tools = json.loads(path.read_text())["tools"]
    assert [t["type"] for t in tools] == ["function", "function"]
    assert tools[0]["function"]["name"] == "search" and "query" in tools[0]["function"]["parameters"]["properties"]
    back = read_trajectories(path)[0]
    assert back.task.question == QUESTION and back.messages == traj.messages and back.answer == "Epsom Derby"


def test_question_from_prompt() -> None:
    assert question_from_prompt("tools...\n\nQuestion: What is X?") == "What is X?"
    assert question_from_prompt("A conversation.\nExample: User: no\n\nUser: Who is Y?") == "Who is Y?"
    assert question_from_prompt("  Who is Z?  ") == "Who is Z?"


def test_bad_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(webdancer_record()) + "\n{not json\n")
    with pytest.raises(ValueError, match=rf"{path}:2: not valid JSON .*fix or remove the line"):
        read_trajectories(path)


def test_bad_record_names_file_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "Q?"}]})
    path.write_text(good + "\n" + json.dumps({"messages": [{"role": "user"}]}) + "\n")
    with pytest.raises(ValueError, match=rf"{path}:2: message 0 needs a string 'role' and a string 'content'"):
        read_trajectories(path, "messages")
    wd = tmp_path / "wd.jsonl"
    wd.write_text(json.dumps(webdancer_record()) + "\n")
    with pytest.raises(ValueError, match=rf"{wd}:1: .*looks like the 'webdancer' format"):
        read_trajectories(wd, "trajectory")


def test_broken_pretty_printed_record_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "stream.jsonl"
    text = json.dumps(webdancer_record(), indent=4)
    path.write_text(text + "\n" + "{\n    \"type\": \"chatml\",\n    \"messages\": [\n")
    first_line_of_second = text.count("\n") + 2
    with pytest.raises(ValueError, match=rf"record starting at line {first_line_of_second}"):
        read_trajectories(path)
