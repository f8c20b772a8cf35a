"""Trajectory sampling on the small synthetic web, and the synth CLI end to end."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from webdancer.agents.engines.base import ChatGeneration, Generation, SamplingParams
from webdancer.agents.prompts import build_messages, observation_message
from webdancer.agents.rollout import RolloutConfig
from webdancer.data.filtering import FilterConfig, three_stage_filter
from webdancer.data.formats import question_from_prompt, read_trajectories, unwrap_tool_response
from webdancer.data.sampling import oracle_can_solve, sample_chat, sample_engines, sample_oracle
from webdancer.envs.backends import open_web
from webdancer.envs.oracle import OracleAgent
from webdancer.envs.synthetic_tasks import SyntheticTasks
from webdancer.envs.tasks import Task, load_jsonl_tasks
from webdancer.envs.web_env import WebEnv
from webdancer.web.webdir import WebDir

DATE = "2025-01-01"


@pytest.fixture(scope="module")
def env_fn(synthetic_web: Path):
    store, search = open_web(synthetic_web)
    yield lambda: WebEnv(store=store, search=search, max_turns=12)
    store.close()


@pytest.fixture(scope="module")
def tasks(synthetic_web: Path) -> list[Task]:
    from webdancer.data.e2hqa import synthesize_e2hqa

    webdir = WebDir(synthetic_web)
    graph = webdir.graph()
    with webdir.store() as store:
        hard = synthesize_e2hqa(graph, store, n=3, hops=(2, 3), seed=0, progress=False)
    easy = list(SyntheticTasks(graph, n=5, hops=(1, 3), split="all", seed=1))
    unsolvable = Task("How many people live in Veloria?", "12", id="count-0", meta={"oracle": False})
    return easy + hard + [unsolvable]


@pytest.fixture(scope="module")
def oracle_trajs(env_fn, tasks):
    return sample_oracle(env_fn, tasks, prompt_style="webdancer", date=DATE, progress=False)


def test_oracle_trajectories_are_valid_correct_and_pass_the_filter(oracle_trajs, tasks) -> None:
    solvable = [i for i, t in enumerate(tasks) if oracle_can_solve(t)]
    assert len(solvable) == len(tasks) - 1
    assert [t.group for t in oracle_trajs] == solvable
    for traj in oracle_trajs:
        task = tasks[traj.group]
        assert traj.engine == "oracle" and traj.ids == [] and traj.task == task
        assert traj.termination == "answer" and traj.reward == pytest.approx(1.0), traj.task.question
        assert traj.invalid_actions == 0 and traj.tool_calls == len(traj.turns) - 1 >= 2
        assert traj.messages[:2] == build_messages(task.question, date=DATE)
        rest = traj.messages[2:]
        assert [m["role"] for m in rest] == ["assistant", "user"] * (len(traj.turns) - 1) + ["assistant"]
        for i, turn in enumerate(traj.turns):
            assert rest[2 * i] == {"role": "assistant", "content": turn.text}
            if i + 1 < len(traj.turns):
                assert rest[2 * i + 1] == observation_message(turn.observation)
        json.dumps(traj.to_dict())  # serializable as it is
    report = three_stage_filter(oracle_trajs, FilterConfig(min_tool_calls=1), tasks)
    assert report.counts == {"input": len(oracle_trajs), "validity": len(oracle_trajs),
                             "correctness": len(oracle_trajs), "quality": len(oracle_trajs)}


class OracleChat:
    """A text-level ChatEngine that plays the oracle, one agent per conversation; it writes
    past its tool call (a made-up tool response) to check that replies are cut at the stop."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.by_question = {t.question: t for t in tasks}
        self.agents: dict[int, OracleAgent] = {}
        self.calls = 0

    def chat(self, conversations: Sequence[Sequence[Mapping[str, str]]], params: SamplingParams):
        self.calls += 1
        out = []
        for conversation in conversations:
            agent = self.agents.get(id(conversation))
            if agent is None:
                agent = self.agents[id(conversation)] = OracleAgent()
                agent.reset(self.by_question[question_from_prompt(conversation[1]["content"])])
            last = conversation[-1]["content"] if len(conversation) > 2 else ""
            out.append(ChatGeneration(agent.act(unwrap_tool_response(last)) + "\n<tool_response>\nmade up", "stop"))
        return out


def test_chat_sampling_runs_the_same_loop_as_the_oracle(env_fn, tasks, oracle_trajs) -> None:
    solvable = [t for t in tasks if oracle_can_solve(t)]
    engine = OracleChat(solvable)
    trajs = sample_chat(engine, env_fn, solvable, k=2, params=SamplingParams(seed=0), name="api", date=DATE,
                        batch_size=3, progress=False)
    assert [(t.group, t.sample) for t in trajs] == [(g, s) for g in range(len(solvable)) for s in range(2)]
    by_question = {t.task.question: t for t in oracle_trajs}
    for traj in trajs:
        assert traj.engine == "api" and traj.reward == pytest.approx(1.0)
        assert not any(t.wrote_tool_response for t in traj.turns)  # cut at </tool_call>
        assert traj.messages == by_question[traj.task.question].messages


