"""Multi-run evaluation metrics (WebDancer / WebWalker reporting conventions).

Every question is run ``k`` times (runs are numbered; the first ``k`` run ids in
ascending order are "the k runs"). From one ``EpisodeResult`` per (question, run):

- **Pass@1 per run**: share of that run's judged episodes that are correct.
- **Avg. Pass@k**: mean of the per-run Pass@1 over the k runs. **Best Pass@1**: their max.
- **Pass@k**: share of questions answered correctly in at least one of the k runs.
- **Cons@k**: share of questions whose majority-vote answer is correct. Votes are the
  runs' answers after ``normalize_answer`` (lowercase, no punctuation or articles; an
  answer that normalizes to nothing, such as ``"A"``, votes as itself lowercased);
  empty answers do not vote. A tie goes to the tied answer that appeared first in run
  order. The winner's correctness is the verdict of the first run (in run order) that
  gave it and was judged. A question where no run answered counts as wrong.
- **pass@k (unbiased)**, Chen et al. 2021, when there are more runs ``n`` than ``k``:
  per question ``1 - C(n - c, k) / C(n, k)`` with ``c`` correct of ``n`` judged runs,
  averaged over questions with at least ``k`` judged runs.
- **pass@k curve**: that estimate for k = 1, 2, 4, ... and the number of runs, from every
  run. Where pass@1 sits under pass@n is the headroom that sharpening the policy (RL) can
  take; an RL model whose curve is flatter than its SFT model's has narrowed what it
  solves at large k (Yue et al. 2025, arXiv:2504.13837).

Unjudged episodes (``correct is None``, see ``webdancer.rewards.judge``) never count as
wrong: they are left out of every denominator and counted in ``n_unjudged``. A question
whose Pass@k or Cons@k they leave undetermined is left out of that metric and counted.
A question missing one of the k runs is *incomplete* and left out of Pass@k and Cons@k.
All accuracies are fractions in [0, 1]; a metric with an empty denominator is None.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from webdancer.rewards.rules import normalize_answer


@dataclass(frozen=True)
class EpisodeResult:
    """One episode of one question in one run.

    ``correct`` is None when the judge could not decide. ``tool_calls``,
    ``invalid_actions`` and ``turns`` are counts of assistant turns; ``tokens`` is the
    episode's generated token count; ``termination`` its end reason ("answer",
    "budget", ...); ``meta`` carries the task's metadata (level, type, ...) for breakdowns.
    """

    task_id: str
    run: int
    correct: bool | None
    answer: str = ""
    tool_calls: int = 0
    invalid_actions: int = 0
    turns: int = 0
    termination: str = ""
    tokens: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> EpisodeResult:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): ``1 - C(n-c, k) / C(n, k)``, ``c`` of ``n`` correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}.")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _accuracy(episodes: Sequence[EpisodeResult]) -> float | None:
    judged = [e.correct for e in episodes if e.correct is not None]
    return _mean([float(c) for c in judged])


def _by_task(results: Sequence[EpisodeResult]) -> dict[str, dict[int, EpisodeResult]]:
    table: dict[str, dict[int, EpisodeResult]] = defaultdict(dict)
    for r in results:
        if r.run in table[r.task_id]:
            raise ValueError(f"two results for task {r.task_id!r} in run {r.run}; "
                             "keep one per run.")
        table[r.task_id][r.run] = r
    return table


def question_pass(episodes: Sequence[EpisodeResult]) -> bool | None:
    """Any episode correct -> True; all judged and none correct -> False; else None."""
    if any(e.correct for e in episodes):
        return True
    if all(e.correct is not None for e in episodes):
        return False
    return None


def vote_key(answer: str) -> str:
    """The form answers are grouped by for voting: ``normalize_answer``, or the lowercased,
    stripped answer when normalization leaves nothing (``"A"`` is an article to it)."""
    answer = answer or ""
    return normalize_answer(answer) or answer.strip().lower()


def majority_vote(answers: Sequence[str]) -> int | None:
    """Index of the first answer of the majority group (by :func:`vote_key`); None if all are empty.

    Ties go to the group whose first answer comes earliest in ``answers``.
    """
    keys = [vote_key(a) for a in answers]
    counts = Counter(k for k in keys if k)
    if not counts:
        return None
    top = max(counts.values())
    return next(i for i, key in enumerate(keys) if key and counts[key] == top)


def question_consensus(episodes: Sequence[EpisodeResult]) -> bool | None:
    """Correctness of the majority-vote answer over ``episodes`` (in run order); see module doc."""
    winner = majority_vote([e.answer for e in episodes])
    if winner is None:
        return False
    key = vote_key(episodes[winner].answer)
    for e in episodes:
        if vote_key(e.answer) == key and e.correct is not None:
            return e.correct
    return None


def _questions(table: Mapping[str, Mapping[int, EpisodeResult]],
               runs: Sequence[int]) -> dict[str, Any]:
    """Pass@k, Cons@k over ``runs`` plus how many questions each left out."""
    passes, cons = [], []
    incomplete = undecided_pass = undecided_cons = 0
    for by_run in table.values():
        if any(r not in by_run for r in runs):
            incomplete += 1
            continue
        episodes = [by_run[r] for r in runs]
        p, c = question_pass(episodes), question_consensus(episodes)
        if p is None:
            undecided_pass += 1
        else:
            passes.append(float(p))
        if c is None:
            undecided_cons += 1
        else:
            cons.append(float(c))
    return {"pass@k": _mean(passes), "cons@k": _mean(cons), "n_incomplete": incomplete,
            "n_undecided_pass@k": undecided_pass, "n_undecided_cons@k": undecided_cons}


def _unbiased(table: Mapping[str, Mapping[int, EpisodeResult]], k: int) -> float | None:
    values = []
    for by_run in table.values():
        judged = [e.correct for e in by_run.values() if e.correct is not None]
        if len(judged) >= k:
            values.append(pass_at_k(len(judged), sum(judged), k))
    return _mean(values)


def curve_ks(n: int) -> list[int]:
    """The k of the pass@k curve for ``n`` runs: powers of two below ``n``, then ``n``."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n >= 1 else []


