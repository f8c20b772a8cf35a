"""Tasks and the sources the environment draws them from.

A ``Task`` is a question with its gold answer, an optional root URL where browsing
should start, and free metadata (hops, golden path, level, ...). A task source is a
sized, indexable collection of tasks: a JSONL file, a list, or a generator over the
synthetic site's knowledge graph (``webdancer.envs.synthetic_tasks``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Task:
    question: str
    answer: str
    id: str = ""
    root_url: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_dict(cls, row: Mapping[str, Any], *, where: str = "task") -> Task:
        """Build from a JSON row; a bad row raises ValueError naming ``where``."""
        if not isinstance(row, Mapping):
            raise ValueError(f"{where}: expected a JSON object with 'question' and 'answer'.")
        question = row.get("question", row.get("Question"))
        answer = row.get("answer", row.get("Answer", row.get("Final answer")))
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{where}: missing a non-empty 'question' string; add one.")
        if answer is None:
            raise ValueError(f"{where}: missing 'answer'; add the gold answer.")
        meta = row.get("meta", {})
        if not isinstance(meta, Mapping):
            raise ValueError(f"{where}: 'meta' must be a JSON object.")
        extra = {k: v for k, v in row.items() if k not in {"question", "Question", "answer", "Answer",
                                                           "Final answer", "id", "root_url", "meta"}}
        return cls(question=question.strip(), answer=str(answer), id=str(row.get("id", "")),
                   root_url=row.get("root_url") or None, meta={**extra, **meta})


class TaskSource(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Task: ...


class TaskList(Sequence[Task]):
    """A task source over an in-memory list; ids are filled in when missing."""

    def __init__(self, tasks: Iterable[Task], prefix: str = "task") -> None:
        self._tasks = [t if t.id else Task(t.question, t.answer, f"{prefix}-{i}", t.root_url, t.meta)
                       for i, t in enumerate(tasks)]

    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, index: int) -> Task:  # type: ignore[override]
        return self._tasks[index]

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)


def load_jsonl_tasks(path: str | Path) -> TaskList:
    """Read ``{question, answer, root_url?, meta?}`` rows; a bad line fails with file:line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"task file {path} does not exist; check the path.")
    tasks = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg}); fix or remove the line.") from None
            task = Task.from_dict(row, where=where)
            tasks.append(task if task.id else Task(task.question, task.answer, f"{path.stem}-{lineno}",
                                                   task.root_url, task.meta))
    if not tasks:
        raise ValueError(f"task file {path} holds no tasks; add JSONL rows with question and answer.")
    return TaskList(tasks)


def write_jsonl_tasks(tasks: Iterable[Task], path: str | Path) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for task in tasks:
            f.write(json.dumps(task.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n


def as_task_source(tasks: TaskSource | Sequence[Task] | str | Path | None) -> TaskSource | None:
    if tasks is None or isinstance(tasks, TaskList):
        return tasks
    if isinstance(tasks, (str, Path)):
        return load_jsonl_tasks(tasks)
    if isinstance(tasks, Sequence) and not hasattr(tasks, "graph"):
        return TaskList(tasks)
    return tasks
