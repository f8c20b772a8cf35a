"""Trajectory datasets in and out: our JSONL, WebDancer's released format, chat messages.

One record per trajectory in each format:

``trajectory``  ``Trajectory.to_dict()`` per line: task, messages, token ids, loss
                mask, logprobs, parsed turns, reward breakdown. Lossless.
``webdancer``   WebDancer's released SFT format (``sample_traj.jsonl``)::

                    {"type": "chatml", "task": "agent/multiturn_search",
                     "messages": [system, user, assistant, user, ..., assistant],
                     "functions": [...], "tool_calls": [], "answer": [["gold"]], "tag": "e2hqa"}

                Assistant turns are ``<think>…</think>\\n<tool_call>\\n{json}\\n</tool_call>``
                and finally ``<think>…</think>\\n<answer>…</answer>``; tool output comes back
                as user turns ``<tool_response>\\n…\\n</tool_response>``. On export we add
                ``question`` and ``id`` (the released rows carry the question only inside
                the user prompt); readers of the released format ignore them.
``messages``    ``{"messages": [{"role": ..., "content": ...}, ...]}``, optionally with
                ``"tools"`` (OpenAI function schemas): the conversational format TRL's
                ``SFTTrainer`` reads, and LLaMA-Factory's ``sharegpt`` formatting with the
                OpenAI-style tags (``messages``/``role``/``content``). Tool output stays a
                user turn, so roles alternate as both expect; train on assistant turns only
                (TRL ``assistant_only_loss``, LLaMA-Factory's default) to mask tool output
                from the loss as WebDancer does.

Import quirks of the released WebDancer file:

- it is a stream of pretty-printed JSON objects rather than one object per line
  (plain JSONL and JSON arrays are read too);
- ``task`` is the task type (``"agent/multiturn_search"``), not the question: the
  question is read from ``question`` when present, else from the first user message
  after its last ``User:`` / ``Question:`` marker;
- ``answer`` is a nested list of acceptable answers (``[["Derby"]]``): the first is
  the gold answer, all of them go to ``task.meta["answers"]``;
- ``functions`` use ``name_for_model`` / ``description_for_model`` and call the search
  parameter ``queries`` while the prompt and the tool calls use ``query``: schemas and
  tool calls inside assistant messages are mapped to ``query``.

Every reader reports a malformed record as ``file:line: what is wrong; the fix``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from webdancer.agents.trajectory import Trajectory, TurnRecord
from webdancer.envs.actions import parse_turn
from webdancer.envs.tasks import Task
from webdancer.envs.tools import TOOLS, tool_schemas

log = logging.getLogger("webdancer.data")

FORMATS = ("trajectory", "webdancer", "messages")
WEBDANCER_TASK = "agent/multiturn_search"
DEFAULT_TOOLS = ("search", "visit")
ROLES = ("system", "user", "assistant", "tool")

_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_QUESTION_MARKER = re.compile(r"^(?:Question|User)\s*:[ \t]*", re.MULTILINE | re.IGNORECASE)
_RESPONSE = re.compile(r"\A\s*<tool_response>\n?(.*?)\n?</tool_response>\s*\Z", re.DOTALL)


# ---------------------------------------------------------------- reading records


def iter_records(path: str | Path) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for each JSON record of ``path``; ``where`` is ``file:line``.

    JSONL is read line by line. A file whose first line is a lone ``{`` or that starts
    with ``[`` is read as a stream of (pretty-printed) JSON values or as one array.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; check the path.")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    first_line = stripped.split("\n", 1)[0].strip()
    if stripped.startswith("[") or first_line == "{":
        yield from _iter_stream(path, text)
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                             "fix or remove the line.") from None


def _iter_stream(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    decoder = json.JSONDecoder()
    pos, n = 0, len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n,[]":  # separators of a stream or an array
            pos += 1
        if pos >= n:
            return
        lineno = text.count("\n", 0, pos) + 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg}) in the record starting at line "
                             f"{lineno}; fix or remove that record.") from None
        yield f"{path}:{lineno}", value


def detect_format(record: Any) -> str | None:
    """Which of ``FORMATS`` a record looks like, or None."""
    if not isinstance(record, Mapping):
        return None
    if isinstance(record.get("task"), Mapping) and "turns" in record:
        return "trajectory"
    if record.get("type") == "chatml" or "functions" in record or "tag" in record:
        return "webdancer"
    if isinstance(record.get("messages"), list):
        return "messages"
    return None


def read_trajectories(path: str | Path, fmt: str = "auto") -> list[Trajectory]:
    """Every trajectory in ``path``; ``fmt`` is one of ``FORMATS`` or ``"auto"`` (by the first record)."""
    if fmt not in (*FORMATS, "auto"):
        raise ValueError(f"format {fmt!r} is unknown; use one of: auto, {', '.join(FORMATS)}.")
    out: list[Trajectory] = []
    for index, (where, record) in enumerate(iter_records(path)):
        if fmt == "auto":
            fmt = detect_format(record) or "auto"
            if fmt == "auto":
                raise ValueError(f"{where}: cannot tell the format of this record; pass the format "
                                 f"(one of {', '.join(FORMATS)}).")
        out.append(_READERS[fmt](record, where, index))
    if not out:
        log.warning("%s holds no trajectories", path)
    return out


def _from_trajectory(record: Any, where: str, index: int) -> Trajectory:
    if not isinstance(record, Mapping) or not isinstance(record.get("task"), Mapping):
        raise ValueError(f"{where}: not a trajectory record (no 'task' object){_format_hint(record)}.")
    try:
        return Trajectory.from_dict(record)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{where}: not a trajectory record ({e}); write records with Trajectory.to_dict() "
                         "or pass the format they are in.") from None


def _format_hint(record: Any) -> str:
    fmt = detect_format(record)
    if fmt is None:
        return "; fix the record"
    return f"; it looks like the {fmt!r} format, so pass that format instead"


# ---------------------------------------------------------------- conversations -> turns


def check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """Validate the messages of one record (a non-empty list of string roles and contents,
    known roles); -> plain ``{"role", "content"}`` dicts. ``where`` names the record in errors."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects; fix the record.")
    out = []
    for i, message in enumerate(messages):
        if not (isinstance(message, Mapping) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise ValueError(f"{where}: message {i} needs a string 'role' and a string 'content'; fix the record.")
        if message["role"] not in ROLES:
            raise ValueError(f"{where}: message {i} has role {message['role']!r}; use one of {', '.join(ROLES)}.")
        out.append({"role": message["role"], "content": message["content"]})
    return out


def _check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    out = check_messages(messages, where)
    if not any(m["role"] == "user" for m in out):
        raise ValueError(f"{where}: the conversation has no user message with the question; fix the record.")
    return out


def unwrap_tool_response(content: str) -> str:
    """The text inside ``<tool_response>\\n…\\n</tool_response>`` (the content itself when unwrapped)."""
    match = _RESPONSE.match(content)
    return match.group(1) if match else content


def turns_from_messages(messages: Sequence[Mapping[str, str]]) -> list[TurnRecord]:
    """Parse each assistant message into a ``TurnRecord``; the message after it is its observation.

    Validity is what the text shows: the protocol (``parse_turn``) and a tool name the
    registry knows. Whether the tool call succeeded is not recorded in a conversation.
    """
    turns: list[TurnRecord] = []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "assistant":
            parsed = parse_turn(content)
            valid, error = parsed.valid, parsed.error
            if parsed.kind == "tool" and parsed.tool not in TOOLS:
                valid, error = False, f"Unknown tool {parsed.tool!r}."
            turns.append(TurnRecord(
                text=content, kind=parsed.kind, tool=parsed.tool,
                arguments=dict(parsed.arguments), valid=valid, error=error, has_think=parsed.has_think,
                n_tool_calls=parsed.n_tool_calls, n_answers=parsed.n_answers,
                wrote_tool_response=parsed.wrote_tool_response))
        elif turns and turns[-1].observation is None and role in ("user", "tool"):
            turns[-1].observation = unwrap_tool_response(content)
    return turns


def trajectory_from_messages(messages: Sequence[Mapping[str, str]], task: Task, *, engine: str,
                             group: int = 0) -> Trajectory:
    """A text-only ``Trajectory`` (no token ids, no reward yet) from a conversation."""
    turns = turns_from_messages(messages)
    answer = None
    if turns and turns[-1].kind == "answer":
        answer = parse_turn(turns[-1].text).answer
    return Trajectory(
        task=task, group=group, messages=[dict(m) for m in messages], turns=turns, answer=answer,
        termination="answer" if answer is not None else "no_answer",
        tool_calls=sum(t.kind == "tool" for t in turns), invalid_actions=sum(not t.valid for t in turns),
        engine=engine)


def question_from_prompt(text: str) -> str:
    """The question in a prompt: the text after its last ``Question:`` or ``User:`` line
    marker, or the whole prompt when it has neither (a bare question)."""
    markers = list(_QUESTION_MARKER.finditer(text))
    return (text[markers[-1].end():] if markers else text).strip()


def _flatten_answers(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [a for item in value for a in _flatten_answers(item)]
    text = str(value).strip()
    return [text] if text else []


def _question(record: Mapping[str, Any], messages: Sequence[Mapping[str, str]], where: str) -> str:
    question = record.get("question", record.get("query"))
    if isinstance(question, str) and question.strip():
        return question.strip()
    first_user = next(m["content"] for m in messages if m["role"] == "user")
    question = question_from_prompt(first_user)
    if question:
        return question
    task = record.get("task")
    if isinstance(task, str) and " " in task.strip():  # a question, not a task type like agent/...
        return task.strip()
    raise ValueError(f"{where}: no question found in 'question' or the first user message; add a 'question'.")


def _task(record: Mapping[str, Any], messages: Sequence[Mapping[str, str]], where: str, index: int,
          source: str) -> Task:
    answers = _flatten_answers(record.get("answer", record.get("answers")))
    meta: dict[str, Any] = {"source": source}
    if isinstance(record.get("tag"), str):
        meta["tag"] = record["tag"]
    if len(answers) > 1:
        meta["answers"] = answers
    functions = record.get("functions", record.get("tools"))
    if isinstance(functions, list) and functions:
        meta["functions"] = [normalize_function(f, where) for f in functions]
    task_id = record.get("id")
    return Task(question=_question(record, messages, where), answer=answers[0] if answers else "",
                id=str(task_id) if task_id not in (None, "") else f"{source}-{index}", meta=meta)


# ---------------------------------------------------------------- WebDancer's format


def normalize_function(schema: Any, where: str = "function") -> dict[str, Any]:
    """One tool schema as ``{"name", "description", "parameters"}``, from WebDancer's
    ``name_for_model``/``description_for_model`` style or OpenAI's ``{"type": "function",
    "function": {...}}``; the search parameter ``queries`` becomes ``query``."""
    if isinstance(schema, Mapping) and isinstance(schema.get("function"), Mapping):
        schema = schema["function"]
    if not isinstance(schema, Mapping):
        raise ValueError(f"{where}: a function schema must be a JSON object; fix the record.")
    name = schema.get("name") or schema.get("name_for_model") or schema.get("name_for_human")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: a function schema has no name; give it 'name' or 'name_for_model'.")
    description = schema.get("description", schema.get("description_for_model", ""))
    parameters = json.loads(json.dumps(schema.get("parameters", {})))  # a deep copy we may edit
    if name == "search" and isinstance(parameters, dict):
        props = parameters.get("properties")
        if isinstance(props, dict) and "queries" in props and "query" not in props:
            props["query"] = props.pop("queries")
        required = parameters.get("required")
        if isinstance(required, list):
            parameters["required"] = list(dict.fromkeys("query" if r == "queries" else r for r in required))
    return {"name": name, "description": str(description), "parameters": parameters}


def map_queries(content: str) -> str:
    """``content`` with every search call's ``"queries"`` argument renamed ``"query"``;
    calls that need no change keep their text exactly."""

    def fix(match: re.Match[str]) -> str:
        body = match.group(1)
        try:
            call = json.loads(body.strip())
        except ValueError:
            return match.group(0)
        if not isinstance(call, dict) or call.get("name") != "search":
            return match.group(0)
        args = call.get("arguments")
        as_text = isinstance(args, str)
        if as_text:
            try:
                args = json.loads(args)
            except ValueError:
                return match.group(0)
        if not isinstance(args, dict) or "queries" not in args or "query" in args:
            return match.group(0)
        args = {("query" if key == "queries" else key): value for key, value in args.items()}
        call["arguments"] = json.dumps(args, ensure_ascii=False) if as_text else args
        lead = body[: len(body) - len(body.lstrip())]
        trail = body[len(body.rstrip()):]
        return f"<tool_call>{lead}{json.dumps(call, ensure_ascii=False)}{trail}</tool_call>"

    return _TOOL_CALL.sub(fix, content)


def _from_webdancer(record: Any, where: str, index: int) -> Trajectory:
    if not isinstance(record, Mapping) or "messages" not in record:
        raise ValueError(f"{where}: not a WebDancer record (no 'messages'){_format_hint(record)}.")
    messages = _check_messages(record["messages"], where)
    messages = [{**m, "content": map_queries(m["content"])} if m["role"] == "assistant" else m for m in messages]
    return trajectory_from_messages(messages, _task(record, messages, where, index, "webdancer"),
                                    engine="webdancer", group=index)


def _functions(traj: Trajectory) -> list[dict[str, Any]]:
    functions = traj.task.meta.get("functions")
    if isinstance(functions, list) and functions:
        return [normalize_function(f) for f in functions]
    return [dict(s["function"]) for s in tool_schemas(DEFAULT_TOOLS)]


def _user_turns(messages: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Tool-role messages as the user turns WebDancer's format uses."""
    return [{"role": "user", "content": f"<tool_response>\n{m['content']}\n</tool_response>"}
            if m["role"] == "tool" else {"role": m["role"], "content": m["content"]} for m in messages]


def _tag(task: Task) -> str:
    for key in ("tag", "source"):
        value = task.meta.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def webdancer_record(traj: Trajectory) -> dict[str, Any]:
    """``traj`` in WebDancer's released format (module docstring), plus ``question`` and ``id``."""
    functions = [{"name_for_human": f["name"], "name_for_model": f["name"],
                  "description_for_model": f["description"], "parameters": f["parameters"]}
                 for f in _functions(traj)]
    answers = traj.task.meta.get("answers") or [traj.task.answer]
    return {"type": "chatml", "task": WEBDANCER_TASK, "messages": _user_turns(traj.messages),
            "functions": functions, "tool_calls": [], "answer": [list(map(str, answers))],
            "tag": _tag(traj.task), "question": traj.task.question, "id": traj.task.id}


# ---------------------------------------------------------------- chat messages


def _from_messages(record: Any, where: str, index: int) -> Trajectory:
    if not isinstance(record, Mapping) or "messages" not in record:
        raise ValueError(f"{where}: not a messages record (no 'messages' list){_format_hint(record)}.")
    messages = _check_messages(record["messages"], where)
    return trajectory_from_messages(messages, _task(record, messages, where, index, "messages"),
                                    engine="messages", group=index)


def messages_record(traj: Trajectory, *, tools: bool = False) -> dict[str, Any]:
    """``{"messages": [{"role", "content"}, ...]}`` (and ``"tools"`` as OpenAI function schemas)."""
    record: dict[str, Any] = {"messages": [{"role": m["role"], "content": m["content"]} for m in traj.messages]}
    if tools:
        record["tools"] = [{"type": "function", "function": f} for f in _functions(traj)]
    return record


# ---------------------------------------------------------------- writing and converting


_READERS = {"trajectory": _from_trajectory, "webdancer": _from_webdancer, "messages": _from_messages}


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    """One JSON object per line (UTF-8, non-ASCII kept); -> the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_trajectories(trajectories: Iterable[Trajectory], path: str | Path, fmt: str = "trajectory", *,
                       tools: bool = False) -> int:
    """Write ``trajectories`` to ``path`` in ``fmt``; ``tools`` adds tool schemas to ``messages`` records."""
    if fmt == "trajectory":
        records: Iterable[Mapping[str, Any]] = (t.to_dict() for t in trajectories)
    elif fmt == "webdancer":
        records = (webdancer_record(t) for t in trajectories)
    elif fmt == "messages":
        records = (messages_record(t, tools=tools) for t in trajectories)
    else:
        raise ValueError(f"format {fmt!r} is unknown; use one of: {', '.join(FORMATS)}.")
    return write_jsonl(records, path)


def convert(in_path: str | Path, out_path: str | Path, in_format: str = "auto", out_format: str = "messages",
            *, tools: bool = False) -> int:
    """Read ``in_path`` in ``in_format`` and write it to ``out_path`` in ``out_format``; -> records written."""
    if out_format not in FORMATS:
        raise ValueError(f"out_format {out_format!r} is unknown; use one of: {', '.join(FORMATS)}.")
    if Path(in_path).resolve() == Path(out_path).resolve():
        raise ValueError(f"{out_path} is also the input; write the converted file somewhere else.")
    return write_trajectories(read_trajectories(in_path, in_format), out_path, out_format, tools=tools)