def pass_at_k_curve(table: Mapping[str, Mapping[int, EpisodeResult]], n_runs: int) -> dict[str, float | None]:
    """``{str(k): unbiased pass@k}`` for k in ``curve_ks(n_runs)``, each over the questions
    with at least k judged runs."""
    return {str(k): _unbiased(table, k) for k in curve_ks(n_runs)}


def _behaviour(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Per-episode statistics over every episode, judged or not."""
    turns = sum(r.turns for r in results)
    n = len(results)
    return {
        "invalid_action_rate": sum(r.invalid_actions for r in results) / turns if turns else None,
        "tool_calls_mean": sum(r.tool_calls for r in results) / n if n else None,
        "turns_mean": turns / n if n else None,
        "tokens_mean": sum(r.tokens for r in results) / n if n else None,
        "termination": dict(sorted(Counter(r.termination for r in results).items())),
    }


def summarize(results: Sequence[EpisodeResult], k: int,
              runs: Sequence[int] | None = None) -> dict[str, Any]:
    """All metrics of the module doc for ``results``; ``runs`` overrides which run ids exist.

    Keys: ``k``, ``runs``, ``n_questions``, ``n_episodes``, ``n_unjudged``,
    ``pass@1_per_run`` (aligned with ``runs``), ``avg_pass@k``, ``best_pass@1``, ``pass@k``,
    ``cons@k``, ``pass@k_unbiased`` (None unless more than k runs), ``pass@k_curve`` (see
    ``pass_at_k_curve``; over all runs), ``n_incomplete``,
    ``n_undecided_pass@k``, ``n_undecided_cons@k``, ``invalid_action_rate``,
    ``tool_calls_mean``, ``turns_mean``, ``tokens_mean``, ``termination`` (counts).
    """
    if k < 1:
        raise ValueError(f"k={k} must be at least 1.")
    all_runs = sorted(set(runs) if runs is not None else {r.run for r in results})
    if len(all_runs) < k:
        raise ValueError(f"got {len(all_runs)} runs but k={k}; lower k or add runs.")
    first_k = all_runs[:k]
    per_run = [_accuracy([r for r in results if r.run == run]) for run in all_runs]
    first_k_acc = [a for run, a in zip(all_runs, per_run) if run in first_k and a is not None]
    table = _by_task(results)
    return {
        "k": k,
        "runs": all_runs,
        "n_questions": len(table),
        "n_episodes": len(results),
        "n_unjudged": sum(r.correct is None for r in results),
        "pass@1_per_run": per_run,
        "avg_pass@k": _mean(first_k_acc),
        "best_pass@1": max(first_k_acc) if first_k_acc else None,
        **_questions(table, first_k),
        "pass@k_unbiased": _unbiased(table, k) if len(all_runs) > k else None,
        "pass@k_curve": pass_at_k_curve(table, len(all_runs)),
        **_behaviour(results),
    }


def breakdown(results: Sequence[EpisodeResult], key_fn: Callable[[EpisodeResult], str | None],
              k: int, *, order: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """``summarize`` per group of ``key_fn(result)`` plus ``"overall"`` (last).

    Results whose key is None count only in the overall row. Groups come in ``order``
    first, then the rest sorted; every group uses the run ids of the whole result set.
    """
    runs = sorted({r.run for r in results})
    groups: dict[str, list[EpisodeResult]] = defaultdict(list)
    for r in results:
        key = key_fn(r)
        if key is not None:
            groups[key].append(r)
    names = [g for g in order if g in groups] + sorted(g for g in groups if g not in order)
    out = {name: summarize(groups[name], k, runs) for name in names}
    out["overall"] = summarize(results, k, runs)
    return out


def by_gaia_level(result: EpisodeResult) -> str | None:
    """GAIA group key: ``"level 1"`` .. ``"level 3"`` from ``meta["level"]``."""
    level = result.meta.get("level", result.meta.get("Level"))
    return None if level is None else f"level {level}"


WEBWALKER_CELLS = tuple(f"{source}/{difficulty}" for source in ("single_source", "multi_source")
                        for difficulty in ("easy", "medium", "hard"))


def by_webwalker_cell(result: EpisodeResult) -> str | None:
    """WebWalkerQA group key ``"<type>/<difficulty_level>"``, one of ``WEBWALKER_CELLS``."""
    kind, level = result.meta.get("type"), result.meta.get("difficulty_level")
    return None if kind is None or level is None else f"{kind}/{level}"
