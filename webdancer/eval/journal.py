"""The eval journal: ``trajectories.jsonl``, one line per finished episode, and the
settings file that guards resuming.

A line is ``Trajectory.to_dict()`` plus ``task_id``, ``run`` and ``correct``; it is
appended and flushed to disk as soon as its episode is scored, so an interrupted eval
loses at most the batch in flight. Every line ends in a newline: bytes after the last
newline are a write cut off by a crash, and ``Journal.load`` removes them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from webdancer.agents.trajectory import Trajectory
from webdancer.eval.metrics import EpisodeResult

log = logging.getLogger("webdancer.eval")

TRAJECTORIES = "trajectories.jsonl"
STATE = "eval_state.json"
_ROW_KEYS = ("task_id", "run", "correct")


class Journal:
    """Append-only JSONL of finished episodes at ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> list[dict[str, Any]]:
        """Every complete row, in file order; a cut-off last line is removed from the file."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            log.warning("%s ends in a line cut off mid-write; dropping it (that episode runs "
                        "again)", self.path)
            with self.path.open("r+b") as f:
                f.truncate(complete)
        rows: list[dict[str, Any]] = []
        for lineno, line in enumerate(data[:complete].splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{self.path}:{lineno} is not valid JSON ({e}); remove the line "
                                 "or start over with resume=false.") from None
            if not isinstance(row, dict) or "task_id" not in row or "run" not in row:
                raise ValueError(f"{self.path}:{lineno} is not an eval row (no task_id and run); "
                                 "remove the line or start over with resume=false.")
            rows.append(row)
        return rows

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row and make it durable before returning."""
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def done(self) -> set[tuple[str, int]]:
        """The (task id, run) pairs already finished."""
        return {(str(r["task_id"]), int(r["run"])) for r in self.load()}


def trajectory_row(traj: Trajectory, run: int, correct: bool | None) -> dict[str, Any]:
    """One journal line: the trajectory plus ``task_id``, ``run`` and ``correct``."""
    return {**traj.to_dict(), "task_id": traj.task.id, "run": run, "correct": correct}


def episode_result(traj: Trajectory, run: int, correct: bool | None) -> EpisodeResult:
    """The metrics' view of one episode; ``tokens`` counts generated tokens."""
    return EpisodeResult(task_id=traj.task.id, run=run, correct=correct, answer=traj.answer or "",
                         tool_calls=traj.tool_calls, invalid_actions=traj.invalid_actions,
                         turns=len(traj.turns), termination=traj.termination,
                         tokens=traj.response_length, meta=dict(traj.task.meta))


def result_from_row(row: Mapping[str, Any]) -> EpisodeResult:
    """``episode_result`` of a journal row, without rebuilding the trajectory."""
    meta = (row.get("task") or {}).get("meta") or {}
    return EpisodeResult(task_id=str(row["task_id"]), run=int(row["run"]),
                         correct=row.get("correct"), answer=row.get("answer") or "",
                         tool_calls=int(row.get("tool_calls", 0)),
                         invalid_actions=int(row.get("invalid_actions", 0)),
                         turns=len(row.get("turns") or []),
                         termination=str(row.get("termination", "")),
                         tokens=int(sum(row.get("loss_mask") or [])), meta=dict(meta))


def read_eval_trajectories(path: str | Path) -> list[tuple[EpisodeResult, Trajectory]]:
    """``(EpisodeResult, Trajectory)`` for every row of an eval's ``trajectories.jsonl``."""
    out = []
    for row in Journal(path).load():
        traj = Trajectory.from_dict({k: v for k, v in row.items() if k not in _ROW_KEYS})
        out.append((episode_result(traj, int(row["run"]), row["correct"]), traj))
    return out


def check_state(out_dir: Path, state: Mapping[str, Any], resume: bool) -> None:
    """Refuse to resume an eval whose recorded settings differ from ``state``; then record it."""
    path = out_dir / STATE
    if resume and path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in state if k in old and old[k] != _plain(state[k]))
        if changed:
            diff = ", ".join(f"{k}: {old[k]!r} -> {state[k]!r}" for k in changed)
            raise ValueError(f"{out_dir} holds an eval run with other settings ({diff}); use "
                             "another out directory, or resume=false to start over.")
    path.write_text(json.dumps(state, indent=2), encoding="utf-8")


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def clear(out_dir: Path, names: Sequence[str] = (TRAJECTORIES,)) -> None:
    """Remove a previous eval's journal (``resume=false``)."""
    for name in names:
        (out_dir / name).unlink(missing_ok=True)
