"""Parse one assistant turn of the ReAct protocol.

A valid turn is ``<think>...</think>`` followed by exactly one of

    <tool_call>{"name": "search", "arguments": {"query": ["..."]}}</tool_call>
    <answer>...</answer>

Parsing never raises: anything else becomes a ``ParsedTurn`` of kind ``"invalid"``
whose ``error`` tells the model what a valid turn looks like.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

MAX_TURN_CHARS = 200_000  # longer turns are refused before any regex or JSON work
MAX_JSON_CHARS = 50_000

THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
RESPONSE_OPEN = "<tool_response>"

CALL_EXAMPLE = '<tool_call>\n{"name": "search", "arguments": {"query": ["your query"]}}\n</tool_call>'
VALID_TURN_HINT = (
    "A valid turn is <think>your reasoning</think> followed by exactly one tool call, e.g. "
    f"{CALL_EXAMPLE}, or by <answer>your final answer</answer>."
)

Kind = Literal["tool", "answer", "invalid"]


@dataclass(frozen=True)
class ParsedTurn:
    """One assistant turn, parsed. ``kind`` decides which fields are set."""

    kind: Kind
    raw: str
    think: str | None = None
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None
    error: str | None = None
    # protocol facts the format reward reads
    n_tool_calls: int = 0
    n_answers: int = 0
    wrote_tool_response: bool = False

    @property
    def valid(self) -> bool:
        return self.kind != "invalid"

    @property
    def has_think(self) -> bool:
        return bool(self.think and self.think.strip())


def _blocks(text: str, open_tag: str, close_tag: str) -> tuple[list[str], bool]:
    """Contents of every ``open_tag ... close_tag`` block, in order.

    A block left open at the very end counts (generation may stop right at the
    closing stop string); an unclosed block followed by more text is a fault.
    """
    out: list[str] = []
    pos = 0
    while True:
        start = text.find(open_tag, pos)
        if start < 0:
            return out, True
        body_start = start + len(open_tag)
        end = text.find(close_tag, body_start)
        if end < 0:
            out.append(text[body_start:])
            return out, True
        inner = text[body_start:end]
        if open_tag in inner:  # nested or a second opening before the close
            return out + [inner], False
        out.append(inner)
        pos = end + len(close_tag)


def _decode_call(body: str) -> tuple[str | None, dict[str, Any], str | None]:
    """-> (tool name, arguments, error)."""
    body = body.strip()
    if body.startswith("```"):  # some models fence their JSON
        body = body.strip("`").removeprefix("json").strip()
    if len(body) > MAX_JSON_CHARS:
        return None, {}, f"The tool call is {len(body)} characters long; keep it under {MAX_JSON_CHARS}."
    try:
        call = json.loads(body)
    except (ValueError, RecursionError):
        return None, {}, 'The tool call is not valid JSON; it must be a JSON object with "name" and "arguments".'
    if not isinstance(call, dict):
        return None, {}, 'The tool call must be a JSON object with "name" and "arguments".'
    name = call.get("name")
    if not isinstance(name, str) or not name.strip():
        return None, {}, 'The tool call has no "name"; give the tool name as a string.'
    arguments = call.get("arguments", call.get("parameters", {}))
    if isinstance(arguments, str):  # arguments sent as a JSON string
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            return name, {}, f'The "arguments" of {name} are not valid JSON.'
    if not isinstance(arguments, dict):
        return name, {}, f'The "arguments" of {name} must be a JSON object.'
    return name.strip(), arguments, None


def _invalid(raw: str, error: str, **facts: Any) -> ParsedTurn:
    return ParsedTurn(kind="invalid", raw=raw, error=f"{error} {VALID_TURN_HINT}", **facts)


def parse_turn(text: str) -> ParsedTurn:
    """Parse one assistant turn into a tool call, an answer, or an invalid turn."""
    if not isinstance(text, str):
        return _invalid(repr(text)[:200], "The turn is not text.")
    if len(text) > MAX_TURN_CHARS:
        return _invalid(text[:1000], f"The turn is {len(text)} characters long; keep it under {MAX_TURN_CHARS}.")
    raw = text
    wrote_response = RESPONSE_OPEN in text
    if wrote_response:  # the environment writes tool responses; anything after is ignored
        text = text[: text.index(RESPONSE_OPEN)]
    think_match = THINK_RE.search(text)
    think = think_match.group(1).strip() if think_match else None
    rest = THINK_RE.sub("", text)
    calls, calls_ok = _blocks(rest, TOOL_OPEN, TOOL_CLOSE)
    answers, answers_ok = _blocks(rest, ANSWER_OPEN, ANSWER_CLOSE)
    facts = {"think": think, "n_tool_calls": len(calls), "n_answers": len(answers),
             "wrote_tool_response": wrote_response}
    if not (calls_ok and answers_ok):
        return _invalid(raw, "A <tool_call> or <answer> tag is nested or left open.", **facts)
    if calls and answers:
        return _invalid(raw, "The turn has both a tool call and an answer; write only one.", **facts)
    if len(calls) > 1:
        return _invalid(raw, f"The turn has {len(calls)} tool calls; make one call per turn.", **facts)
    if len(answers) > 1:
        return _invalid(raw, "The turn has more than one answer; give one.", **facts)
    if answers:
        answer = answers[0].strip()
        if not answer:
            return _invalid(raw, "The answer is empty.", **facts)
        return ParsedTurn(kind="answer", raw=raw, answer=answer, **facts)
    if not calls:
        return _invalid(raw, "The turn has neither a tool call nor an answer.", **facts)
    name, arguments, error = _decode_call(calls[0])
    if error:
        return ParsedTurn(kind="invalid", raw=raw, tool=name, error=f"{error} Example: {CALL_EXAMPLE}", **facts)
    if name == "answer":  # the answer tool is the tag in JSON form
        answer = arguments.get("answer")
        if not isinstance(answer, str) or not answer.strip():
            return _invalid(raw, 'The answer tool needs {"answer": "..."} with a non-empty string.', **facts)
        return ParsedTurn(kind="answer", raw=raw, answer=answer.strip(), tool="answer", arguments=arguments,
                          **facts)
    return ParsedTurn(kind="tool", raw=raw, tool=name, arguments=arguments, **facts)
