"""Rollout throughput with the tiny model: many envs at once against one at a time.

    python benchmarks/rollout_bench.py --out bench_out/rollout.json [--threads 2] [--web DIR]

Builds the default tiny model (``make_tiny``) and the 2,000-page synthetic web, then
drives ``Rollout`` over synthetic train tasks with ``HFEngine`` on the CPU
(max_turns 4, 48 new tokens per turn, 2,048-token context, temperature 1.0).

* ``sequential``: the one-conversation-at-a-time loop, ``Rollout.run([task])`` for
  one task after another; every engine call holds one row.
* ``N envs``: ``Rollout.run(tasks[:N], group_size=G)`` with ``N / G`` tasks of ``G``
  samples (``--group-size``, default 1), so every round sends up to N rows to the
  engine in one call; repeated over fresh tasks until ``--min-episodes`` episodes ran.

Every run is measured ``--repeats`` times, interleaved, and the median kept (other
work on a shared machine skews single runs). Reports generated tokens/s,
episodes/s, speedup in tokens/s over the sequential loop, the share of wall time
spent in the env (``RolloutStats.env_share``: tool calls, parsing and observation
tokenization) and the seconds spent in ``engine.generate``. Targets: >= 8x the
sequential loop at 16 envs; env share < 5%. ``--profile N`` adds a cProfile of one
N-env rollout. ``--waves W`` adds, for every env count above W, the same run with
``max_in_flight=W`` (episodes in waves of W): past what the HF engine's prefix cache
holds, a round of N at once prefills whole contexts again every turn.

A random tiny model rarely writes a valid tool call, so most turns run to the
token budget and come back as short error observations: the numbers measure the
engine and the rollout loop more than the tools.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import os
import platform
import pstats
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from webdancer.agents.engines.hf import HFEngine
from webdancer.agents.rollout import Rollout, RolloutConfig
from webdancer.agents.tiny import make_tiny
from webdancer.envs.backends import open_web
from webdancer.envs.registration import ensure_synthetic_web
from webdancer.envs.synthetic_tasks import SyntheticTasks
from webdancer.envs.tasks import Task
from webdancer.envs.web_env import WebEnv
from webdancer.web.webdir import WebDir

CONFIG = RolloutConfig(max_turns=4, max_new_tokens=48, max_context_tokens=2048, prompt_style="compact",
                       temperature=1.0, seed=0, progress=False)
TARGET_SPEEDUP_AT_16 = 8.0
TARGET_ENV_SHARE = 0.05


class EnvPool:
    """Hands out envs that share one store and search index (opened once), so that
    building envs costs nothing inside the timed runs."""

    def __init__(self, web: Path, tasks: Sequence[Task]) -> None:
        self.store, self.search = open_web(web, mode="replay")
        self.tasks = tasks

    def __call__(self) -> WebEnv:
        return WebEnv(store=self.store, search=self.search, tasks=self.tasks)


def _row(name: str, envs: int, rollout: Rollout, wall_s: float) -> dict[str, Any]:
    stats = rollout.stats
    return {
        "name": name,
        "envs": envs,
        "episodes": stats.episodes,
        "generated_tokens": stats.generated_tokens,
        "engine_calls": stats.engine_calls,
        "wall_s": wall_s,
        "tokens_per_s": stats.generated_tokens / wall_s,
        "episodes_per_s": stats.episodes / wall_s,
        "generate_s": stats.generate_s,
        "env_s": stats.env_s,
        "env_share": stats.env_share,
        "env_share_of_wall": stats.env_s / wall_s,
    }


def run_sequential(engine: HFEngine, pool: EnvPool, tasks: Sequence[Task], episodes: int) -> dict[str, Any]:
    """One conversation at a time: each task's episode runs to its end before the next starts."""
    rollout = Rollout(engine, pool, CONFIG)
    rollout.run([tasks[-1]])  # warm-up (first-call costs of torch and the tokenizer) on a task not measured
    rollout.stats = type(rollout.stats)()
    engine.clear_prefix_cache()
    t0 = time.perf_counter()
    for i in range(episodes):
        rollout.run([tasks[i % len(tasks)]], group_offset=i)
    return _row("sequential", 1, rollout, time.perf_counter() - t0)


