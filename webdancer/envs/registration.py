"""Factories behind the registered environment ids.

    gymnasium.make("webdancer/SyntheticWeb-v0", hops=(2, 4), split="train")
    gymnasium.make("webdancer/WarcWeb-v0", web="runs/web/recorded", tasks="qa.jsonl")
    gymnasium.make("webdancer/LiveWeb-v0", web="runs/web/live", mode="record", tasks="qa.jsonl")
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from webdancer.envs.synthetic_tasks import SyntheticTasks
from webdancer.envs.web_env import WebEnv
from webdancer.web.webdir import WebDir, build_synthetic_web


def cache_dir() -> Path:
    return Path(os.environ.get("WEBDANCER_CACHE", Path.home() / ".cache" / "webdancer"))


def ensure_synthetic_web(pages: int, seed: int, root: str | Path | None = None) -> Path:
    """The web directory of the synthetic site (``pages``, ``seed``), built once and cached.

    Safe when several processes (vector env workers) ask at once: one builds into a
    temporary directory under a file lock and renames it into place.
    """
    root = Path(root) if root is not None else cache_dir()
    target = root / f"synthetic-{pages}-{seed}"
    if (target / "web.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".synthetic-{pages}-{seed}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "web.json").exists():
            tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=root))
            build_synthetic_web(tmp, pages, seed, overwrite=True, progress=False)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
    return target


def make_synthetic_env(
    web: str | Path | None = None,
    *,
    pages: int = 500,
    site_seed: int = 0,
    hops: int | Sequence[int] = (1, 3),
    split: str = "train",
    n_tasks: int = 200,
    task_seed: int = 0,
    **env_kwargs: Any,
) -> WebEnv:
    """The offline synthetic web with multi-hop tasks drawn from its knowledge graph."""
    web = Path(web) if web is not None else ensure_synthetic_web(pages, site_seed)
    tasks = env_kwargs.pop("tasks", None)
    if tasks is None:
        tasks = SyntheticTasks(WebDir(web).graph(), n=n_tasks, hops=hops, split=split, seed=task_seed)
    return WebEnv(web, tasks=tasks, mode="replay", **env_kwargs)


def make_warc_env(web: str | Path, **env_kwargs: Any) -> WebEnv:
    """Any web directory or snapshot store given by path, replayed offline."""
    return WebEnv(web, mode="replay", **env_kwargs)


def make_live_env(web: str | Path = "runs/web/live", *, mode: str = "record", **env_kwargs: Any) -> WebEnv:
    """The live web: ``record`` fetches and writes every page (and Serper result) to
    WARC under ``web`` so the run can be replayed; ``live`` writes nothing."""
    if mode not in ("record", "live"):
        raise ValueError(f"mode={mode!r} is not valid for LiveWeb; use record or live (replay is WarcWeb).")
    return WebEnv(web, mode=mode, **env_kwargs)
