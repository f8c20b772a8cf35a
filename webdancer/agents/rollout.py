"""Multi-turn rollouts: many environments, one engine, token ids kept exactly.

Each trajectory's token ids grow by two kinds of pieces: the ids the engine
sampled (kept as they are, never decoded and re-encoded; loss mask 1) and the ids
of the observation turn that follows (loss mask 0). An observation turn is
tokenized alone: the template is rendered with and without it and the suffix is
encoded. Where the template is not append-only (it rewrites earlier turns, as
templates that strip past ``<think>`` do) the suffix is taken from a placeholder
rendering instead, so the ids stay those the model actually saw.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tqdm.auto import tqdm

from webdancer.agents.engines.base import Engine, SamplingParams
from webdancer.agents.prompts import (
    Message,
    build_messages,
    encode,
    observation_message,
    render_text,
)
from webdancer.agents.trajectory import Trajectory, TurnRecord
from webdancer.envs.actions import parse_turn
from webdancer.envs.tasks import Task
from webdancer.envs.web_env import ANSWER, WebEnv

log = logging.getLogger("webdancer.agents")

# Termination reasons beyond the env's own (answer, call/context budget exhausted).
ANSWER_AT_TOKEN_LIMIT = "answer_at_token_limit"
FORMAT_ERROR_AT_TOKEN_LIMIT = "format_error_at_token_limit"
NO_ANSWER = "no_answer"
CONTEXT_LIMIT_NOTE = ("You have reached the context limit. Do not call any more tools; "
                      "give your final answer now as <answer>...</answer>.")
_PLACEHOLDER = "\u2063WEBDANCER-TURN\u2063"


@dataclass
class RolloutConfig:
    """Budgets and sampling of one rollout. Token budgets are in tokens."""

    max_turns: int = 40
    max_new_tokens: int = 512  # per assistant turn
    max_context_tokens: int = 31 * 1024 - 500
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    prompt_style: str = "webdancer"
    tool_role: bool = False
    tools: tuple[str, ...] = ("search", "visit")
    date: str | None = None
    progress: bool = True
    # Episodes generated together; 0: all of a call's episodes at once. With an HF engine a
    # bound keeps the multi-turn prefix cache (``HFEngine(prefix_cache_mb=...)``) large
    # enough for every episode in flight: past it, each turn prefills whole contexts again.
    max_in_flight: int = 0

    @property
    def max_response_tokens(self) -> int:
        """The most tokens one episode can generate: ``L_max`` of the overlong penalty."""
        return min(self.max_turns * self.max_new_tokens, self.max_context_tokens)


@dataclass
class RolloutStats:
    generate_s: float = 0.0
    env_s: float = 0.0
    generated_tokens: int = 0
    episodes: int = 0
    engine_calls: int = 0

    @property
    def env_share(self) -> float:
        return self.env_s / max(self.generate_s + self.env_s, 1e-9)


class ObservationEncoder:
    """Token ids of one observation turn, appended after the model's own ids."""

    def __init__(self, tokenizer: Any, tool_role: bool = False) -> None:
        self.tokenizer = tokenizer
        self.tool_role = tool_role
        self.append_only: bool | None = None

    def suffix_text(self, history: Sequence[Message], assistant_text: str, observation: str) -> str:
        """Template text from the end of the assistant's content to the next generation prompt."""
        obs = observation_message(observation, tool_role=self.tool_role)
        return self.messages_suffix_text(history, assistant_text, [obs])

    def messages_suffix_text(self, history: Sequence[Message], assistant_text: str,
                             messages: Sequence[Message]) -> str:
        """As ``suffix_text``, for observation turns already built as messages (none, one or several)."""
        head = render_text(self.tokenizer, history, add_generation_prompt=True) + assistant_text
        full = render_text(self.tokenizer, [*history, {"role": "assistant", "content": assistant_text}, *messages],
                           add_generation_prompt=True)
        if full.startswith(head):
            self.append_only = self.append_only is not False
            return full[len(head):]
        if self.append_only is not False:
            log.warning("the chat template is not append-only (it rewrites earlier turns); observation turns are "
                        "tokenized from a placeholder rendering and the sampled ids are kept as they are")
        self.append_only = False
        probe = render_text(self.tokenizer, [*history, {"role": "assistant", "content": _PLACEHOLDER}, *messages],
                            add_generation_prompt=True)
        return probe[probe.rindex(_PLACEHOLDER) + len(_PLACEHOLDER):]

    def encode(self, history: Sequence[Message], assistant_text: str, observation: str) -> list[int]:
        return encode(self.tokenizer, self.suffix_text(history, assistant_text, observation))

    def encode_messages(self, history: Sequence[Message], assistant_text: str,
                        messages: Sequence[Message]) -> list[int]:
        """Token ids of ``messages_suffix_text`` (SFT tokenizes recorded conversations with it)."""
        return encode(self.tokenizer, self.messages_suffix_text(history, assistant_text, messages))


