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
from webdancer.web.synthetic_schema import ATTR_BY_NAME


def tool_turn(think: str, name: str, arguments: dict[str, Any]) -> str:
    call = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"<think>{think}</think>\n<tool_call>\n{call}\n</tool_call>"


def answer_turn(think: str, answer: str) -> str:
    return f"<think>{think}</think>\n<answer>{answer}</answer>"


def read_infobox(observation: str, label: str) -> str | None:
    """The value in the ``| label | value |`` row of a rendered infobox (or its
    ``label: value`` line in ``facts`` evidence), links stripped."""
    match = (re.search(rf"^\|\s*{re.escape(label)}\s*\|\s*(.+?)\s*\|\s*$", observation, re.MULTILINE)
             or re.search(rf"^{re.escape(label)}:\s*(.+?)\s*$", observation, re.MULTILINE))
    if not match:
        return None
    return re.sub(r"\s*\[\d+\]", "", match.group(1)).strip()


def read_fact(observation: str, entity_type: str, attribute: str) -> str | None:
    """The value stated in a prose sentence of the site ("The city lies at an elevation of 3,031 m.").

    Sentences follow the schema's templates, whose subject may be the name, the
    surname or "the city"; any short subject phrase is accepted.
    """
    spec = ATTR_BY_NAME.get((entity_type, attribute))
    if spec is None:
        return None
    subject = r"[\w'-]+(?: [\w'-]+){0,5}"
    for template in spec.facts:
        pattern = re.escape(template)
        pattern = pattern.replace(re.escape("{av}"), r"an? (?P<v>[^.\n]+?)")
        pattern = pattern.replace(re.escape("{v}"), r"(?P<v>[^\n]*?[^.\s])")
        pattern = pattern.replace(re.escape("{s}"), subject, 1).replace(re.escape("{s}"), subject)
        for match in re.finditer(pattern, observation):
            value = re.sub(r"\s*\[\d+\]", "", match.group("v")).strip()
            if spec.kind == "text" or value[:1].isdigit():  # "born in 1891", not "born in Port X"
                return value
    return None


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
                goal = labels[self.step_index - 1]
                think = (f"The page of {names[self.step_index - 1]} should name its "
                         f"{labels[self.step_index - 1].lower()}. I will read it.")
            else:
                # The question's own words first ("What is the <noun> of ..."): a model copies
                # them from the question; the page's label after them is then one step away.
                spec = ATTR_BY_NAME.get((meta.get("entity_type", ""), meta.get("attribute", "")))
                noun = spec.noun if spec else attr_label.lower()
                goal = f"{noun} ({attr_label})"
                think = f"Now I need the {noun} of {names[-1]}. I will read its page."
            return tool_turn(think, "visit", {"url": [url], "goal": goal})
        value = read_infobox(observation, attr_label)
        if value is None and "entity_type" in meta:
            value = read_fact(observation, meta["entity_type"], meta["attribute"])
        if value is None:
            return answer_turn(f"I could not find the {attr_label.lower()} on the page.", "unknown")
        return answer_turn(f"The page of {names[-1]} gives {attr_label}: {value}.", value)
