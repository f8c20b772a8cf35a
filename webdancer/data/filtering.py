"""The three-stage trajectory filter: validity, then correctness, then quality.

A trajectory is dropped at the first stage it fails, with the first rule it breaks
(rules are checked in the order listed); the report counts what each stage let
through and why the rest were dropped.

**Validity** (the protocol and the budgets)

1. ``no_turns``: the trajectory has no assistant turn.
2. ``invalid_action`` (``require_no_invalid``): a turn was invalid, as the env
   judged it (bad format, unknown tool, bad arguments, a URL not in the snapshot).
3. ``format``: a turn has no non-empty ``<think>`` (``require_think``) or wrote a
   ``<tool_response>`` itself.
4. ``no_answer``: the last turn is not an ``<answer>`` (budget ran out, no reply).
5. ``too_many_turns``: more than ``max_turns`` assistant turns.
6. ``too_many_tokens``: more than ``max_tokens`` token ids (prompt included).
   Trajectories without token ids (chat models, imported files) are not measured.
7. ``too_many_chars``: more than ``max_chars`` characters over all messages.

**Correctness**: the reward named by ``reward`` (any registered answer reward:
``exact_match``, ``f1``, ``contains``, ``gaia_exact_match``; or ``judge`` with
``judge_engine``, judged in one batch) must reach ``min_reward`` against the gold
answer. ``wrong_answer`` or, when the judge could not decide, ``unjudged``.

**Quality**

1. ``too_few_tool_calls``: fewer than ``min_tool_calls`` valid tool calls. The default
   1 suits the synthetic web, where short paths are fine; WebSailor kept only
   trajectories with more than 5 tool calls for real-web SFT data (``min_tool_calls=6``).
2. ``too_many_tool_calls``: more than ``max_tool_calls``.
3. ``repeated_call``: the same tool with the same arguments (compared as canonical
   JSON) called twice.
4. ``answer_before_evidence``: no evidence precedes the answer. Evidence is the
   observation of a valid ``search`` or ``visit`` turn before the answer turn that
   contains the answer: after SQuAD normalization of both texts (lowercase, no
   punctuation, no articles, whitespace folded), the normalized final answer or the
   normalized gold answer occurs in the normalized observation as a whole-token
   sequence (``"12"`` does not match inside ``"123"``). An empty normalized answer
   never has evidence.
5. ``quality_judge``: the optional judge (``QualityJudge``, e.g. ``ChatQualityJudge``)
   gave a reason to drop.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from webdancer.agents.trajectory import Trajectory
from webdancer.envs.tasks import Task
from webdancer.rewards import REWARDS, JudgeReward, RewardResult, normalize_answer
from webdancer.rewards.judge import last_verdict

STAGES = ("validity", "correctness", "quality")
EVIDENCE_TOOLS = ("search", "visit")


class QualityJudge(Protocol):
    """Batched quality check: one entry per trajectory, a reason to drop it or None to keep it."""

    def __call__(self, trajectories: Sequence[Trajectory]) -> list[str | None]: ...


@dataclass
class FilterConfig:
    """Knobs of the three stages (module docstring). ``None`` switches a limit off."""

    # validity
    max_turns: int | None = None
    max_tokens: int | None = None
    max_chars: int | None = None
    require_think: bool = True
    require_no_invalid: bool = True
    # correctness
    reward: str = "exact_match"
    min_reward: float = 1.0
    judge_engine: Any = None  # a ChatEngine, for reward="judge"
    # quality
    min_tool_calls: int = 1
    max_tool_calls: int | None = None
    no_repeated_calls: bool = True
    no_answer_before_evidence: bool = True
    quality_judge: QualityJudge | None = None

    def __post_init__(self) -> None:
        REWARDS.get(self.reward)  # an unknown name fails here, listing the valid ones
        if self.reward == "judge" and self.judge_engine is None:
            raise ValueError("reward='judge' needs judge_engine (a ChatEngine); pass one or pick a rule reward.")
        for name in ("max_turns", "max_tokens", "max_chars", "max_tool_calls"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} must be at least 1, or None for no limit.")
        if self.min_tool_calls < 0:
            raise ValueError(f"min_tool_calls={self.min_tool_calls} must be >= 0.")

    def describe(self) -> dict[str, Any]:
        """The settings as plain values (engines and judges by class name)."""
        out: dict[str, Any] = {}
        for key, value in vars(self).items():
            is_plain = value is None or isinstance(value, (bool, int, float, str))
            out[key] = value if is_plain else type(value).__name__
        return out


@dataclass
class FilterReport:
    """What the filter kept, what each stage dropped and why, and the counts."""

    kept: list[Trajectory]
    dropped_by_stage: dict[str, list[tuple[Trajectory, str]]]
    counts: dict[str, int]  # "input", then per stage the number that passed it
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def reasons(self) -> dict[str, dict[str, int]]:
        """Per stage, how many trajectories each rule dropped (the rule is the reason's first word)."""
        return {stage: dict(Counter(reason.split(":", 1)[0] for _, reason in dropped).most_common())
                for stage, dropped in self.dropped_by_stage.items()}

    def per_engine(self) -> dict[str, dict[str, int]]:
        """Per engine: input and the number passing each stage."""
        out: dict[str, dict[str, int]] = {}
        dropped_at = {id(t): stage for stage, items in self.dropped_by_stage.items() for t, _ in items}
        everyone = [t for items in self.dropped_by_stage.values() for t, _ in items] + self.kept
        for traj in everyone:
            row = out.setdefault(traj.engine or "?", {"input": 0, **dict.fromkeys(STAGES, 0)})
            row["input"] += 1
            stop = dropped_at.get(id(traj))
            for stage in STAGES:
                if stage == stop:
                    break
                row[stage] += 1
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "reasons": self.reasons, "per_engine": self.per_engine(),
                "config": dict(self.config)}

    def to_markdown(self) -> str:
        n_in, n_kept = self.counts["input"], self.counts[STAGES[-1]]
        lines = ["# Trajectory filter report", "",
                 f"Kept **{n_kept}** of {n_in} trajectories ({100.0 * n_kept / max(n_in, 1):.1f}%).", "",
                 "| stage | in | dropped | passed |", "|---|---:|---:|---:|"]
        previous = n_in
        for stage in STAGES:
            passed = self.counts[stage]
            lines.append(f"| {stage} | {previous} | {previous - passed} | {passed} |")
            previous = passed
        lines += ["", "## Reasons", ""]
        rows = [f"| {stage} | {rule} | {count} |" for stage, rules in self.reasons.items()
                for rule, count in rules.items()]
        lines += ["| stage | rule | dropped |", "|---|---|---:|", *rows] if rows else ["Nothing was dropped."]
        lines += ["", "## By engine", "", "| engine | input | " + " | ".join(STAGES) + " |",
                  "|---|---:|" + "---:|" * len(STAGES)]
        for engine, row in self.per_engine().items():
            lines.append(f"| {engine} | {row['input']} | " + " | ".join(str(row[s]) for s in STAGES) + " |")
        lines += ["", "## Settings", ""] + [f"- `{key}`: {value}" for key, value in self.config.items()]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | Path, stem: str = "report") -> tuple[Path, Path]:
        """Write ``{stem}.md`` and ``{stem}.json`` into ``out_dir``; -> their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        md, js = out / f"{stem}.md", out / f"{stem}.json"
        md.write_text(self.to_markdown(), encoding="utf-8")
        js.write_text(json.dumps(self.to_json(), indent=2, default=str), encoding="utf-8")
        return md, js


# ---------------------------------------------------------------- the rules


def validity_reason(traj: Trajectory, cfg: FilterConfig) -> str | None:
    """The first validity rule ``traj`` breaks, as ``"rule: detail"``, or None."""
    if not traj.turns:
        return "no_turns: the trajectory has no assistant turn"
    if cfg.require_no_invalid:
        bad = [i for i, t in enumerate(traj.turns) if not t.valid]
        if bad or traj.invalid_actions:
            first = traj.turns[bad[0]].error if bad else None
            return f"invalid_action: {max(len(bad), traj.invalid_actions)} invalid turn(s); first: {first}"
    for i, turn in enumerate(traj.turns):
        if cfg.require_think and not turn.has_think:
            return f"format: turn {i} has no <think>"
        if turn.wrote_tool_response:
            return f"format: turn {i} wrote a <tool_response> itself"
    if traj.turns[-1].kind != "answer":
        return f"no_answer: ended by {traj.termination or 'no answer turn'}"
    if cfg.max_turns is not None and len(traj.turns) > cfg.max_turns:
        return f"too_many_turns: {len(traj.turns)} > {cfg.max_turns}"
    if cfg.max_tokens is not None and len(traj.ids) > cfg.max_tokens:
        return f"too_many_tokens: {len(traj.ids)} > {cfg.max_tokens}"
    if cfg.max_chars is not None:
        chars = sum(len(m["content"]) for m in traj.messages)
        if chars > cfg.max_chars:
            return f"too_many_chars: {chars} > {cfg.max_chars}"
    return None


def correctness_scores(trajs: Sequence[Trajectory], golds: Sequence[Task], cfg: FilterConfig) -> list[RewardResult]:
    """The correctness reward of each trajectory against its gold task (a judge in one batch)."""
    if cfg.reward == "judge":
        return JudgeReward(cfg.judge_engine).score_batch(list(trajs), list(golds))
    fn = REWARDS.get(cfg.reward)
    return [fn(traj, gold) for traj, gold in zip(trajs, golds)]


def _call_key(tool: str | None, arguments: Mapping[str, Any]) -> str:
    return f"{tool}:{json.dumps(arguments, sort_keys=True, ensure_ascii=False)}"


def _contains_tokens(haystack: str, needle: str) -> bool:
    return bool(needle) and f" {needle} " in f" {haystack} "


def has_evidence(traj: Trajectory, gold: str) -> bool:
    """True when a valid search/visit observation before the answer turn contains the
    final or the gold answer (module docstring, quality rule 4)."""
    answers = [a for a in (normalize_answer(traj.answer or ""), normalize_answer(gold)) if a]
    if not answers:
        return False
    for turn in traj.turns:
        if turn.kind == "answer":
            return False
        if turn.kind == "tool" and turn.valid and turn.tool in EVIDENCE_TOOLS and turn.observation:
            seen = normalize_answer(turn.observation)
            if any(_contains_tokens(seen, a) for a in answers):
                return True
    return False


def quality_reason(traj: Trajectory, gold: Task, cfg: FilterConfig) -> str | None:
    """The first rule-based quality rule ``traj`` breaks, or None (the judge runs separately)."""
    calls = [t for t in traj.turns if t.kind == "tool" and t.valid]
    if len(calls) < cfg.min_tool_calls:
        return f"too_few_tool_calls: {len(calls)} < {cfg.min_tool_calls}"
    if cfg.max_tool_calls is not None and len(calls) > cfg.max_tool_calls:
        return f"too_many_tool_calls: {len(calls)} > {cfg.max_tool_calls}"
    if cfg.no_repeated_calls:
        seen: set[str] = set()
        for turn in traj.turns:
            if turn.kind != "tool":
                continue
            key = _call_key(turn.tool, turn.arguments)
            if key in seen:
                return f"repeated_call: {turn.tool} {json.dumps(turn.arguments, ensure_ascii=False)[:120]}"
            seen.add(key)
    if cfg.no_answer_before_evidence and not has_evidence(traj, gold.answer):
        return "answer_before_evidence: no search/visit observation before the answer contains it"
    return None


# ---------------------------------------------------------------- the filter


def _gold_index(tasks: Sequence[Task] | None) -> dict[str, Task]:
    index: dict[str, Task] = {}
    for task in tasks or ():
        if task.id:
            index.setdefault(f"id:{task.id}", task)
        index.setdefault(f"q:{task.question}", task)
    return index


def _gold(traj: Trajectory, index: Mapping[str, Task]) -> Task:
    """The task whose answer is gold: from ``tasks`` by id, then by question, else the trajectory's own."""
    if traj.task.id and f"id:{traj.task.id}" in index:
        return index[f"id:{traj.task.id}"]
    return index.get(f"q:{traj.task.question}", traj.task)


