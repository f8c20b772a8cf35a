"""Multi-run evaluation: k rollouts per question, resumable, written as they finish.

    report = evaluate(tasks, "hf:runs/rl/final", "runs/web/site", k=3, out_dir="runs/eval/rl")

Episodes run in batches of ``batch_size``: all of a batch's generations go to the engine
together (an HTTP engine sends them concurrently). Token-level engines go through
``Rollout`` (token ids kept); chat-only models (an OpenAI-compatible server without a
tokenizer) through the text-level loop of ``sample_chat``. After each batch the reward
is computed for the whole batch (a judge gets batched calls) and every episode is
appended to ``out_dir/trajectories.jsonl`` (``webdancer.eval.journal``).

Resuming: every (task id, run) already in the journal is skipped, never recomputed.
``eval_state.json`` records the engine, reward and sampling; resuming with other
settings is refused.

Correctness is the answer term of the reward (``exact_match`` by default,
``gaia_exact_match`` for GAIA, ``judge`` when a judge model is given): a score of 1.0 is
correct; an undecided judge gives ``correct = None`` (left out of accuracies).

Web modes: ``replay`` serves a stored web offline; ``record`` fetches what is missing
(and Serper results with ``SERPER_API_KEY``) into the web directory's store, so that
``replay`` on the same directory later sees the same observations; ``live`` fetches
and stores nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from webdancer.agents.engines.base import SamplingParams
from webdancer.agents.engines.factory import engine_label, is_token_engine, make_engine
from webdancer.agents.rollout import Rollout, RolloutConfig
from webdancer.agents.trajectory import Trajectory
from webdancer.envs.tasks import Task
from webdancer.envs.web_env import WebEnv
from webdancer.eval.journal import (
    TRAJECTORIES,
    Journal,
    check_state,
    clear,
    episode_result,
    result_from_row,
    trajectory_row,
)
from webdancer.eval.metrics import EpisodeResult
from webdancer.eval.report import build_report, write_report
from webdancer.rewards import CombinedReward, RewardResult, answer_term, build_reward, recipe_lengths

log = logging.getLogger("webdancer.eval")

ANSWER_REWARDS = ("exact_match", "f1", "contains", "gaia_exact_match", "judge")
FORMAT_WEIGHT = 0.1
EnvFn = Callable[[], WebEnv]


# ------------------------------------------------------------------------------ reward


def auto_reward_spec(benchmark: str, *, judge: bool) -> dict[str, float]:
    """WebDancer's 0.1 x format + 0.9 x answer, the answer term picked for the benchmark:
    GAIA's quasi-exact match for GAIA, else the judge when there is one, else exact match."""
    if benchmark == "gaia":
        answer = "gaia_exact_match"
    else:
        answer = "judge" if judge else "exact_match"
    return {"format": FORMAT_WEIGHT, answer: 1.0 - FORMAT_WEIGHT}


def parse_reward_spec(text: str | Mapping[str, float], benchmark: str, *,
                      judge: bool) -> dict[str, float]:
    """``"auto"``, an answer reward name (``"judge"``: 0.1 format + 0.9 judge), a mapping,
    or ``"name:weight,name:weight"`` -> name -> weight."""
    if isinstance(text, Mapping):
        return {str(k): float(v) for k, v in text.items()}
    text = text.strip()
    if text == "auto":
        return auto_reward_spec(benchmark, judge=judge)
    if text in ANSWER_REWARDS:
        return {"format": FORMAT_WEIGHT, text: 1.0 - FORMAT_WEIGHT}
    spec: dict[str, float] = {}
    for item in text.split(","):
        name, sep, weight = item.partition(":")
        if not sep:
            raise ValueError(f"reward item {item!r} has no weight; write it as {item}:1.0, or use "
                             f"auto or one of {', '.join(ANSWER_REWARDS)}.")
        try:
            spec[name.strip()] = float(weight)
        except ValueError:
            raise ValueError(f"reward={text!r} is not valid; use name:weight pairs such as "
                             "format:0.1,exact_match:0.9.") from None
    return spec


def correct_of(result: RewardResult, answer_key: str) -> bool | None:
    """Whether the answer term scored 1.0; None when it is undecided (NaN)."""
    score = result.breakdown.get(answer_key, math.nan)
    if math.isnan(score):
        return None
    return score >= 1.0 - 1e-9


