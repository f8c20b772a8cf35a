"""A Gymnasium space whose members are all Python strings.

Gymnasium's own ``Text`` space checks a charset and a length, so model output with
unusual characters would fall outside it. ``AnyText`` accepts any ``str`` and tells
the vector-env utilities how to batch it (as tuples), so it works under
``SyncVectorEnv`` and ``AsyncVectorEnv``.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from gymnasium.spaces import Space
from gymnasium.vector import utils as vector_utils

_SAMPLE_CHARS = np.array(list(string.printable + "äöüßéñ中文<>{}\"'"))


class AnyText(Space[str]):
    """Every ``str`` is a member; ``sample`` draws printable text up to ``max_sample_length``."""

    def __init__(self, max_sample_length: int = 64, seed: int | np.random.Generator | None = None) -> None:
        self.max_sample_length = max_sample_length
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        length = int(self.np_random.integers(0, self.max_sample_length + 1))
        return "".join(self.np_random.choice(_SAMPLE_CHARS, size=length))

    def contains(self, x: Any) -> bool:
        return isinstance(x, str)

    def __eq__(self, other: object) -> bool:
        # Compared across processes by AsyncVectorEnv: equality by type, not identity.
        return isinstance(other, AnyText)

    def __hash__(self) -> int:
        return hash(AnyText)

    def __repr__(self) -> str:
        return "AnyText()"


class AnyTextBatch(Space[tuple[str, ...]]):
    """``n`` strings, one per sub-environment: the batched form of ``AnyText``."""

    def __init__(self, n: int, max_sample_length: int = 64, seed: int | np.random.Generator | None = None) -> None:
        self.n = n
        self.single = AnyText(max_sample_length)
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def seed(self, seed: int | None = None) -> list[int]:
        seeds = super().seed(seed)
        self.single.seed(int(self.np_random.integers(2**31)))
        return seeds

    def sample(self, mask: Any = None, probability: Any = None) -> tuple[str, ...]:
        return tuple(self.single.sample() for _ in range(self.n))

    def contains(self, x: Any) -> bool:
        return isinstance(x, (tuple, list)) and len(x) == self.n and all(isinstance(s, str) for s in x)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnyTextBatch) and other.n == self.n

    def __hash__(self) -> int:
        return hash((AnyTextBatch, self.n))

    def __repr__(self) -> str:
        return f"AnyTextBatch({self.n})"


@vector_utils.batch_space.register(AnyText)
def _batch_any_text(space: AnyText, n: int = 1) -> Space[Any]:
    return AnyTextBatch(n, space.max_sample_length)


@vector_utils.iterate.register(AnyTextBatch)
def _iterate_text_batch(space: AnyTextBatch, items: Sequence[str]) -> Iterator[str]:
    if isinstance(items, str):
        raise TypeError("a vector env takes one string per sub-environment, as a tuple or list.")
    return iter(items)


@vector_utils.create_empty_array.register(AnyText)
def _empty_any_text(space: AnyText, n: int = 1, fn: Any = np.zeros) -> tuple[str, ...]:
    return ("",) * n


@vector_utils.concatenate.register(AnyText)
def _concat_any_text(space: AnyText, items: Sequence[str], out: Any) -> tuple[str, ...]:
    return tuple(items)


@vector_utils.iterate.register(AnyText)
def _iterate_any_text(space: AnyText, items: Sequence[str]) -> Iterator[str]:
    return iter(items)
