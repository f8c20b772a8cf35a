"""Reward protocol and registry.

A reward takes what the agent did (an ``Episode``-like object or a plain answer
string) and the task, and returns a ``RewardResult``: the score and a breakdown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from webdancer.registry import Registry


class TurnLike(Protocol):
    kind: str  # "tool" | "answer" | "invalid"
    n_tool_calls: int
    n_answers: int
    wrote_tool_response: bool

    @property
    def has_think(self) -> bool: ...

    @property
    def valid(self) -> bool: ...


class EpisodeLike(Protocol):
    turns: Sequence[TurnLike]
    answer: str | None
    invalid_actions: int


class TaskLike(Protocol):
    question: str
    answer: str


@dataclass(frozen=True)
class RewardResult:
    score: float
    breakdown: Mapping[str, float] = field(default_factory=dict)
    unjudged: bool = False  # a judge could not decide; never counted as wrong


class RewardFn(Protocol):
    def __call__(self, episode: EpisodeLike | str, task: TaskLike) -> RewardResult: ...


REWARDS: Registry[Any] = Registry("reward")


def answer_of(episode: EpisodeLike | str) -> str:
    if isinstance(episode, str):
        return episode
    return episode.answer or ""
