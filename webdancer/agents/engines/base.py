"""The engine contract: token ids in, sampled token ids and their logprobs out.

An ``Engine`` speaks token ids so that the rollout never re-tokenizes what the
model generated; a ``ChatEngine`` speaks messages and text, for API models used
as evaluators, judges and synthesizers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from webdancer.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

FINISH_REASONS = ("stop", "length")
EOS_STOP = "<eos>"


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one batch.

    ``top_k = 0`` and ``top_p = 1.0`` switch those filters off; ``temperature = 0``
    means greedy decoding. ``stop`` strings end a row when its generated text
    contains one (the token that completes it is kept).
    """

    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ("</tool_call>", "</answer>", "<tool_response>")
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be at least 1.")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 means greedy).")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]; use 1.0 to switch it off.")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0; use 0 to switch it off.")
        if isinstance(self.stop, str):
            raise TypeError(f"stop={self.stop!r} must be a tuple of strings, not one string.")


@dataclass(frozen=True)
class Generation:
    """One prompt's completion.

    ``token_ids`` are the ids exactly as sampled, up to and including the token that
    completed a stop string or the EOS token; ``logprobs`` has one entry per token:
    its log-probability under the distribution actually sampled from (after
    temperature, top-k and top-p).
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (stop string or EOS) | "length"
    stop_string: str | None = None  # which stop string ended it; "<eos>" for EOS
    text: str = ""  # decoded generated text


@runtime_checkable
class Engine(Protocol):
    """Batched token-level generation."""

    tokenizer: PreTrainedTokenizerBase

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[Generation]:
        """One ``Generation`` per prompt, in input order."""
        ...


@dataclass(frozen=True)
class ChatGeneration:
    """One conversation's reply as text."""

    text: str
    finish_reason: str


@runtime_checkable
class ChatEngine(Protocol):
    """Batched text-level chat (API models for evaluation, judges, synthesis)."""

    def chat(
        self, conversations: Sequence[Sequence[Mapping[str, str]]], params: SamplingParams
    ) -> list[ChatGeneration]:
        """One ``ChatGeneration`` per conversation, in input order."""
        ...


ENGINES: Registry[Any] = Registry("engine")


def find_stop(text: str, stops: Sequence[str]) -> str | None:
    """The stop string that ``text`` contains, the one found earliest in ``text``
    first (ties go to the longer string); ``None`` when it contains none."""
    best: str | None = None
    best_pos = -1
    for stop in stops:
        if not stop:
            continue
        pos = text.find(stop)
        if pos < 0:
            continue
        if best is None or pos < best_pos or (pos == best_pos and len(stop) > len(best)):
            best, best_pos = stop, pos
    return best


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """``text`` up to and including its earliest stop string (all of it when none
    occurs), and that string (``None`` when none occurs)."""
    stop = find_stop(text, stops)
    if stop is None:
        return text, None
    return text[: text.index(stop) + len(stop)], stop