def three_stage_filter(trajs: Sequence[Trajectory], cfg: FilterConfig | None = None,
                       tasks: Sequence[Task] | None = None) -> FilterReport:
    """Filter ``trajs`` through validity, correctness and quality (module docstring).

    ``tasks``, when given, supply the gold answers (matched by task id, then by question
    text); otherwise each trajectory's own task does.
    """
    cfg = cfg or FilterConfig()
    index = _gold_index(tasks)
    dropped: dict[str, list[tuple[Trajectory, str]]] = {stage: [] for stage in STAGES}
    counts = {"input": len(trajs)}

    survivors: list[Trajectory] = []
    for traj in trajs:
        reason = validity_reason(traj, cfg)
        if reason:
            dropped["validity"].append((traj, reason))
        else:
            survivors.append(traj)
    counts["validity"] = len(survivors)

    golds = [_gold(t, index) for t in survivors]
    correct: list[tuple[Trajectory, Task]] = []
    for traj, gold, result in zip(survivors, golds, correctness_scores(survivors, golds, cfg)):
        if result.unjudged:
            dropped["correctness"].append((traj, "unjudged: the judge gave no verdict"))
        elif result.score < cfg.min_reward:
            dropped["correctness"].append(
                (traj, (f"wrong_answer: {cfg.reward}={result.score:.2f} < {cfg.min_reward} "
                       f"(answer {traj.answer!r}, gold {gold.answer!r})")))
        else:
            correct.append((traj, gold))
    counts["correctness"] = len(correct)

    checked: list[Trajectory] = []
    for traj, gold in correct:
        reason = quality_reason(traj, gold, cfg)
        if reason:
            dropped["quality"].append((traj, reason))
        else:
            checked.append(traj)
    kept = checked
    if cfg.quality_judge is not None and checked:
        verdicts = cfg.quality_judge(checked)
        kept = []
        for traj, verdict in zip(checked, verdicts, strict=True):
            if verdict:
                dropped["quality"].append((traj, f"quality_judge: {verdict}"))
            else:
                kept.append(traj)
    counts["quality"] = len(kept)
    return FilterReport(kept=kept, dropped_by_stage=dropped, counts=counts, config=cfg.describe())


