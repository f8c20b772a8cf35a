"""``Trajectory``: one episode as the trainer sees it, tokens and text side by side.

``ids`` holds the whole conversation as token ids: the prompt, then for each turn
the tokens the model generated (exactly as sampled) and the tokens of the
observation that followed. ``loss_mask`` is 1 exactly on generated tokens and
``logprobs`` holds their sampling log-probabilities (0 elsewhere).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from webdancer.envs.tasks import Task


@dataclass
class TurnRecord:
    """One assistant turn and the observation after it.

    ``span`` and ``obs_span`` are ``[start, end)`` token offsets into
    ``Trajectory.ids``; ``obs_span`` is ``None`` after the last turn.
    """

    text: str
    kind: str  # "tool" | "answer" | "invalid"
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    valid: bool = True
    error: str | None = None
    has_think: bool = False
    n_tool_calls: int = 0
    n_answers: int = 0
    wrote_tool_response: bool = False
    observation: str | None = None
    span: tuple[int, int] = (0, 0)
    obs_span: tuple[int, int] | None = None
    finish_reason: str = "stop"


@dataclass
class Trajectory:
    task: Task
    group: int = 0  # samples of one group share the task (and its snapshot state)
    sample: int = 0
    messages: list[dict[str, str]] = field(default_factory=list)
    prompt_len: int = 0
    ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: list[TurnRecord] = field(default_factory=list)
    answer: str | None = None
    termination: str = ""
    tool_calls: int = 0
    invalid_actions: int = 0
    reward: float = 0.0
    reward_breakdown: dict[str, float] = field(default_factory=dict)
    unjudged: bool = False
    engine: str = ""  # which engine (or oracle) produced it

    @property
    def response_length(self) -> int:
        """Generated tokens (the ones the loss sees)."""
        return sum(self.loss_mask)

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def truncated(self) -> bool:
        return self.termination not in ("answer",)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["task"] = self.task.to_dict()
        return out

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Trajectory:
        data = dict(row)
        data["task"] = Task.from_dict(data["task"], where="trajectory task")
        data["turns"] = [TurnRecord(**{**t, "span": tuple(t.get("span", (0, 0))),
                                       "obs_span": tuple(t["obs_span"]) if t.get("obs_span") else None})
                         for t in data.get("turns", [])]
        return cls(**data)