@dataclass
class _Live:
    """A trajectory in progress."""

    traj: Trajectory
    env: WebEnv
    history: list[Message]
    forced: bool = False  # told to answer at the context limit
    done: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class Rollout:
    """Run tasks x G samples through environments made by ``env_fn`` with ``engine``."""

    def __init__(self, engine: Engine, env_fn: Callable[[], WebEnv], cfg: RolloutConfig | None = None) -> None:
        self.engine = engine
        self.env_fn = env_fn
        self.cfg = cfg or RolloutConfig()
        self.encoder = ObservationEncoder(engine.tokenizer, self.cfg.tool_role)
        self._envs: list[WebEnv] = []
        self.stats = RolloutStats()

    def _env(self, i: int) -> WebEnv:
        while len(self._envs) <= i:
            self._envs.append(self.env_fn())
        return self._envs[i]

    def run(self, tasks: Sequence[Task], group_size: int = 1, *, group_offset: int = 0) -> list[Trajectory]:
        """One trajectory per (task, sample), ordered by task then sample; ``group`` = task index + offset.

        Episodes run ``cfg.max_in_flight`` at a time (all at once when 0), each wave to its end."""
        cfg, tok = self.cfg, self.engine.tokenizer
        if cfg.max_in_flight < 0:
            raise ValueError(f"max_in_flight={cfg.max_in_flight} must be >= 0 (0: every episode at once).")
        starts: list[tuple[Task, int, int, list[Message], list[int]]] = []
        for t, task in enumerate(tasks):
            messages = build_messages(task.question, cfg.tools, style=cfg.prompt_style, date=cfg.date)
            ids = encode(tok, render_text(tok, messages, add_generation_prompt=True))
            starts += [(task, group_offset + t, g, messages, ids) for g in range(group_size)]
        wave = cfg.max_in_flight or max(len(starts), 1)
        bar = tqdm(total=len(starts), desc="rollout", unit="ep", disable=not cfg.progress, leave=False)
        out: list[Trajectory] = []
        round_index = 0
        for first in range(0, len(starts), wave):
            live: list[_Live] = []
            for task, group, g, messages, ids in starts[first: first + wave]:
                env = self._env(len(live))
                env.max_turns = cfg.max_turns
                env.reset(options={"task": task})  # every sample of a group starts from the same task
                traj = Trajectory(task=task, group=group, sample=g, messages=list(messages),
                                  prompt_len=len(ids), ids=list(ids), loss_mask=[0] * len(ids),
                                  logprobs=[0.0] * len(ids), engine=type(self.engine).__name__)
                live.append(_Live(traj, env, list(messages)))
            while active := [x for x in live if not x.done]:
                # Seeds differ per call (group_offset) and per round, and repeat on a rerun.
                self._round(active, group_offset * 1_009 + round_index)
                round_index += 1
                bar.update(sum(x.done for x in active))
            out += [x.traj for x in live]
        bar.close()
        self.stats.episodes += len(out)
        return out

    def _round(self, active: list[_Live], round_index: int) -> None:
        cfg = self.cfg
        budgets = [max(1, min(cfg.max_new_tokens, cfg.max_context_tokens - len(x.traj.ids))) for x in active]
        # Rows with the same budget share one engine call; most rounds have a single budget.
        by_budget: dict[int, list[int]] = {}
        for i, b in enumerate(budgets):
            by_budget.setdefault(b, []).append(i)
        for budget, rows in by_budget.items():
            seed = None if cfg.seed is None else cfg.seed * 100_003 + round_index
            params = SamplingParams(max_new_tokens=budget, temperature=cfg.temperature, top_p=cfg.top_p,
                                    top_k=cfg.top_k, seed=seed)
            t0 = time.perf_counter()
            gens = self.engine.generate([active[i].traj.ids for i in rows], params)
            self.stats.generate_s += time.perf_counter() - t0
            self.stats.engine_calls += 1
            for i, gen in zip(rows, gens):
                self.stats.generated_tokens += len(gen.token_ids)
                t1 = time.perf_counter()
                self._advance(active[i], gen.token_ids, gen.logprobs, gen.text, gen.finish_reason)
                self.stats.env_s += time.perf_counter() - t1

    def _advance(self, x: _Live, ids: list[int], logprobs: list[float], text: str, finish: str) -> None:
        traj, cfg = x.traj, self.cfg
        if not text and ids:
            text = self.engine.tokenizer.decode(ids, skip_special_tokens=False)
        start = len(traj.ids)
        traj.ids.extend(ids)
        traj.loss_mask.extend([1] * len(ids))
        traj.logprobs.extend(logprobs)
        parsed = parse_turn(text)
        obs, reward, terminated, truncated, info = x.env.step(text)
        record = TurnRecord(text=text, kind=parsed.kind, tool=info.get("tool"), arguments=dict(parsed.arguments),
                            valid=bool(info.get("valid_action")), error=info.get("error"),
                            has_think=parsed.has_think, n_tool_calls=parsed.n_tool_calls,
                            n_answers=parsed.n_answers, wrote_tool_response=parsed.wrote_tool_response,
                            span=(start, len(traj.ids)), finish_reason=finish)
        traj.turns.append(record)
        traj.messages.append({"role": "assistant", "content": text})
        if terminated or truncated:
            reason = info.get("termination", ANSWER)
            if x.forced:
                reason = ANSWER_AT_TOKEN_LIMIT if reason == ANSWER else FORMAT_ERROR_AT_TOKEN_LIMIT
            self._close(x, reason, float(reward), dict(info.get("reward_breakdown", {})),
                        bool(info.get("reward_unjudged", False)))
            return
        if x.forced:  # told to answer and did not
            self._finish_with_reward(x, FORMAT_ERROR_AT_TOKEN_LIMIT)
            return
        if finish == "stop" and not ids:
            self._finish_with_reward(x, NO_ANSWER)
            return
        suffix = self.encoder.encode(x.history, text, obs)
        if len(traj.ids) + len(suffix) + 16 > cfg.max_context_tokens:
            obs = CONTEXT_LIMIT_NOTE  # REFERENCES: told once to stop calling tools and answer now
            suffix = self.encoder.encode(x.history, text, obs)
            x.forced = True
            if len(traj.ids) + len(suffix) + 1 > cfg.max_context_tokens:
                self._finish_with_reward(x, FORMAT_ERROR_AT_TOKEN_LIMIT)
                return
        record.observation = obs
        record.obs_span = (len(traj.ids), len(traj.ids) + len(suffix))
        traj.ids.extend(suffix)
        traj.loss_mask.extend([0] * len(suffix))
        traj.logprobs.extend([0.0] * len(suffix))
        x.history.append({"role": "assistant", "content": text})
        x.history.append(observation_message(obs, tool_role=cfg.tool_role))
        traj.messages.append(x.history[-1])

    def _finish_with_reward(self, x: _Live, reason: str) -> None:
        ep = x.env.episode
        assert ep is not None
        result = x.env.reward_fn(ep, ep.task)
        self._close(x, reason, result.score, dict(result.breakdown), result.unjudged)

    def _close(self, x: _Live, reason: str, reward: float, breakdown: dict[str, float],
               unjudged: bool = False) -> None:
        ep = x.env.episode
        assert ep is not None
        traj = x.traj
        traj.termination = reason
        traj.answer = ep.answer
        traj.tool_calls = ep.tool_calls
        traj.invalid_actions = ep.invalid_actions
        traj.reward = float(reward)
        traj.reward_breakdown = breakdown
        traj.unjudged = unjudged
        x.done = True


def with_sampling(cfg: RolloutConfig, **changes: Any) -> RolloutConfig:
    """A copy of ``cfg`` with other sampling settings (e.g. greedy evaluation)."""
    return replace(cfg, **changes)