class CharTokenizer:
    """One token per character; a tag-style chat template that is append-only."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(map(chr, ids))


class SearchThenAnswer:
    """A token-level engine: one search, then an answer."""

    def __init__(self, answer: str) -> None:
        self.tokenizer = CharTokenizer()
        self.answer = answer

    def generate(self, prompts, params: SamplingParams) -> list[Generation]:
        out = []
        for ids in prompts:
            first = self.tokenizer.decode(ids).count("<|assistant|>") == 1
            text = ('<think>look</think>\n<tool_call>\n{"name": "search", "arguments": {"query": ["river"]}}\n'
                    "</tool_call>" if first else f"<think>done</think>\n<answer>{self.answer}</answer>")
            new = [ord(c) for c in text]
            out.append(Generation(new, [-0.25] * len(new), "stop", None, text))
        return out


def test_engine_sampling_records_engine_names_groups_and_ids(env_fn, tasks) -> None:
    engines = [("short", SearchThenAnswer("a")), ("long", SearchThenAnswer("b"))]
    cfg = RolloutConfig(max_turns=6, max_new_tokens=200, max_context_tokens=50_000, prompt_style="compact",
                        date=DATE, progress=False)
    trajs = sample_engines(engines, env_fn, tasks[:3], k=2, rollout_cfg=cfg, batch_size=2)
    assert [(t.engine, t.group, t.sample) for t in trajs] == [
        (name, g, s) for name in ("short", "long") for g in range(3) for s in range(2)]
    for traj in trajs:
        assert traj.termination == "answer" and traj.answer == {"short": "a", "long": "b"}[traj.engine]
        assert len(traj.ids) == len(traj.loss_mask) == len(traj.logprobs)
        assert sum(traj.loss_mask) == sum(len(t.text) for t in traj.turns)
    with pytest.raises(ValueError, match="given twice"):
        sample_engines([engines[0], engines[0]], env_fn, tasks[:1])


def test_synth_cli_end_to_end(synthetic_web: Path, tmp_path: Path) -> None:
    from webdancer.cli import main

    main(["synth", "qa", f"web={synthetic_web}", "n=4", "n_test=2", "hops=[2,3]", "crawl_pages=200",
          "progress=false", f"hydra.run.dir={tmp_path / 'qa'}"])
    train = load_jsonl_tasks(tmp_path / "qa/tasks.train.jsonl")
    test = load_jsonl_tasks(tmp_path / "qa/tasks.test.jsonl")
    assert len(train) == 8 and len(test) == 4
    assert {t.meta["source"] for t in train} == {"crawlqa", "e2hqa"}
    assert not {t.question for t in train} & {t.question for t in test}

    main(["synth", "trajectories", f"tasks={tmp_path / 'qa/tasks.train.jsonl'}", f"web={synthetic_web}",
          "engines=[oracle]", f"date={DATE}", "progress=false", f"hydra.run.dir={tmp_path / 'tr'}"])
    sampled = read_trajectories(tmp_path / "tr/trajectories.jsonl")
    assert len(sampled) == sum(oracle_can_solve(t) for t in train) > 0

    main(["synth", "filter", str(tmp_path / "tr/trajectories.jsonl"), f"tasks={tmp_path / 'qa/tasks.train.jsonl'}",
          "min_tool_calls=1", f"hydra.run.dir={tmp_path / 'fi'}"])
    report = json.loads((tmp_path / "fi/report.json").read_text())
    assert report["counts"] == {"input": len(sampled), "validity": len(sampled), "correctness": len(sampled),
                                "quality": len(sampled)}
    assert f"Kept **{len(sampled)}** of {len(sampled)}" in (tmp_path / "fi/report.md").read_text()

    main(["synth", "convert", str(tmp_path / "fi/kept.jsonl"), f"out={tmp_path / 'sft.jsonl'}",
          "out_format=messages", f"hydra.run.dir={tmp_path / 'cv'}"])
    rows = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == len(sampled) and all(set(r) == {"messages"} for r in rows)
    assert rows[0]["messages"][-1]["role"] == "assistant" and "<answer>" in rows[0]["messages"][-1]["content"]


def test_engine_specs_and_config_checks() -> None:
    from webdancer.conf.synth import (
        SynthFilterConfig,
        SynthQAConfig,
        SynthTrajectoriesConfig,
        engine_labels,
        parse_engine_spec,
    )

    spec = parse_engine_spec("openai:http://127.0.0.1:8000/v1:Qwen/QwQ-32B")
    assert (spec.base_url, spec.model) == ("http://127.0.0.1:8000/v1", "Qwen/QwQ-32B")
    assert parse_engine_spec("openai:http://host:8000:qwen2.5:7b").model == "qwen2.5:7b"
    hashed = parse_engine_spec("openai:http://127.0.0.1:8000/v1#Qwen/QwQ-32B")
    assert (hashed.base_url, hashed.model) == ("http://127.0.0.1:8000/v1", "Qwen/QwQ-32B")
    specs = [parse_engine_spec(s) for s in ("oracle", "hf:runs/a/model", "hf:runs/b/model")]
    assert engine_labels(specs) == ["oracle", "hf:model", "hf:model#2"]
    with pytest.raises(ValueError, match="openai:BASE_URL#MODEL"):
        SynthTrajectoriesConfig(tasks="t.jsonl", engines=["vllm:x"])
    with pytest.raises(ValueError, match="hops"):
        SynthQAConfig(hops=[1, 3])
    with pytest.raises(ValueError, match="judge=openai"):
        SynthFilterConfig(trajectories="t.jsonl", reward="judge")