# ---------------------------------------------------------------- an LLM quality judge


QUALITY_PROMPT = """\
You review a web research agent's trajectory for use as training data.

Question: {question}
Gold answer: {gold}

Trajectory (the agent's turns and what its tools returned, long outputs cut):
{trajectory}

Keep the trajectory when every step follows sensibly from what the agent had seen, the \
reasoning states no facts the tool outputs did not show, and the final answer is supported \
by the tool outputs. Drop it when it guesses, contradicts itself, ignores what it found, or \
repeats itself without reason.

Explain in at most three sentences, then end with one line that is exactly \
`Verdict: keep` or `Verdict: drop`."""

_QUALITY_VERDICT = re.compile(r"^verdict\s*[:=\-]?\s*(keep|drop)\b", re.IGNORECASE)


def parse_quality_verdict(text: str) -> bool | None:
    """True (keep), False (drop) or None from the last ``Verdict: keep|drop`` line
    (lines read as the answer judge reads them: markdown decoration stripped)."""
    word = last_verdict(text, (_QUALITY_VERDICT,))
    return None if word is None else word == "keep"


class ChatQualityJudge:
    """A ``QualityJudge`` that asks a chat model (``ChatEngine``) about each trajectory in one batch.

    Tool outputs are cut to ``observation_chars`` each. A reply without a verdict drops
    the trajectory (``"no verdict"``): a judge that cannot be read should not let data through.
    """

    def __init__(self, engine: Any, *, params: Any = None, prompt: str = QUALITY_PROMPT,
                 observation_chars: int = 1500) -> None:
        self.engine = engine
        if params is None:
            from webdancer.agents.engines.base import SamplingParams

            params = SamplingParams(max_new_tokens=512, temperature=0.0, stop=())
        self.params = params
        self.prompt = prompt
        self.observation_chars = observation_chars

    def render(self, traj: Trajectory) -> str:
        parts = []
        for i, turn in enumerate(traj.turns):
            parts.append(f"[assistant {i}]\n{turn.text.strip()}")
            if turn.observation is not None:
                obs = turn.observation
                if len(obs) > self.observation_chars:
                    obs = obs[: self.observation_chars] + " [...]"
                parts.append(f"[tool output {i}]\n{obs}")
        return self.prompt.format(question=traj.task.question, gold=traj.task.answer, trajectory="\n\n".join(parts))

    def __call__(self, trajectories: Sequence[Trajectory]) -> list[str | None]:
        conversations = [[{"role": "user", "content": self.render(t)}] for t in trajectories]
        replies = self.engine.chat(conversations, self.params)
        out: list[str | None] = []
        for reply in replies:
            verdict = parse_quality_verdict(reply.text)
            out.append(None if verdict else ("judged low quality" if verdict is False else "no verdict"))
        return out
