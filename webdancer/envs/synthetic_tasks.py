"""Multi-hop questions over the synthetic site's knowledge graph.

A task with ``hops = h`` needs ``h`` pages: it names a start entity, follows
``h - 1`` single-valued relations ("the founder of the employer of X"), and asks
for an attribute of the entity reached. The answer is written exactly as the site
writes it (``12,345``, ``173 cm``), and ``meta["golden_path"]`` lists the pages to
read in order.

Splits are decided by a hash of the question text, so ``train`` and ``test`` never
share a question whatever seed or size is asked for.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence

from webdancer.envs.tasks import Task
from webdancer.web.synthetic_graph import Entity, KnowledgeGraph, walk
from webdancer.web.synthetic_schema import (
    ATTR_BY_NAME,
    ATTRIBUTES,
    RELATION_BY_NAME,
    describe,
    format_value,
)

MAX_HOPS = 15


def split_of(question: str, test_fraction: float) -> str:
    digest = int.from_bytes(hashlib.sha1(question.encode("utf-8")).digest()[:8], "big")
    return "test" if digest / 2**64 < test_fraction else "train"


def make_task(graph: KnowledgeGraph, start: Entity, path: Sequence[tuple[str, str]], attr: str) -> Task:
    """The question reaching ``attr`` of the entity at the end of ``path`` from ``start``."""
    phrase = start.name
    for relation, _ in path:
        phrase = describe(relation, subject=phrase)
    target = graph.entity(path[-1][1]) if path else start
    spec = ATTR_BY_NAME[(target.type, attr)]
    question = f"What is the {spec.noun} of {phrase}?"
    chain = [start] + [graph.entity(eid) for _, eid in path]
    meta = {
        "hops": len(chain),
        "golden_path": [e.url for e in chain],
        "entities": [e.name for e in chain],
        "relations": [rel for rel, _ in path],
        "relation_labels": [RELATION_BY_NAME[rel].label for rel, _ in path],
        "attribute": attr,
        "attribute_label": spec.label,
        "entity_type": target.type,
        "source": "synthetic",
    }
    return Task(question=question, answer=format_value(spec, target.attributes[attr]),
                root_url=start.url, meta=meta)


class SyntheticTasks(Sequence[Task]):
    """``n`` distinct tasks of the given split with hop counts drawn from ``hops``.

    ``hops`` is one count or a ``(low, high)`` inclusive range within 1..15; counts
    are spread evenly over the range. Deterministic for a seed.
    """

    def __init__(self, graph: KnowledgeGraph, *, n: int = 1000, hops: int | Sequence[int] = (1, 3),
                 split: str = "train", test_fraction: float = 0.2, seed: int = 0) -> None:
        low, high = (hops, hops) if isinstance(hops, int) else (int(hops[0]), int(hops[-1]))
        if not 1 <= low <= high <= MAX_HOPS:
            raise ValueError(f"hops={hops!r} must lie within 1..{MAX_HOPS} with low <= high.")
        if split not in ("train", "test", "all"):
            raise ValueError(f"split={split!r} is not valid; use train, test or all.")
        self.graph = graph
        self.hops = (low, high)
        self.split = split
        self._tasks = list(self._generate(n, test_fraction, seed))
        if len(self._tasks) < n:
            raise ValueError(f"only {len(self._tasks)} distinct {split} tasks with hops {low}..{high} exist in this "
                             f"graph; build a larger site or ask for fewer (n={n}).")

    def _generate(self, n: int, test_fraction: float, seed: int) -> Iterator[Task]:
        rng = random.Random(f"{seed}-{self.split}")
        entities = list(self.graph.entities.values())
        seen: set[str] = set()
        made = 0
        attempts = 0
        while made < n and attempts < 50 * n + 1000:
            attempts += 1
            hops = self.hops[0] + made % (self.hops[1] - self.hops[0] + 1)
            start = rng.choice(entities)
            path = walk(self.graph, start.id, hops - 1, rng, functional_only=True) if hops > 1 else []
            if len(path) != hops - 1:
                continue
            target = self.graph.entity(path[-1][1]) if path else start
            attr = rng.choice([a.name for a in ATTRIBUTES[target.type]])
            task = make_task(self.graph, start, path, attr)
            if task.question in seen:
                continue
            seen.add(task.question)
            if self.split != "all" and split_of(task.question, test_fraction) != self.split:
                continue
            made += 1
            yield Task(task.question, task.answer, f"synth-{self.split}-{made - 1}", task.root_url,
                       {**task.meta, "split": self.split})

    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, index: int) -> Task:  # type: ignore[override]
        return self._tasks[index]

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)
