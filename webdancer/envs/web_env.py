"""``WebEnv``: one ReAct episode over a web of page snapshots, as a Gymnasium env.

Observation and action are text. ``reset`` shows the question; each ``step`` takes
one assistant turn (``<think>`` + one ``<tool_call>`` or an ``<answer>``), runs the
tool and returns its response text. The episode terminates on an answer and is
truncated when the turn budget or the observation budget runs out. Nothing the agent
writes makes ``step`` raise: bad turns come back as error observations with
``info["valid_action"] = False``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym

from webdancer.conf.web import VISIT_MODES
from webdancer.envs.actions import ParsedTurn, parse_turn
from webdancer.envs.spaces import AnyText
from webdancer.envs.tasks import Task, TaskSource, as_task_source
from webdancer.envs.tools import TOOLS, ToolContext, ToolResult
from webdancer.rewards import CombinedReward, RewardFn
from webdancer.web.search import SearchBackend
from webdancer.web.snapshots import SnapshotStore

# Why an episode ended (REFERENCES: WebDancer's harness records these per episode).
ANSWER = "answer"
CALL_BUDGET = "call_budget_exhausted"
CONTEXT_BUDGET = "context_budget_exhausted"

ANSWER_NOW = ("You have used up your {what}. Do not call any more tools; "
              "write your final answer now as <answer>...</answer>.")


@dataclass
class Episode:
    """What happened in one episode; the reward function reads it."""

    task: Task
    turns: list[ParsedTurn] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    answer: str | None = None
    tool_calls: int = 0
    invalid_actions: int = 0
    observation_chars: int = 0
    termination: str | None = None
    search_ms: float = 0.0
    visit_ms: float = 0.0
    warned: bool = False

    @property
    def done(self) -> bool:
        return self.termination is not None


class WebEnv(gym.Env[str, str]):
    """A web information-seeking episode over a ``SnapshotStore`` and a search backend."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "human"]}

    def __init__(
        self,
        web: str | Path | None = None,
        *,
        store: SnapshotStore | None = None,
        search: SearchBackend | None = None,
        tasks: TaskSource | Sequence[Task] | str | Path | None = None,
        mode: str = "replay",
        tools: Sequence[str] = ("search", "visit"),
        max_turns: int = 40,
        max_observation_chars: int = 60_000,
        max_turn_observation_chars: int = 8_000,
        top_k: int = 10,
        visit_mode: str = "passages",
        visit_budget_chars: int = 3_000,
        max_links: int = 20,
        snippet_chars: int | None = None,
        reward_fn: RewardFn | None = None,
        reward_weights: Mapping[str, float] | None = None,
        allow_hosts: Sequence[str] = (),
        render_mode: str | None = None,
    ) -> None:
        if web is not None and store is None:
            from webdancer.envs.backends import open_web

            store, opened_search = open_web(web, mode=mode, allow_hosts=allow_hosts)
            search = search if search is not None else opened_search
        if store is None:
            raise ValueError("WebEnv needs a web directory (web=...) or a SnapshotStore (store=...).")
        for name in tools:
            TOOLS.get(name)  # unknown tool names fail here, listing the valid ones
        if visit_mode not in VISIT_MODES:
            raise ValueError(f"visit_mode={visit_mode!r} is not a visit mode; use one of: {', '.join(VISIT_MODES)}.")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; use 'ansi' or 'human'.")
        self.tool_names = tuple(tools)
        self.tasks = as_task_source(tasks)
        self.max_turns = max_turns
        self.max_observation_chars = max_observation_chars
        self.max_turn_observation_chars = max_turn_observation_chars
        self.reward_fn: RewardFn = reward_fn or CombinedReward(reward_weights)
        self.render_mode = render_mode
        if snippet_chars is not None and getattr(search, "snippet_chars", snippet_chars) != snippet_chars:
            # A shallow copy: the caller's backend may serve other envs with their own length.
            search = copy.copy(search)
            search.snippet_chars = snippet_chars  # type: ignore[union-attr]
        self.ctx = ToolContext(store=store, search=search, top_k=top_k, visit_mode=visit_mode,
                               visit_budget_chars=visit_budget_chars, max_links=max_links)
        self.observation_space = AnyText()
        self.action_space = AnyText()
        self.episode: Episode | None = None
        self._last_obs = ""

    # -- gymnasium API -------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        task = self._pick_task(options or {})
        self.episode = Episode(task=task)
        self._last_obs = task.question
        info = {"task_id": task.id, "question": task.question, "turn": 0, "tool": None,
                "valid_action": True, "error": None, "tool_calls": 0, "invalid_actions": 0}
        return task.question, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        ep = self.episode
        if ep is None or ep.done:
            msg = "The episode is over; call reset() to start a new one."
            return msg, 0.0, True, False, {"turn": 0, "tool": None, "valid_action": False, "error": msg}
        turn = parse_turn(action)
        ep.turns.append(turn)
        info: dict[str, Any] = {"turn": len(ep.turns), "tool": turn.tool, "valid_action": turn.valid,
                                "error": turn.error, "env/search_ms": 0.0, "env/visit_ms": 0.0}
        if turn.kind == "answer":
            ep.answer = turn.answer
            info["answer"] = turn.answer
            obs = ""
            ep.termination = ANSWER
        elif turn.kind == "tool":
            result = self._run_tool(turn, info)
            obs = result.text if result.ok else (result.error or "The tool call failed.")
            if result.ok and result.error:
                obs = f"{obs}\n{result.error}"
        else:
            obs = turn.error or "Invalid turn."
        if not info["valid_action"]:
            ep.invalid_actions += 1
        obs = self._apply_budgets(ep, obs)
        ep.observations.append(obs)
        self._last_obs = obs
        info.update(tool_calls=ep.tool_calls, invalid_actions=ep.invalid_actions)
        reward = 0.0
        if ep.done:
            reward = self._finish(ep, info)
        terminated = ep.termination == ANSWER
        return obs, reward, terminated, ep.done and not terminated, info

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self._last_obs
        if self.render_mode == "human":
            print(self._last_obs)
        return None

    # -- internals -------------------------------------------------------------------
    def _pick_task(self, options: Mapping[str, Any]) -> Task:
        task = options.get("task")
        if isinstance(task, Task):
            return task
        if isinstance(task, Mapping):
            return Task.from_dict(task, where="options['task']")
        if task is not None:
            raise TypeError("options['task'] must be a Task or a dict with 'question' and 'answer'.")
        if self.tasks is None or len(self.tasks) == 0:
            raise ValueError("no task given: pass options={'task': ...} to reset() or tasks=... to the env.")
        if "index" in options:
            return self.tasks[int(options["index"]) % len(self.tasks)]
        return self.tasks[int(self.np_random.integers(len(self.tasks)))]

    def _run_tool(self, turn: ParsedTurn, info: dict[str, Any]) -> ToolResult:
        ep = self.episode
        assert ep is not None and turn.tool is not None
        if turn.tool not in self.tool_names:
            info["valid_action"] = False
            info["error"] = (f"Unknown tool {turn.tool!r}; the tools are {', '.join(self.tool_names)}, "
                             "or finish with <answer>...</answer>.")
            return ToolResult("", ok=False, error=info["error"])
        ep.tool_calls += 1
        try:
            result = TOOLS.get(turn.tool)(turn.arguments, self.ctx)
        except Exception as e:  # noqa: BLE001  nothing escapes step(): a tool's fault becomes an observation
            result = ToolResult("", ok=False, error=f"The {turn.tool} tool failed ({type(e).__name__}: {e}).")
            info["error"] = result.error
            return result
        key = "env/search_ms" if turn.tool == "search" else "env/visit_ms"
        info[key] = result.ms
        if turn.tool == "search":
            ep.search_ms += result.ms
        elif turn.tool == "visit":
            ep.visit_ms += result.ms
        if not result.ok:
            info["valid_action"] = False
            info["error"] = result.error
        return result

    def _apply_budgets(self, ep: Episode, obs: str) -> str:
        if ep.done:
            return obs
        if len(obs) > self.max_turn_observation_chars:
            obs = obs[: self.max_turn_observation_chars] + "\n[... truncated]"
        ep.observation_chars += len(obs)
        if len(ep.turns) >= self.max_turns:
            ep.termination = CALL_BUDGET
        elif ep.warned:
            ep.termination = CONTEXT_BUDGET  # told to answer and did not
        elif ep.observation_chars > self.max_observation_chars or len(ep.turns) == self.max_turns - 1:
            ep.warned = True
            what = "observation budget" if ep.observation_chars > self.max_observation_chars else "tool calls"
            obs = f"{obs}\n\n{ANSWER_NOW.format(what=what)}"
        return obs

    def _finish(self, ep: Episode, info: dict[str, Any]) -> float:
        result = self.reward_fn(ep, ep.task)
        info["termination"] = ep.termination
        info["reward_breakdown"] = dict(result.breakdown)
        info["reward_unjudged"] = result.unjudged
        info["env/search_ms_total"] = ep.search_ms
        info["env/visit_ms_total"] = ep.visit_ms
        return float(result.score)
