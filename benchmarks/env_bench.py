"""Speed of WebEnv and the oracle's success rate.

    python benchmarks/env_bench.py --out bench_out/env.json [--pages 5000] [--episodes 300]

The action mix is what agents do on the synthetic web: the scripted oracle's
search -> visit ... -> answer episodes over 1-6 hop tasks, with one malformed turn in
ten mixed in. Reports env steps/s for one env, SyncVectorEnv and AsyncVectorEnv with
2 workers. Target: >= 2,000 steps/s per core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym

import webdancer.envs  # noqa: F401
from webdancer.envs.oracle import OracleAgent
from webdancer.envs.synthetic_tasks import SyntheticTasks
from webdancer.web.webdir import WebDir, build_synthetic_web

BAD_TURN = "<think>hmm</think><tool_call>{oops</tool_call>"


def scripted_actions(web: Path, n_episodes: int) -> list[list[str]]:
    """Record the oracle's turns once, so timing measures the env, not the script."""
    env = gym.make("webdancer/SyntheticWeb-v0", web=web, hops=(1, 6), n_tasks=n_episodes)
    episodes, solved = [], 0
    for i in range(n_episodes):
        obs, _ = env.reset(options={"index": i})
        agent = OracleAgent()
        agent.reset(env.unwrapped.episode.task)
        actions, done = [], False
        while not done:
            action = agent.act(obs)
            if len(actions) % 10 == 3:
                actions.append(BAD_TURN)
                env.step(BAD_TURN)
            actions.append(action)
            obs, _reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        solved += info["reward_breakdown"].get("exact_match", 0.0) == 1.0
        episodes.append(actions)
    env.close()
    return episodes, solved / n_episodes


def run_single(web: Path, episodes: list[list[str]], n_tasks: int) -> float:
    env = gym.make("webdancer/SyntheticWeb-v0", web=web, hops=(1, 6), n_tasks=n_tasks)
    steps, t0 = 0, time.perf_counter()
    for i, actions in enumerate(episodes):
        env.reset(options={"index": i})
        for action in actions:
            env.step(action)
            steps += 1
    return steps / (time.perf_counter() - t0)


def run_vector(web: Path, episodes: list[list[str]], n_tasks: int, asynchronous: bool) -> float:
    def make() -> gym.Env[str, str]:
        return gym.make("webdancer/SyntheticWeb-v0", web=web, hops=(1, 6), n_tasks=n_tasks)

    vec: Any = (gym.vector.AsyncVectorEnv([make, make], shared_memory=False) if asynchronous
                else gym.vector.SyncVectorEnv([make, make]))
    # Pair episodes; each sub-env steps its own episode, padding the shorter with answers.
    steps, t0 = 0, time.perf_counter()
    for i in range(0, len(episodes) - 1, 2):
        a, b = episodes[i], episodes[i + 1]
        vec.reset(options={"index": i})
        for j in range(max(len(a), len(b))):
            vec.step((a[j] if j < len(a) else a[-1], b[j] if j < len(b) else b[-1]))
            steps += 2
    rate = steps / (time.perf_counter() - t0)
    vec.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--pages", type=int, default=5000)
    parser.add_argument("--episodes", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        web, _ = build_synthetic_web(Path(tmp) / "site", args.pages, seed=0, progress=False)
        tasks = SyntheticTasks(WebDir(web.path).graph(), n=args.episodes, hops=(1, 6), split="train")
        episodes, success = scripted_actions(web.path, len(tasks))
        n = len(tasks)
        results = {
            "pages": args.pages,
            "episodes": n,
            "steps": sum(map(len, episodes)),
            "oracle_success_rate": success,
            "single_steps_per_s": run_single(web.path, episodes, n),
            "sync_vector_2_steps_per_s": run_vector(web.path, episodes, n, asynchronous=False),
            "async_vector_2_steps_per_s": run_vector(web.path, episodes, n, asynchronous=True),
            "cores": os.cpu_count(),
            "machine": f"{platform.machine()} python {platform.python_version()}",
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"{'metric':<30}{'value':>12}")
    for key, value in results.items():
        print(f"{key:<30}{value:>12.3f}" if isinstance(value, float) else f"{key:<30}{value!s:>12}")


if __name__ == "__main__":
    main()
