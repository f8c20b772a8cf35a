"""Rollouts keep generated ids exactly and mask exactly the generated tokens."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from webdancer.agents.engines.base import Generation, SamplingParams, find_stop
from webdancer.agents.prompts import observation_message, render_text
from webdancer.agents.rollout import FORMAT_ERROR_AT_TOKEN_LIMIT, Rollout, RolloutConfig
from webdancer.agents.tiny import make_tiny
from webdancer.envs.oracle import OracleAgent
from webdancer.envs.synthetic_tasks import SyntheticTasks
from webdancer.envs.web_env import WebEnv
from webdancer.web.webdir import WebDir

# Like the tiny ChatML template, but it drops <think> from every assistant turn
# that is followed by another message: not append-only (as Qwen3's template).
STRIPPING_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set content = message['content'] -%}"
    "{%- if message['role'] == 'assistant' and not loop.last and '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1].lstrip() -%}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "model", hidden_size=32, num_layers=1)


@pytest.fixture(scope="module")
def tokenizer(tiny_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


class OracleEngine:
    """Plays the scripted oracle through the engine interface, one agent per prompt."""

    def __init__(self, tokenizer, tasks_by_question: dict[str, object]) -> None:
        self.tokenizer = tokenizer
        self.tasks = tasks_by_question
        self.agents: dict[str, OracleAgent] = {}

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        out = []
        for ids in prompts:
            text = self.tokenizer.decode(list(ids))
            question = next(q for q in self.tasks if q in text)
            last_obs = text.rsplit("<tool_response>", 1)[-1] if "<tool_response>" in text else ""
            key = f"{question}|{text.count('<|im_start|>assistant')}"
            agent = self.agents.setdefault(question + str(id(ids)), OracleAgent())
            if agent.task is None:
                agent.reset(self.tasks[question])
            turn = agent.act(last_obs)
            new = self.tokenizer(turn, add_special_tokens=False)["input_ids"][: params.max_new_tokens]
            stop = find_stop(self.tokenizer.decode(new), params.stop)
            out.append(Generation(new, [-0.5] * len(new), "stop" if stop else "length", stop,
                                  self.tokenizer.decode(new)))
            del key
        return out


def _oracle_rollout(tokenizer, web: Path, n: int, cfg: RolloutConfig):
    tasks = list(SyntheticTasks(WebDir(web).graph(), n=n, hops=(1, 3), split="all"))
    engine = OracleEngine(tokenizer, {t.question: t for t in tasks})
    # One agent per trajectory: key agents by row via a fresh engine per trajectory group.
    rollout = Rollout(engine, lambda: WebEnv(web, tasks=tasks), cfg)
    trajs = []
    for task in tasks:
        engine.agents.clear()
        trajs += rollout.run([task], group_size=1)
    return trajs, rollout


def test_mask_covers_exactly_the_generated_turns(tokenizer, synthetic_web: Path) -> None:
    cfg = RolloutConfig(max_turns=10, max_new_tokens=400, max_context_tokens=8000, prompt_style="compact",
                        progress=False)
    trajs, rollout = _oracle_rollout(tokenizer, synthetic_web, 4, cfg)
    assert rollout.encoder.append_only is True
    for traj in trajs:
        assert traj.termination == "answer" and traj.reward == pytest.approx(1.0)
        assert len(traj.ids) == len(traj.loss_mask) == len(traj.logprobs)
        masked = [i for i, m in enumerate(traj.loss_mask) if m]
        spans = [i for t in traj.turns for i in range(*t.span)]
        assert masked == spans
        for turn in traj.turns:
            assert tokenizer.decode(traj.ids[turn.span[0]:turn.span[1]]) == turn.text
            assert all(traj.logprobs[i] == -0.5 for i in range(*turn.span))
        # Observation tokens equal a fresh tokenization of the whole conversation.
        full = render_text(tokenizer, traj.messages, add_generation_prompt=False)
        fresh = tokenizer(full, add_special_tokens=False)["input_ids"]
        ours = tokenizer.decode(traj.ids)
        assert full.startswith(ours)
        for turn in traj.turns:
            if turn.obs_span:
                obs_ids = traj.ids[turn.obs_span[0]:turn.obs_span[1]]
                assert tokenizer.decode(obs_ids).startswith("<|im_end|>\n<|im_start|>user\n<tool_response>")
        assert fresh[: traj.prompt_len] == traj.ids[: traj.prompt_len]


def test_non_append_only_template_keeps_sampled_ids(tokenizer, synthetic_web: Path) -> None:
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = STRIPPING_TEMPLATE
    cfg = RolloutConfig(max_turns=10, max_new_tokens=400, max_context_tokens=8000, prompt_style="compact",
                        progress=False)
    trajs, rollout = _oracle_rollout(tok, synthetic_web, 2, cfg)
    assert rollout.encoder.append_only is False
    for traj in trajs:
        assert traj.reward == pytest.approx(1.0)
        for turn in traj.turns:
            assert tok.decode(traj.ids[turn.span[0]:turn.span[1]]) == turn.text  # think kept as sampled
            if turn.obs_span:
                obs = tok.decode(traj.ids[turn.obs_span[0]:turn.obs_span[1]])
                assert obs == "<|im_end|>\n" + render_text(
                    tok, [observation_message(turn.observation)], add_generation_prompt=True)


def test_context_limit_asks_once_for_an_answer(tokenizer, synthetic_web: Path) -> None:
    cfg = RolloutConfig(max_turns=10, max_new_tokens=400, max_context_tokens=700, prompt_style="compact",
                        progress=False)
    trajs, _ = _oracle_rollout(tokenizer, synthetic_web, 3, cfg)
    notes = [t for traj in trajs for t in traj.turns if t.observation and "context limit" in t.observation]
    assert notes
    for traj in trajs:
        assert len(traj.ids) <= 700
        assert traj.termination in ("answer", "answer_at_token_limit", FORMAT_ERROR_AT_TOKEN_LIMIT)


def test_tiny_model_rollout_groups_and_logprobs(tiny_dir: Path, synthetic_web: Path) -> None:
    import torch

    from webdancer.agents.engines.hf import HFEngine

    engine = HFEngine.from_pretrained(str(tiny_dir))
    tasks = list(SyntheticTasks(WebDir(synthetic_web).graph(), n=2, hops=1, split="all"))
    cfg = RolloutConfig(max_turns=2, max_new_tokens=24, max_context_tokens=1024, prompt_style="compact",
                        seed=0, progress=False)
    trajs = Rollout(engine, lambda: WebEnv(synthetic_web, tasks=tasks), cfg).run(tasks, group_size=3)
    assert [(t.group, t.sample) for t in trajs] == [(g, s) for g in range(2) for s in range(3)]
    assert all(t.task == tasks[t.group] for t in trajs)
    traj = trajs[0]
    # Sampling logprobs (temperature 1, no filters) equal the model's own on the same ids.
    with torch.no_grad():
        logits = engine.model(torch.tensor([traj.ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(traj.ids[1:])[:, None])[:, 0]
    idx = [i for i, m in enumerate(traj.loss_mask) if m]
    assert torch.allclose(logp[torch.tensor(idx) - 1], torch.tensor([traj.logprobs[i] for i in idx]), atol=1e-4)


def test_max_in_flight_runs_episodes_in_waves_with_the_same_results(tiny_dir: Path, synthetic_web: Path) -> None:
    from webdancer.agents.engines.hf import HFEngine

    class Counting(HFEngine):
        def generate(self, prompts, params):  # type: ignore[no-untyped-def]
            self.calls.append(len(prompts))
            return super().generate(prompts, params)

    engine = Counting.from_pretrained(str(tiny_dir))
    tasks = list(SyntheticTasks(WebDir(synthetic_web).graph(), n=3, hops=1, split="all"))

    def run(max_in_flight: int) -> tuple[list, list[int]]:
        engine.calls = []
        cfg = RolloutConfig(max_turns=2, max_new_tokens=12, max_context_tokens=1024, prompt_style="compact",
                            temperature=0.0, seed=0, progress=False, max_in_flight=max_in_flight)
        return Rollout(engine, lambda: WebEnv(synthetic_web, tasks=tasks), cfg).run(tasks, group_size=2), engine.calls

    together, calls = run(0)
    assert calls[0] == 6
    waves, calls = run(4)
    assert max(calls) <= 4 and calls[0] == 4
    assert [(t.group, t.sample, t.task.id) for t in waves] == [(t.group, t.sample, t.task.id) for t in together]
    assert [t.ids for t in waves] == [t.ids for t in together]  # greedy: waves change nothing but the batching
    with pytest.raises(ValueError, match="max_in_flight"):
        run(-1)
