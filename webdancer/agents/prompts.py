"""Prompts of the ReAct web agent, rendered through the tokenizer's own chat template.

Two styles: ``webdancer`` (a full system prompt and the tool list as JSON schemas in
the user turn, the layout the reference agent uses, in our own words) and
``compact`` (a few lines, for small models with short contexts). Tool output comes
back as a user turn wrapped in ``<tool_response>`` by default, or as the template's
``tool`` role when ``tool_role=True``.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from typing import Any

from webdancer.envs.tools import tool_schemas

Message = dict[str, str]

WEBDANCER_SYSTEM = """You are a web research agent. You answer hard questions by searching the web and reading pages, step by step.

Work by these principles:
1. Persist: a hard question may take many searches and visits; keep going until the evidence is clear.
2. Cross-check: confirm important facts on more than one page before you answer.
3. Be precise: read the details, note the source of every fact, and prefer reliable pages.

Today's date is {date}."""

WEBDANCER_USER = """You can use these tools:
<tools>
{tools}
</tools>

Each of your turns starts with your reasoning inside <think></think>. Then either call one tool:
<tool_call>
{{"name": "tool name", "arguments": {{...}}}}
</tool_call>
and wait for its result, which comes back inside <tool_response></tool_response>; or, once you are sure, give the final answer:
<answer>your answer</answer>

Example:
<think>I need the founding year of the company. Let me search for it.</think>
<tool_call>
{{"name": "search", "arguments": {{"query": ["company founding year"]}}}}
</tool_call>

Question: {question}"""

COMPACT_SYSTEM = ("Answer the question using the tools search and visit. Think in <think></think>, then "
                  "call one tool in <tool_call></tool_call> or answer in <answer></answer>.")
COMPACT_USER = "{question}"

STYLES = {"webdancer": (WEBDANCER_SYSTEM, WEBDANCER_USER), "compact": (COMPACT_SYSTEM, COMPACT_USER)}


def build_messages(question: str, tools: Sequence[str] = ("search", "visit"), *, style: str = "webdancer",
                   date: str | None = None) -> list[Message]:
    """The opening system + user messages for ``question``."""
    if style not in STYLES:
        raise ValueError(f"prompt style {style!r} is unknown; use one of: {', '.join(STYLES)}.")
    system, user = STYLES[style]
    date = date or _dt.date.today().isoformat()
    schemas = "\n".join(json.dumps(s["function"], ensure_ascii=False) for s in tool_schemas(tools))
    return [
        {"role": "system", "content": system.format(date=date)},
        {"role": "user", "content": user.format(tools=schemas, question=question)},
    ]


def observation_message(text: str, *, tool_role: bool = False) -> Message:
    """The message that carries a tool's output back to the model."""
    if tool_role:
        return {"role": "tool", "content": text}
    return {"role": "user", "content": f"<tool_response>\n{text}\n</tool_response>"}


def render_text(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool) -> str:
    """The conversation as the chat template writes it."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of template text (special tokens already written in it)."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    return encode(tokenizer, render_text(tokenizer, messages, add_generation_prompt=True))
