"""An LLM judge: asks a chat model whether a predicted answer matches the gold answer.

The judge is batched (one ``chat`` call per batch of items) and retries items whose
reply held no verdict or whose call raised. An item it still cannot decide is
*unjudged*: its ``RewardResult`` has ``unjudged=True``, score 0.0 and a NaN in the
breakdown. Unjudged is not wrong: callers must drop or re-run unjudged items, and
metrics skip them (``webdancer.eval.metrics`` counts them separately).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from webdancer.rewards.base import REWARDS, EpisodeLike, RewardResult, TaskLike, answer_of

log = logging.getLogger(__name__)

JUDGE_PROMPT = """\
You grade answers to questions. Decide whether the predicted answer means the same as \
the gold answer for this question.

Count the prediction as correct when it states the same fact as the gold answer, even \
with different wording, formatting, units written out, or extra detail that does not \
contradict it. Count it as incorrect when it gives a different fact, omits a part the \
question asks for, hedges between several answers, or says it does not know.

Question: {question}

Gold answer: {gold}

Predicted answer: {predicted}

Explain your reasoning in at most three sentences, then end with one line that is \
exactly `Verdict: correct` or `Verdict: incorrect`."""

REMINDER = "Reply with one line only: `Verdict: correct` or `Verdict: incorrect`."

# After markdown decoration is stripped, a verdict line is "Verdict: <word>" or the
# bare word; trailing text after the word is allowed ("Verdict: correct, because ...").
_VERDICT_LINE = re.compile(r"^(?:final\s+)?verdict\s*[:=\-]?\s*(incorrect|correct)\b",
                           re.IGNORECASE)
_BARE_LINE = re.compile(r"^(incorrect|correct)\s*[.!]?$", re.IGNORECASE)
_DECORATION = re.compile(r"[*_`]")


def parse_verdict(text: str) -> bool | None:
    """The judge's verdict in ``text``: True (correct), False (incorrect) or None (none found).

    Only line starts are matched, case-insensitively, after markdown bold, italics,
    code ticks, heading marks, quote marks and bullets are stripped; the last verdict
    line wins, so a judge that revises itself is read by its final word.
    """
    word = last_verdict(text, (_VERDICT_LINE, _BARE_LINE))
    return None if word is None else word == "correct"


def last_verdict(text: str, patterns: Sequence[re.Pattern[str]]) -> str | None:
    """The word (group 1, lower-cased) of the last line of ``text`` that one of ``patterns``
    matches, read as ``parse_verdict`` reads lines; None when no line matches."""
    word: str | None = None
    for raw in text.splitlines():
        line = _DECORATION.sub("", raw).strip().lstrip("#>-•").strip()
        for pattern in patterns:
            match = pattern.match(line)
            if match:
                word = match.group(1).lower()
                break
    return word


class ChatGenerationLike(Protocol):
    text: str
    finish_reason: str


class ChatEngineLike(Protocol):
    def chat(self, conversations: Sequence[Sequence[Mapping[str, str]]],
             params: Any) -> Sequence[ChatGenerationLike]: ...


@dataclass(frozen=True)
class Judgement:
    """One item's outcome: the verdict (None when undecided), the last reply text,
    how many calls it took, and the last error when a call raised."""

    verdict: bool | None
    reply: str = ""
    attempts: int = 0
    error: str | None = None


def _default_params() -> Any:
    # Imported here so that the rewards package itself needs nothing from agents.
    from webdancer.agents.engines.base import SamplingParams

    return SamplingParams(max_new_tokens=512, temperature=0.0, top_p=1.0, stop=())


class JudgeReward:
    """Reward 1.0 when the judge model says the answer is correct (registered as "judge").

    ``engine`` is any ``ChatEngine``; ``params`` its ``SamplingParams`` (default greedy,
    512 new tokens, no stop strings). ``retries`` is how many extra calls an item gets
    after an unparseable reply or a raised call; ``batch_size`` caps the items per
    ``chat`` call (None: all pending items in one call).
    """

    def __init__(self, engine: ChatEngineLike, *, params: Any = None, retries: int = 2,
                 batch_size: int | None = None, prompt: str = JUDGE_PROMPT,
                 system: str | None = None) -> None:
        if retries < 0:
            raise ValueError(f"retries={retries} must be >= 0.")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1, or None for one call.")
        self.engine = engine
        self.params = params if params is not None else _default_params()
        self.retries = retries
        self.batch_size = batch_size
        self.prompt = prompt
        self.system = system

    def _conversation(self, question: str, gold: str, predicted: str) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        user = self.prompt.format(question=question, gold=gold, predicted=predicted)
        return messages + [{"role": "user", "content": user}]

    def judge_many(self, items: Sequence[tuple[str, str, str]]) -> list[Judgement]:
        """Judge ``(question, gold, predicted)`` triples; see :class:`Judgement`.

        An empty prediction is incorrect without a call. Items whose reply had no
        verdict are asked again with their reply and a one-line reminder appended;
        items whose call raised are asked again unchanged.
        """
        results: list[Judgement | None] = [None] * len(items)
        conversations: dict[int, list[dict[str, str]]] = {}
        for i, (question, gold, predicted) in enumerate(items):
            if not predicted.strip():
                results[i] = Judgement(False, reply="", attempts=0)
            else:
                conversations[i] = self._conversation(question, gold, predicted)
        attempts = dict.fromkeys(conversations, 0)
        last: dict[int, Judgement] = {}
        pending = list(conversations)
        for _ in range(self.retries + 1):
            if not pending:
                break
            for i in pending:
                attempts[i] += 1
            for i, judgement in self._ask(pending, conversations, attempts).items():
                last[i] = judgement
                if judgement.verdict is not None:
                    results[i] = judgement
                elif judgement.error is None:
                    conversations[i] = conversations[i] + [
                        {"role": "assistant", "content": judgement.reply},
                        {"role": "user", "content": REMINDER}]
            pending = [i for i in pending if results[i] is None]
        for i in pending:
            results[i] = last[i]
            log.warning("judge left item %d undecided after %d attempts (%s)", i, attempts[i],
                        last[i].error or "no verdict in reply")
        return [r for r in results if r is not None]

    def _ask(self, pending: list[int], conversations: Mapping[int, list[dict[str, str]]],
             attempts: Mapping[int, int]) -> dict[int, Judgement]:
        """One round: a ``chat`` call per chunk of ``pending``; a raising chunk marks its items."""
        size = self.batch_size or len(pending)
        out: dict[int, Judgement] = {}
        for start in range(0, len(pending), size):
            chunk = pending[start:start + size]
            try:
                replies = list(self.engine.chat([conversations[i] for i in chunk], self.params))
                if len(replies) != len(chunk):
                    raise RuntimeError(f"engine returned {len(replies)} replies for {len(chunk)} "
                                       "conversations")
            except Exception as e:  # noqa: BLE001 - any engine failure is retried, then reported
                for i in chunk:
                    out[i] = Judgement(None, attempts=attempts[i], error=f"{type(e).__name__}: {e}")
                continue
            for i, reply in zip(chunk, replies):
                out[i] = Judgement(parse_verdict(reply.text), reply=reply.text,
                                   attempts=attempts[i])
        return out

    def judge_batch(self, items: Sequence[tuple[str, str, str]]) -> list[bool | None]:
        """Verdicts for ``(question, gold, predicted)`` triples; None where undecided."""
        return [j.verdict for j in self.judge_many(items)]

    def score_batch(self, episodes: Sequence[EpisodeLike | str],
                    tasks: Sequence[TaskLike]) -> list[RewardResult]:
        """``RewardResult`` for each (episode, task) pair, judged in batched calls."""
        if len(episodes) != len(tasks):
            raise ValueError(f"got {len(episodes)} episodes for {len(tasks)} tasks; pass one task "
                             "per episode.")
        items = [(t.question, t.answer, answer_of(e)) for e, t in zip(episodes, tasks)]
        return [_to_result(v) for v in self.judge_batch(items)]

    def __call__(self, episode: EpisodeLike | str, task: TaskLike) -> RewardResult:
        return self.score_batch([episode], [task])[0]


def _to_result(verdict: bool | None) -> RewardResult:
    if verdict is None:
        return RewardResult(0.0, {"judge": float("nan")}, unjudged=True)
    score = float(verdict)
    return RewardResult(score, {"judge": score})


REWARDS.register("judge", JudgeReward)
