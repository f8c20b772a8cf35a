"""Trajectory sampling: the scripted oracle, token-level engines and text-level chat
models, each driven through ``WebEnv`` on a list of tasks.

    trajs = sample_oracle(env_fn, tasks)                                  # synthetic webs only
    trajs += sample_engines([("short", e1), ("long", e2)], env_fn, tasks, k=4, rollout_cfg=cfg)
    trajs += sample_chat(api, env_fn, tasks, k=4, params=params, name="api")

Every path records the same conversation in ``Trajectory.messages``: the opening
messages from ``build_messages``, then each assistant turn followed by the
observation message that carried the tool output back. ``sample_engines`` goes
through ``Rollout`` and keeps token ids, loss masks and logprobs; the oracle and chat
paths have no token ids (``ids`` stays empty, spans are ``(0, 0)``). Reward,
termination, tool-call and invalid-action counts always come from the environment.

``group`` is the task's index in ``tasks`` for every sampler, so the samples of one
task from different engines share a group id; ``sample`` is the sample index within
an engine, and ``engine`` names who produced the trajectory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tqdm.auto import tqdm

from webdancer.agents.engines.base import ChatEngine, Engine, SamplingParams, cut_at_stop
from webdancer.agents.prompts import build_messages, observation_message
from webdancer.agents.rollout import NO_ANSWER, Rollout, RolloutConfig
from webdancer.agents.trajectory import Trajectory, TurnRecord
from webdancer.envs.actions import parse_turn
from webdancer.envs.oracle import OracleAgent
from webdancer.envs.tasks import Task
from webdancer.envs.web_env import ANSWER, WebEnv

log = logging.getLogger("webdancer.data")

ORACLE = "oracle"
_ORACLE_META = ("golden_path", "entities", "attribute_label")

EnvFn = Callable[[], WebEnv]


def oracle_can_solve(task: Task) -> bool:
    """True for tasks the scripted ``OracleAgent`` follows: a golden path of entity pages
    ending in an infobox attribute, and not marked ``meta["oracle"] = False``."""
    meta = task.meta
    return meta.get("oracle", True) is not False and all(key in meta for key in _ORACLE_META)


@dataclass
class _Episode:
    """One trajectory in progress on its own environment."""

    traj: Trajectory
    env: WebEnv
    observation: str = ""
    done: bool = False


def _begin(env: WebEnv, task: Task, group: int, sample: int, engine: str, *, tools: Sequence[str],
           prompt_style: str, date: str | None, max_turns: int) -> _Episode:
    env.max_turns = max_turns
    env.reset(options={"task": task})
    messages = build_messages(task.question, tools, style=prompt_style, date=date)
    return _Episode(Trajectory(task=task, group=group, sample=sample, messages=list(messages), engine=engine), env)


def _advance(ep: _Episode, text: str, finish: str, tool_role: bool) -> None:
    """Send one assistant turn to the env and record it (and its observation) in the trajectory."""
    traj = ep.traj
    if finish == "stop" and not text:
        _close_with_reward(ep, NO_ANSWER)  # the model ended its reply without writing anything
        return
    parsed = parse_turn(text)
    obs, reward, terminated, truncated, info = ep.env.step(text)
    record = TurnRecord(text=text, kind=parsed.kind, tool=info.get("tool"), arguments=dict(parsed.arguments),
                        valid=bool(info.get("valid_action")), error=info.get("error"),
                        has_think=parsed.has_think, n_tool_calls=parsed.n_tool_calls, n_answers=parsed.n_answers,
                        wrote_tool_response=parsed.wrote_tool_response, finish_reason=finish)
    traj.turns.append(record)
    traj.messages.append({"role": "assistant", "content": text})
    if terminated or truncated:
        _close(ep, str(info.get("termination", ANSWER)), float(reward), dict(info.get("reward_breakdown", {})),
               bool(info.get("reward_unjudged", False)))
        return
    record.observation = obs
    traj.messages.append(observation_message(obs, tool_role=tool_role))
    ep.observation = obs


def _close_with_reward(ep: _Episode, reason: str) -> None:
    episode = ep.env.episode
    assert episode is not None
    result = ep.env.reward_fn(episode, episode.task)
    _close(ep, reason, result.score, dict(result.breakdown), result.unjudged)


def _close(ep: _Episode, reason: str, reward: float, breakdown: dict[str, float], unjudged: bool) -> None:
    episode = ep.env.episode
    assert episode is not None
    traj = ep.traj
    traj.termination = reason
    traj.answer = episode.answer
    traj.tool_calls = episode.tool_calls
    traj.invalid_actions = episode.invalid_actions
    traj.reward = float(reward)
    traj.reward_breakdown = breakdown
    traj.unjudged = unjudged
    ep.done = True


def sample_oracle(
    env_fn: EnvFn,
    tasks: Sequence[Task],
    *,
    prompt_style: str = "webdancer",
    date: str | None = None,
    tools: Sequence[str] = ("search", "visit"),
    tool_role: bool = False,
    max_turns: int = 40,
    progress: bool = True,
) -> list[Trajectory]:
    """One trajectory per task the oracle can solve (``oracle_can_solve``), in task order.

    The oracle is deterministic, so one sample per task is all it has to give. Tasks
    it cannot follow (counting and intersection questions, tasks from real sites) are
    skipped and their number logged. All episodes share one environment from ``env_fn``.
    """
    solvable = [(i, task) for i, task in enumerate(tasks) if oracle_can_solve(task)]
    if len(solvable) < len(tasks):
        log.info("oracle: skipped %d of %d tasks it cannot follow (no golden path of entity pages)",
                 len(tasks) - len(solvable), len(tasks))
    env = env_fn()
    out: list[Trajectory] = []
    for group, task in tqdm(solvable, desc=ORACLE, unit="ep", disable=not progress, leave=False):
        ep = _begin(env, task, group, 0, ORACLE, tools=tools, prompt_style=prompt_style, date=date,
                    max_turns=max_turns)
        agent = OracleAgent()
        agent.reset(task)
        while not ep.done:  # the env truncates at max_turns, so this ends
            _advance(ep, agent.act(ep.observation), "stop", tool_role)
        out.append(ep.traj)
    return out


def sample_engines(
    engines: Sequence[tuple[str, Engine]],
    env_fn: EnvFn,
    tasks: Sequence[Task],
    *,
    k: int = 1,
    rollout_cfg: RolloutConfig | None = None,
    batch_size: int = 64,
) -> list[Trajectory]:
    """``k`` samples per task from each named token-level engine, through ``Rollout``.

    Trajectories keep token ids, loss masks and logprobs. Tasks run in chunks of about
    ``batch_size`` episodes (``batch_size // k`` tasks), so at most that many
    environments are open per engine. Output: engine by engine, then task, then sample.
    """
    _check_names([name for name, _ in engines])
    if k < 1:
        raise ValueError(f"k={k} must be at least 1 sample per task.")
    cfg = rollout_cfg or RolloutConfig()
    per_chunk = max(1, batch_size // k)
    out: list[Trajectory] = []
    for name, engine in engines:
        rollout = Rollout(engine, env_fn, cfg)
        bar = tqdm(total=len(tasks), desc=name, unit="task", disable=not cfg.progress, leave=False)
        for start in range(0, len(tasks), per_chunk):
            chunk = list(tasks[start:start + per_chunk])
            for traj in rollout.run(chunk, group_size=k, group_offset=start):
                traj.engine = name
                out.append(traj)
            bar.update(len(chunk))
        bar.close()
        log.info("%s: %d trajectories, %.1f s generating, %.1f s in the env", name, len(tasks) * k,
                 rollout.stats.generate_s, rollout.stats.env_s)
    return out


def sample_chat(
    chat_engine: ChatEngine,
    env_fn: EnvFn,
    tasks: Sequence[Task],
    k: int = 1,
    params: SamplingParams | None = None,
    *,
    name: str = "chat",
    prompt_style: str = "webdancer",
    date: str | None = None,
    tools: Sequence[str] = ("search", "visit"),
    tool_role: bool = False,
    max_turns: int = 40,
    batch_size: int = 32,
    progress: bool = True,
) -> list[Trajectory]:
    """``k`` samples per task from a text-level chat model (an API model without token ids).

    The same ReAct loop as the rollout, on text: the conversation so far goes to
    ``chat_engine.chat``, the reply is cut after its first stop string of
    ``params.stop``, parsed and stepped through the env, and the observation appended
    as the next message. Episodes run ``batch_size`` at a time, one ``chat`` call per
    round. Budgets are the env's (``max_turns`` and its observation budget). With
    ``params.seed`` set, each round gets its own seed derived from it.
    """
    if k < 1:
        raise ValueError(f"k={k} must be at least 1 sample per task.")
    params = params or SamplingParams()
    jobs = [(group, sample, task) for group, task in enumerate(tasks) for sample in range(k)]
    envs: list[WebEnv] = []
    out: list[Trajectory] = []
    bar = tqdm(total=len(jobs), desc=name, unit="ep", disable=not progress, leave=False)
    for chunk_index, start in enumerate(range(0, len(jobs), batch_size)):
        chunk = jobs[start:start + batch_size]
        while len(envs) < len(chunk):
            envs.append(env_fn())
        live = [_begin(env, task, group, sample, name, tools=tools, prompt_style=prompt_style, date=date,
                       max_turns=max_turns) for env, (group, sample, task) in zip(envs, chunk)]
        round_index = 0
        while active := [ep for ep in live if not ep.done]:
            seed = None if params.seed is None else params.seed * 100_003 + chunk_index * 1_009 + round_index
            replies = chat_engine.chat([ep.traj.messages for ep in active], replace(params, seed=seed))
            if len(replies) != len(active):
                raise RuntimeError(f"{name} returned {len(replies)} replies for {len(active)} conversations.")
            for ep, reply in zip(active, replies):
                _advance(ep, cut_at_stop(reply.text, params.stop)[0], reply.finish_reason, tool_role)
            round_index += 1
        out.extend(ep.traj for ep in live)
        bar.update(len(chunk))
    bar.close()
    return out


def _check_names(names: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if not name:
            raise ValueError("an engine needs a non-empty name; it is recorded in Trajectory.engine.")
        if name in seen:
            raise ValueError(f"engine name {name!r} is given twice; give each engine its own name.")
        seen.add(name)


def summarize(trajectories: Sequence[Trajectory]) -> dict[str, dict[str, Any]]:
    """Per engine: episodes, mean reward, answer rate, mean tool calls and invalid actions."""
    by_engine: dict[str, list[Trajectory]] = {}
    for traj in trajectories:
        by_engine.setdefault(traj.engine, []).append(traj)
    out: dict[str, dict[str, Any]] = {}
    for engine, trajs in by_engine.items():
        n = len(trajs)
        out[engine] = {
            "episodes": n,
            "mean_reward": sum(t.reward for t in trajs) / n,
            "answer_rate": sum(t.termination == ANSWER for t in trajs) / n,
            "mean_tool_calls": sum(t.tool_calls for t in trajs) / n,
            "mean_invalid_actions": sum(t.invalid_actions for t in trajs) / n,
        }
    return out
