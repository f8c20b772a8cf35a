"""A scripted agent that solves synthetic tasks through the environment's own tools.

It searches for the start entity, then visits each page of the golden path in
turn, checking that every next page is linked from the one it just read (falling
back to a search when it is not), and reads the answer off the last page's
infobox. It never looks at the gold answer. Its turns follow the protocol exactly,
so its episodes serve as SFT trajectories and as a sanity baseline.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from webdancer.envs.tasks import Task


def tool_turn(think: str, name: str, arguments: dict[str, Any]) -> str:
    call = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<think>{think}</think>\n<tool_call>\n{call}\n</tool_call>"


def answer_turn(think: str, answer: str) -> str:
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


def read_infobox(observation: str, label: str) -> str | None:
    """The value in the ``| label | value |`` row of a rendered infobox, links stripped."""
    match = re.search(rf"^\|\s*{re.escape(label)}\s*\|\s*(.+?)\s*\|\s*$", observation, re.MULTILINE)
    if not match:
        return None
    return re.sub(r"\s*\[\d+\]", "", match.group(1)).strip()


@dataclass
class OracleAgent:
    """Follows ``task.meta["golden_path"]``; one instance per episode (``reset`` per task)."""

    task: Task | None = None
    step_index: int = 0
    searched: bool = False
    pending_search: str | None = None
    log: list[str] = field(default_factory=list)

    def reset(self, task: Task) -> None:
        if "golden_path" not in task.meta:
            raise ValueError(f"task {task.id!r} has no golden_path; the oracle solves synthetic tasks only.")
        self.task = task
        self.step_index = 0
        self.searched = False
        self.pending_search = None

    def act(self, observation: str) -> str:
        """The next assistant turn given the last observation."""
        assert self.task is not None, "call reset(task) first"
        meta = self.task.meta
        path: list[str] = list(meta["golden_path"])
        names: list[str] = list(meta["entities"])
        labels: list[str] = list(meta.get("relation_labels", []))
        attr_label: str = meta["attribute_label"]
        if not self.searched:
            self.searched = True
            return tool_turn(f"The question starts from {names[0]}. I will search for its page first.",
                             "search", {"query": [names[0]]})
        if self.step_index < len(path):
            url = path[self.step_index]
            if self.step_index > 0 and url not in observation and self.pending_search != url:
                # Not linked from the page just read: find the page by name instead.
                self.pending_search = url
                return tool_turn(f"I need the page of {names[self.step_index]}; let me search for it.",
                                 "search", {"query": [names[self.step_index]]})
            self.step_index += 1
            if self.step_index < len(path):
                goal = f"{labels[self.step_index - 1]} of {names[self.step_index - 1]}"
                think = (f"The page of {names[self.step_index - 1]} should name its "
                         f"{labels[self.step_index - 1].lower()}. I will read it.")
            else:
                goal = f"{attr_label} of {names[-1]}"
                think = f"Now I need the {attr_label.lower()} of {names[-1]}. I will read its page."
            return tool_turn(think, "visit", {"url": [url], "goal": goal})
        value = read_infobox(observation, attr_label)
        if value is None:
            return answer_turn(f"I could not find the {attr_label.lower()} on the page.", "unknown")
        return answer_turn(f"The page of {names[-1]} gives its {attr_label.lower()} as {value}.", value)