def run_concurrent(engine: HFEngine, pool: EnvPool, tasks: Sequence[Task], envs: int, group_size: int,
                   min_episodes: int, waves: int = 0) -> dict[str, Any]:
    """``envs`` episodes at once (``envs / group_size`` tasks x ``group_size``; ``waves``: at
    most that many in flight), repeated over fresh tasks until at least ``min_episodes`` ran."""
    per_call = max(1, envs // group_size)
    rollout = Rollout(engine, pool, dataclasses.replace(CONFIG, max_in_flight=waves))
    rollout.run(tasks[len(tasks) - per_call :], group_size)  # warm-up on tasks not measured; builds the envs
    rollout.stats = type(rollout.stats)()
    engine.clear_prefix_cache()
    t0 = time.perf_counter()
    start, batch = 0, 0
    while rollout.stats.episodes < min_episodes:
        chunk = [tasks[(start + k) % len(tasks)] for k in range(per_call)]
        rollout.run(chunk, group_size, group_offset=batch * per_call)
        start, batch = start + per_call, batch + 1
    name = f"{per_call * group_size} envs" + (f" / {waves}" if waves else "")
    return _row(name, per_call * group_size, rollout, time.perf_counter() - t0)


def measure(engine: HFEngine, pool: EnvPool, tasks: Sequence[Task], counts: list[int],
            args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run ``--repeats`` times, interleaved (so that a busy spell on a shared
    machine hits all runs alike); each row is the repeat with the median tokens/s."""
    runs = [(n, 0) for n in counts] + [(n, args.waves) for n in counts if args.waves and n > args.waves]
    trials: list[list[dict[str, Any]]] = [[] for _ in range(len(runs) + 1)]
    for _ in range(args.repeats):
        trials[0].append(run_sequential(engine, pool, tasks, args.min_episodes))
        for i, (n, waves) in enumerate(runs, start=1):
            trials[i].append(run_concurrent(engine, pool, tasks, n, args.group_size, max(n, args.min_episodes),
                                            waves))
    rows = []
    for runs in trials:
        ranked = sorted(runs, key=lambda r: r["tokens_per_s"])
        row = ranked[len(ranked) // 2]
        row["tokens_per_s_all"] = [r["tokens_per_s"] for r in runs]
        rows.append(row)
    return rows


def profile_concurrent(engine: HFEngine, pool: EnvPool, tasks: Sequence[Task], envs: int,
                       top: int = 15) -> list[dict[str, Any]]:
    """cProfile of one ``envs``-wide rollout: the functions with the most own time."""
    rollout = Rollout(engine, pool, CONFIG)
    rollout.run(tasks[len(tasks) - envs :])
    engine.clear_prefix_cache()
    profiler = cProfile.Profile()
    profiler.runcall(rollout.run, tasks[:envs])
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
    return [{"function": f"{Path(file).name}:{line}({name})", "calls": calls, "tottime_s": tottime,
             "cumtime_s": cumtime} for (file, line, name), (_, calls, tottime, cumtime, _) in rows]


def machine_info(threads: int, model_dir: Path) -> dict[str, Any]:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_1min": os.getloadavg()[0],  # other work on the machine skews every number
        "model": {k: config[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")},
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (f"{'run':<18}{'episodes':>9}{'tokens':>8}{'tok/s':>9}{'ep/s':>8}{'speedup':>9}"
              f"{'env share':>11}{'gen s':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:<18}{r['episodes']:>9}{r['generated_tokens']:>8}{r['tokens_per_s']:>9.0f}"
              f"{r['episodes_per_s']:>8.2f}{r['speedup']:>8.1f}x{r['env_share']:>10.1%}{r['generate_s']:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--web", help="a synthetic web directory (default: the cached 2,000-page site, seed 0)")
    parser.add_argument("--model", help="a tiny model directory (default: make_tiny into a temp dir)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--envs", default="1,4,16,64", help="comma-separated concurrent env counts")
    parser.add_argument("--group-size", type=int, default=1, help="samples per task (G) in concurrent runs")
    parser.add_argument("--min-episodes", type=int, default=16, help="episodes per measurement, at least")
    parser.add_argument("--repeats", type=int, default=3, help="measure every run this often, interleaved")
    parser.add_argument("--waves", type=int, default=0, metavar="W",
                        help="also run every env count above W with at most W episodes in flight")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile one N-env rollout with cProfile (own time per function)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    counts = [int(n) for n in args.envs.split(",") if n.strip()]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("WEBDANCER_CACHE", str(Path(tmp) / "cache"))
        web = Path(args.web) if args.web else ensure_synthetic_web(pages=2000, seed=0)
        model_dir = Path(args.model) if args.model else make_tiny(Path(tmp) / "tiny")
        n_tasks = max([args.min_episodes, *counts]) * 2
        tasks = list(SyntheticTasks(WebDir(web).graph(), n=n_tasks, hops=(1, 3), split="train"))
        engine = HFEngine.from_pretrained(str(model_dir), device="cpu")
        pool = EnvPool(web, tasks)
        rows = measure(engine, pool, tasks, counts, args)
        profile = profile_concurrent(engine, pool, tasks, args.profile) if args.profile else None
        pool.store.close()
        info = machine_info(args.threads, model_dir)
        info["load_average_1min_before"] = load_before
    base = rows[0]["tokens_per_s"]
    for r in rows:
        r["speedup"] = r["tokens_per_s"] / base
    at_16 = next((r for r in rows if r["envs"] == 16), None)
    results = {
        "config": {k: getattr(CONFIG, k) for k in ("max_turns", "max_new_tokens", "max_context_tokens",
                                                    "prompt_style", "temperature", "seed")},
        "group_size": args.group_size,
        "waves": args.waves,
        "min_episodes": args.min_episodes,
        "machine": info,
        "runs": rows,
        "profile": profile,
        "targets": {
            "speedup_at_16": TARGET_SPEEDUP_AT_16,
            "env_share": TARGET_ENV_SHARE,
            "speedup_at_16_met": bool(at_16 and at_16["speedup"] >= TARGET_SPEEDUP_AT_16),
            "env_share_met": all(r["env_share"] < TARGET_ENV_SHARE for r in rows),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print_table(rows)
    for entry in profile or []:
        print(f"{entry['tottime_s']:8.3f} s {entry['calls']:>7}  {entry['function']}")
    print(f"targets: speedup at 16 envs >= {TARGET_SPEEDUP_AT_16:.0f}x: {results['targets']['speedup_at_16_met']}; "
          f"env share < {TARGET_ENV_SHARE:.0%}: {results['targets']['env_share_met']}")


if __name__ == "__main__":
    main()