def make_reward(spec: Mapping[str, float], judge: Any, cfg: RolloutConfig,
                overlong: Mapping[str, float] | None) -> CombinedReward:
    """``build_reward`` with the overlong lengths defaulted to the rollout budget
    (``L_max``: the most tokens one episode can generate; ``L_cache = L_max / 5`` as in
    the DAPO recipe's 4096 of 20480)."""
    if "overlong" in spec and overlong is None:
        overlong = recipe_lengths(cfg.max_response_tokens)
    return build_reward(spec, judge_engine=judge, overlong=overlong)


# ------------------------------------------------------------------------------ running


@dataclasses.dataclass
class _Runner:
    """Runs batches of (task, run) pairs with one engine; returns their trajectories."""

    engine: Any
    env_fn: EnvFn
    cfg: RolloutConfig
    label: str
    rollout: Rollout | None = None

    def run(self, batch: Sequence[tuple[Task, int]], offset: int) -> list[Trajectory]:
        tasks = [task for task, _ in batch]
        c = self.cfg
        if is_token_engine(self.engine):
            if self.rollout is None:
                quiet = dataclasses.replace(c, progress=False)
                self.rollout = Rollout(self.engine, self.env_fn, quiet)
            trajs = self.rollout.run(tasks, group_size=1, group_offset=offset)
        else:
            from webdancer.data.sampling import sample_chat

            seed = None if c.seed is None else c.seed * 100_003 + offset
            params = SamplingParams(max_new_tokens=c.max_new_tokens, temperature=c.temperature,
                                    top_p=c.top_p, top_k=c.top_k, seed=seed)
            trajs = sample_chat(self.engine, self.env_fn, tasks, 1, params, name=self.label,
                                prompt_style=c.prompt_style, date=c.date, tools=c.tools,
                                tool_role=c.tool_role, max_turns=c.max_turns,
                                batch_size=max(1, len(tasks)), progress=False)
        for traj, (_, run) in zip(trajs, batch):
            traj.sample = run
            traj.engine = self.label
        return trajs


def open_env_fn(web: str | Path, cfg: RolloutConfig, *, mode: str, allow_hosts: Sequence[str],
                search: str, env_kwargs: Mapping[str, Any]) -> tuple[EnvFn, Any]:
    """-> (env factory, store to close): all envs share one store and one search backend."""
    from webdancer.envs.backends import open_web

    store, backend = open_web(web, mode=mode, allow_hosts=allow_hosts, search=search)
    # The env's own reward only fills the trajectory until the batch is scored.
    provisional = CombinedReward({"format": 1.0})

    def env_fn() -> WebEnv:
        return WebEnv(store=store, search=backend, tools=cfg.tools, max_turns=cfg.max_turns,
                      reward_fn=provisional, **env_kwargs)

    return env_fn, store


def _benchmark_of(tasks: Sequence[Task]) -> str:
    names = {str(t.meta.get("benchmark") or t.meta.get("source") or "") for t in tasks}
    return names.pop() if len(names) == 1 and "" not in names else "tasks"


def _check_ids(tasks: Sequence[Task]) -> None:
    seen: set[str] = set()
    for task in tasks:
        if not task.id:
            raise ValueError(f"task {task.question[:60]!r} has no id; resuming needs an id per "
                             "task (TaskList fills them in).")
        if task.id in seen:
            raise ValueError(f"task id {task.id!r} repeats; give each task a unique id.")
        seen.add(task.id)


