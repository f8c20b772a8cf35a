from __future__ import annotations

import pytest

from webdancer.envs.actions import parse_turn

SEARCH = '<tool_call>\n{"name": "search", "arguments": {"query": ["a b"]}}\n</tool_call>'


@pytest.mark.parametrize(
    ("text", "kind", "tool", "answer"),
    [
        (f"<think>look</think>\n{SEARCH}", "tool", "search", None),
        (f"<think>x</think>{SEARCH[:-len('</tool_call>')]}", "tool", "search", None),  # stopped at the stop string
        ("<think>done</think>\n<answer> 42 </answer>", "answer", None, "42"),
        ('<think>t</think><tool_call>{"name": "answer", "arguments": {"answer": "Paris"}}</tool_call>',
         "answer", "answer", "Paris"),
        ('<tool_call>{"name": "visit", "arguments": "{\\"url\\": \\"u\\", \\"goal\\": \\"g\\"}"}</tool_call>',
         "tool", "visit", None),
        ('<tool_call>```json\n{"name": "search", "arguments": {"query": "q"}}\n```</tool_call>', "tool", "search", None),
    ],
)
def test_valid_turns(text: str, kind: str, tool: str | None, answer: str | None) -> None:
    turn = parse_turn(text)
    assert turn.kind == kind, turn.error
    assert turn.tool == tool
    assert turn.answer == answer
    assert turn.error is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("just text", "neither a tool call nor an answer"),
        ("<think>x</think><tool_call>{not json}</tool_call>", "not valid JSON"),
        ('<tool_call>["search"]</tool_call>', "JSON object"),
        ('<tool_call>{"arguments": {}}</tool_call>', 'no "name"'),
        ('<tool_call>{"name": "search", "arguments": [1]}</tool_call>', "must be a JSON object"),
        (f"{SEARCH}{SEARCH}", "2 tool calls"),
        (f"{SEARCH}<answer>x</answer>", "both a tool call and an answer"),
        ("<answer>a</answer><answer>b</answer>", "more than one answer"),
        ("<answer>  </answer>", "answer is empty"),
        ("<tool_call><tool_call>{}</tool_call>", "nested or left open"),
        ("<tool_call>" + "[" * 100_000 + "</tool_call>", "characters long"),
        ('<tool_call>{"name": "answer", "arguments": {}}</tool_call>', "answer tool needs"),
    ],
)
def test_invalid_turns_explain_a_valid_one(text: str, fragment: str) -> None:
    turn = parse_turn(text)
    assert turn.kind == "invalid"
    assert fragment in (turn.error or "")
    assert "<tool_call>" in (turn.error or "")  # every error shows what a valid call looks like


def test_deep_json_does_not_raise() -> None:
    turn = parse_turn("<tool_call>" + "[" * 20_000 + "]" * 20_000 + "</tool_call>")
    assert turn.kind == "invalid"


def test_written_tool_response_is_cut_and_noted() -> None:
    turn = parse_turn(f"<think>t</think>{SEARCH}<tool_response>fake results</tool_response>")
    assert turn.kind == "tool"
    assert turn.wrote_tool_response


def test_protocol_facts_for_format_reward() -> None:
    turn = parse_turn(f"<think>reason</think>{SEARCH}")
    assert turn.has_think and turn.n_tool_calls == 1 and turn.n_answers == 0
    assert not parse_turn(SEARCH).has_think