def evaluate(
    tasks: Sequence[Task],
    engine: str | Any,
    web: str | Path | EnvFn,
    *,
    out_dir: str | Path,
    k: int = 3,
    rollout_cfg: RolloutConfig | None = None,
    reward_spec: str | Mapping[str, float] = "auto",
    judge_engine: str | Any = None,
    overlong: Mapping[str, float] | None = None,
    benchmark: str | None = None,
    mode: str = "replay",
    allow_hosts: Sequence[str] = (),
    search: str = "auto",
    env_kwargs: Mapping[str, Any] | None = None,
    engine_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 32,
    resume: bool = True,
    plots: bool = True,
    progress: bool = True,
    on_episode: Callable[[EpisodeResult], None] | None = None,
) -> dict[str, Any]:
    """Run ``k`` episodes of every task and write the report; see the module doc.

    ``engine``: a spec for ``make_engine`` (built with ``engine_kwargs``, only when some
    episode still has to run) or an engine object (``Engine`` or ``ChatEngine``).
    ``web``: a web directory opened in ``mode`` (``search``, ``allow_hosts`` and
    ``env_kwargs`` apply), or a function making ``WebEnv``s. ``rollout_cfg``: budgets,
    sampling and prompt (default: the reference eval's temperature 0.6, top-p 0.95).
    ``reward_spec``: see ``parse_reward_spec``; ``judge_engine`` a chat engine or spec.
    ``on_episode`` is called after each episode is written. Returns the report dict,
    also written to ``out_dir/report.json`` with ``report.md`` and the plots.
    """
    if k < 1 or batch_size < 1:
        raise ValueError(f"k={k} and batch_size={batch_size} must both be at least 1.")
    if not tasks:
        raise ValueError("no tasks to evaluate; check the benchmark file and limit.")
    _check_ids(tasks)
    cfg = rollout_cfg or RolloutConfig(temperature=0.6, top_p=0.95)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    benchmark = benchmark or _benchmark_of(tasks)
    judge = make_engine(judge_engine) if isinstance(judge_engine, str) else judge_engine
    spec = parse_reward_spec(reward_spec, benchmark, judge=judge is not None)
    answer_key = answer_term(spec)
    reward = make_reward(spec, judge, cfg, overlong)
    label = engine_label(engine)
    if not resume:
        clear(out)
    check_state(out, {"engine": label, "reward": spec, "benchmark": benchmark,
                      "temperature": cfg.temperature, "top_p": cfg.top_p,
                      "max_turns": cfg.max_turns, "max_new_tokens": cfg.max_new_tokens,
                      "prompt_style": cfg.prompt_style, "tools": list(cfg.tools)}, resume)
    journal = Journal(out / TRAJECTORIES)
    done = journal.done()
    pending = [(t, run) for run in range(k) for t in tasks if (t.id, run) not in done]
    resumed = len(tasks) * k - len(pending)
    if resumed:
        log.info("resuming %s: %d episodes done, %d to run", out, resumed, len(pending))
    t0 = time.perf_counter()
    if pending:
        _Batches(engine, cfg, reward, answer_key, journal, label, engine_kwargs or {},
                 batch_size, progress, on_episode).run(
            pending, web, mode=mode, allow_hosts=allow_hosts, search=search,
            env_kwargs=env_kwargs or {})
    wanted = {(t.id, run) for t in tasks for run in range(k)}
    results = [result_from_row(r) for r in journal.load()
               if (str(r["task_id"]), int(r["run"])) in wanted]
    run_info = {"episodes_run": len(pending), "episodes_resumed": resumed, "n_tasks": len(tasks),
                "wall_s": time.perf_counter() - t0}
    report = build_report(results, k, benchmark=benchmark, engine=label, reward=spec,
                          answer_reward=answer_key, mode=mode, sampling=dataclasses.asdict(cfg),
                          run=run_info)
    write_report(report, results, out, plots=plots)
    return report


@dataclasses.dataclass
class _Batches:
    """Runs pending episodes batch by batch, scoring and journaling each batch at once."""

    engine: Any
    cfg: RolloutConfig
    reward: CombinedReward
    answer_key: str
    journal: Journal
    label: str
    engine_kwargs: Mapping[str, Any]
    batch_size: int
    progress: bool
    on_episode: Callable[[EpisodeResult], None] | None

    def run(self, pending: Sequence[tuple[Task, int]], web: str | Path | EnvFn, *, mode: str,
            allow_hosts: Sequence[str], search: str, env_kwargs: Mapping[str, Any]) -> None:
        store = None
        if callable(web):
            env_fn = web
        else:
            env_fn, store = open_env_fn(web, self.cfg, mode=mode, allow_hosts=allow_hosts,
                                        search=search, env_kwargs=env_kwargs)
        try:
            engine = self.engine
            if isinstance(engine, str):
                engine = make_engine(engine, **self.engine_kwargs)
            runner = _Runner(engine, env_fn, self.cfg, self.label)
            with tqdm(total=len(pending), desc=f"eval {self.label}", unit="ep",
                      disable=not self.progress) as bar:
                for start in range(0, len(pending), self.batch_size):
                    batch = pending[start:start + self.batch_size]
                    self._finish(batch, runner.run(batch, start), bar)
        finally:
            if store is not None:
                store.close()  # record mode: flush the WARC files and the index

    def _finish(self, batch: Sequence[tuple[Task, int]], trajs: Sequence[Trajectory],
                bar: Any) -> None:
        results = self.reward.score_batch(trajs, [task for task, _ in batch])
        for traj, result in zip(trajs, results):
            traj.reward, traj.unjudged = result.score, result.unjudged
            traj.reward_breakdown = dict(result.breakdown)
        for traj, result, (_, run) in zip(trajs, results, batch):
            correct = correct_of(result, self.answer_key)
            self.journal.append(trajectory_row(traj, run, correct))
            bar.update(1)
            if self.on_episode is not None:
                self.on_episode(episode_result(traj, run, correct))
