"""RL set-up: the reward from config, its answer term, and the overlong lengths."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from webdancer.agents.rollout import RolloutConfig
from webdancer.algos.dapo import DAPOConfig
from webdancer.algos.rl import fit_overlong_cache, make_reward, max_response_tokens
from webdancer.conf.rl import RLConfig, RolloutSection
from webdancer.eval.runner import make_reward as make_eval_reward
from webdancer.rewards import JudgeReward, answer_term, recipe_lengths


def rl_config(**kw: Any) -> RLConfig:
    return RLConfig(model="tiny", algo={"name": "dapo"}, **kw)


def test_rl_reward_builds_a_judge_term_from_the_judge_spec() -> None:
    cfg = rl_config(reward={"format": 0.1, "judge": 0.9}, judge="openai:http://127.0.0.1:9/v1#judge")
    reward = make_reward(cfg)
    assert isinstance(reward.parts["judge"], JudgeReward)
    assert answer_term(cfg.reward) == "judge"


@pytest.mark.parametrize("reward,match", [
    ({"format": 0.1, "judge": 0.9}, "judge="),
    ({"exact_match": 1.0, "overlong": 1.0}, "soft_overlong"),
])
def test_rl_config_names_what_a_reward_term_needs(reward: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rl_config(reward=reward)


def test_overlong_lengths_follow_the_rollout_budget() -> None:
    budget = RolloutConfig(max_turns=4, max_new_tokens=100, max_context_tokens=300)
    assert budget.max_response_tokens == 300
    assert recipe_lengths(20480) == {"max_len": 20480, "cache_len": 4096}
    reward = make_eval_reward({"exact_match": 1.0, "overlong": 1.0}, None, budget, None)
    overlong = reward.parts["overlong"]
    assert (overlong.max_len, overlong.cache_len) == (300, 60)

    cfg = rl_config(rollout=RolloutSection(max_turns=4, max_new_tokens=100, max_context_tokens=300))
    assert max_response_tokens(cfg) == 300
    assert fit_overlong_cache(DAPOConfig(), cfg).overlong_cache == 60


def test_task_stream_visits_every_task_once_per_epoch_and_resumes_in_place() -> None:
    from webdancer.algos.rl import TaskStream
    from webdancer.envs.tasks import Task

    tasks = [Task(question=f"q{i}", answer=str(i)) for i in range(7)]
    whole = TaskStream(tasks, seed=3).take(21)
    for epoch in range(3):
        assert sorted(t.question for t in whole[7 * epoch: 7 * epoch + 7]) == sorted(t.question for t in tasks)
    assert [t.question for t in whole[:7]] != [t.question for t in whole[7:14]]  # a new order each epoch
    resumed = TaskStream(tasks, seed=3, position=10)
    assert [t.question for t in resumed.take(11)] == [t.question for t in whole[10:]]
    assert [t.question for t in TaskStream(tasks, seed=4).take(7)] != [t.question for t in whole[:7]]


class _ScriptedRollout:
    """Stands in for ``Rollout``: each task's group gets the (reward, correct) pairs scripted for it."""

    def __init__(self, script: dict[str, list[tuple[float, float]]]) -> None:
        self.script = script

    def run(self, tasks: list[Any], *, group_size: int, group_offset: int) -> list[Any]:
        from types import SimpleNamespace

        out = []
        for g, task in enumerate(tasks):
            for reward, correct in self.script[task.question][:group_size]:
                out.append(SimpleNamespace(reward=reward, reward_breakdown={"exact_match": correct, "format": 0.1},
                                           group=group_offset + g, question=task.question))
        return out


@pytest.mark.parametrize(("filter_on", "kept"), [("accuracy", {"mixed"}), ("reward", {"mixed", "format_only"})])
def test_dynamic_sampling_judges_groups_by_their_answers_not_their_format(filter_on: str, kept: set[str]) -> None:
    from webdancer.algos import ALGORITHMS
    from webdancer.algos.rl import TaskStream, collect
    from webdancer.envs.tasks import Task

    # all answers wrong, but two of them well-formed: only the format term differs
    script = {"format_only": [(0.1, 0.0), (0.0, 0.0), (0.1, 0.0), (0.0, 0.0)],
              "mixed": [(1.0, 1.0), (0.1, 0.0), (0.0, 0.0), (0.0, 0.0)],
              "solved": [(1.0, 1.0)] * 4}
    stream = TaskStream([Task(question=q, answer="a") for q in script], seed=0)
    cfg = rl_config(prompts_per_step=3, group_size=4, mini_batch_prompts=3, filter_on=filter_on)
    trajs, generated, metrics, _ = collect(_ScriptedRollout(script), stream, ALGORITHMS.get("dapo"),
                                           DAPOConfig(max_gen_rounds=1), cfg, 0, "exact_match")
    assert len(generated) == 12 and {t.question for t in trajs} == kept
    assert metrics["filter/dropped_groups"] == 3 - len(kept)


def test_unknown_filter_signal_is_named() -> None:
    with pytest.raises(ValueError, match="filter_on='format' is not valid"):
        rl_config(filter_on="format")


def test_oversampling_fills_the_batch_in_one_round_and_drops_the_surplus() -> None:
    from webdancer.algos import ALGORITHMS
    from webdancer.algos.rl import TaskStream, collect
    from webdancer.envs.tasks import Task

    tasks = [Task(question=q, answer="x") for q in "abcde"]
    first = TaskStream(tasks, seed=0).take(1)[0].question
    script = {q: [(0.0, 0.0)] * 2 if q == first else [(1.0, 1.0), (0.0, 0.0)] for q in "abcde"}
    cfg = rl_config(prompts_per_step=2, group_size=2, mini_batch_prompts=2)
    # the first group is filtered out: without oversampling a second round fetches one more prompt
    for oversample, rounds, generated_groups in ((1.0, 2, 3), (2.0, 1, 4)):
        stream = TaskStream(tasks, seed=0)
        trajs, generated, metrics, _ = collect(
            _ScriptedRollout(script), stream, ALGORITHMS.get("dapo"), DAPOConfig(),
            dataclasses.replace(cfg, oversample=oversample), 0, "exact_match")
        assert len(trajs) == 4 and len({t.group for t in trajs}) == 2 and first not in {t.question for t in trajs}
        assert metrics["filter/gen_rounds"] == rounds and len(generated) == 2 * generated_groups
        assert stream.position == generated_groups


def test_surplus_train_keeps_every_group_that_passes_the_filter() -> None:
    from webdancer.algos import ALGORITHMS
    from webdancer.algos.rl import TaskStream, collect
    from webdancer.envs.tasks import Task

    tasks = [Task(question=q, answer="x") for q in "abcd"]
    first = TaskStream(tasks, seed=0).take(1)[0].question
    script = {q: [(0.0, 0.0)] * 2 if q == first else [(1.0, 1.0), (0.0, 0.0)] for q in "abcd"}
    cfg = rl_config(prompts_per_step=2, group_size=2, mini_batch_prompts=1, oversample=2.0)
    kept = {}
    for surplus in ("drop", "train"):
        trajs, generated, metrics, _ = collect(_ScriptedRollout(script), TaskStream(tasks, seed=0),
                                               ALGORITHMS.get("dapo"), DAPOConfig(),
                                               dataclasses.replace(cfg, surplus=surplus), 0, "exact_match")
        assert len(generated) == 8 and metrics["filter/passed_group_ratio"] == 0.75
        kept[surplus] = {t.question for t in trajs}
        assert metrics["filter/kept_group_ratio"] == len(kept[surplus]) / 4
    assert len(kept["drop"]) == 2 and kept["train"] == set("abcd") - {first}
    with pytest.raises(ValueError, match="surplus='keep' is not valid; use drop or train"):
        rl_config(surplus="keep")


@pytest.mark.parametrize(("n_groups", "sizes"), [(4, [2, 2]), (7, [3, 4]), (3, [1, 2]), (1, [1])])
def test_updates_per_step_stay_fixed_and_share_out_a_surplus(monkeypatch: pytest.MonkeyPatch, n_groups: int,
                                                             sizes: list[int]) -> None:
    from types import SimpleNamespace

    from webdancer.algos import rl
    from webdancer.algos.rl_batch import Sample

    cfg = rl_config(prompts_per_step=4, group_size=2, mini_batch_prompts=2, surplus="train")
    parts: list[list[Any]] = []
    recomputed: list[int] = []

    def fake_update(*args: Any, old_from_this_pass: bool, **kw: Any) -> dict[str, float]:
        parts.append(args[6])
        return {"actor/tokens": 1.0}

    monkeypatch.setattr(rl, "update_step", fake_update)
    monkeypatch.setattr(rl, "recompute_logprobs", lambda model, samples, **kw: recomputed.append(len(samples)))
    samples = [Sample([1, 2], [0, 1], float(i % 2), old_logp=None) for i in range(2 * n_groups)]
    monkeypatch.setattr(rl, "make_samples", lambda *args: samples)
    policy = SimpleNamespace(eval=lambda: None)
    out = rl._update(None, policy, None, None, None, None, None, None, cfg, [None] * len(samples), 0,
                     dropout=False)
    assert [len(p) // 2 for p in parts] == sizes  # groups per update, every group once
    assert sorted(id(s) for p in parts for s in p) == sorted(id(s) for s in samples)
    assert out["actor/updates"] == len(sizes)
    assert recomputed == ([len(samples)] if len(sizes) > 1 else [])  # one update: pi_old is its own pass


def test_oversample_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="oversample=0.5 must be at least 1.0"):
        rl_config(oversample=0.5)


def test_after_invalid_mask_leaves_out_what_follows_the_first_invalid_turn() -> None:
    from webdancer.agents.trajectory import Trajectory, TurnRecord
    from webdancer.algos import ALGORITHMS
    from webdancer.algos.rl import make_samples
    from webdancer.envs.tasks import Task

    # prompt 0-2 | turn A 3-5 (valid) | obs 6-7 | turn B 8-10 (invalid) | obs 11 | turn C 12-14
    mask = [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1]
    turns = [TurnRecord(text="a", kind="tool", span=(3, 6)), TurnRecord(text="b", kind="invalid", valid=False,
                                                                         span=(8, 11)),
             TurnRecord(text="c", kind="answer", span=(12, 15))]
    task = Task(question="q", answer="a")
    bad = Trajectory(task=task, ids=list(range(15)), loss_mask=mask, turns=turns, termination="answer",
                     reward=0.0, invalid_actions=1)
    good = Trajectory(task=task, sample=1, ids=list(range(15)), loss_mask=mask, termination="answer", reward=1.0,
                      turns=[TurnRecord(text=t.text, kind="tool", span=t.span) for t in turns])
    algo, dapo = ALGORITHMS.get("dapo"), fit_overlong_cache(DAPOConfig(), rl_config())
    trained = make_samples([bad, good], algo, dapo, rl_config())
    masked = make_samples([bad, good], algo, dapo, rl_config(after_invalid="mask"))
    assert trained[0].loss_mask == mask
    assert masked[0].loss_mask == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0]  # the invalid turn still learns
    assert masked[1].loss_mask == mask  # an episode without an invalid turn is untouched
    assert [s.advantage for s in masked] == [s.advantage for s in trained]
    assert masked[0].advantage < 0 < masked[1].advantage
    with pytest.raises(ValueError, match="after_invalid='drop' is not valid"):
        rl_config(after_invalid="drop")


def test_stratum_metrics_give_accuracy_and_kept_share_per_meta_value() -> None:
    from webdancer.agents.trajectory import Trajectory
    from webdancer.algos.rl import stratum_metrics
    from webdancer.envs.tasks import Task

    def group(g: int, hops: int | None, right: list[float]) -> list[Trajectory]:
        task = Task(question=f"q{g}", answer="a", meta={} if hops is None else {"hops": hops})
        return [Trajectory(task=task, group=g, sample=i, reward_breakdown={"exact_match": r})
                for i, r in enumerate(right)]

    one, three_a, three_b, bare = group(0, 1, [1, 1]), group(1, 3, [1, 0]), group(2, 3, [0, 1]), group(3, None, [0, 0])
    m = stratum_metrics(three_a + three_b, one + three_a + three_b + bare, "hops", "exact_match")
    assert m == {"by_hops/1/accuracy": 1.0, "by_hops/1/kept_share": 0.0,
                 "by_hops/3/accuracy": 0.5, "by_hops/3/kept_share": 1.0,
                 "by_hops/none/accuracy": 0.0, "by_hops/none/kept_share": 0.0}


def test_balance_by_takes_a_surplus_of_kept_groups_round_robin_over_the_meta_values() -> None:
    from types import SimpleNamespace

    from webdancer.algos import ALGORITHMS
    from webdancer.algos.rl import TaskStream, collect
    from webdancer.envs.tasks import Task

    class Rollout:  # every group has one right and one wrong answer: all pass the filter
        def run(self, tasks: list[Task], *, group_size: int, group_offset: int) -> list[Any]:
            return [SimpleNamespace(task=task, reward=float(i == 0), reward_breakdown={"exact_match": float(i == 0)},
                                    group=group_offset + g) for g, task in enumerate(tasks) for i in range(group_size)]

    # generation order puts the 3-hop questions first
    tasks = [Task(question=f"t{i}", answer="a", meta={"hops": 3}) for i in range(6)]
    tasks += [Task(question=f"o{i}", answer="a", meta={"hops": 1}) for i in range(2)]
    cfg = rl_config(prompts_per_step=4, group_size=2, mini_batch_prompts=4, oversample=2.0)
    stream = TaskStream(tasks, seed=0)
    stream.order = lambda epoch: list(range(len(tasks)))  # type: ignore[method-assign]
    hops = {}
    for balance_by in (None, "hops"):
        stream.position = 0
        trajs, generated, _, _ = collect(Rollout(), stream, ALGORITHMS.get("dapo"), DAPOConfig(),
                                         dataclasses.replace(cfg, balance_by=balance_by), 0, "exact_match")
        assert len(generated) == 16 and len(trajs) == 8
        hops[balance_by] = sorted(t.task.meta["hops"] for t in trajs[::2])
    assert hops[None] == [3, 3, 3, 3]  # generation order
    assert hops["hops"] == [1, 1, 3, 3]  # round-robin: each value once before any twice


@pytest.mark.parametrize("option", ["metrics_by", "balance_by"])
def test_a_meta_key_no_training_task_has_is_named_with_the_keys_they_have(tmp_path: Any, option: str) -> None:
    from webdancer.algos.rl import load_tasks
    from webdancer.conf.rl import TaskSection
    from webdancer.envs.tasks import Task, write_jsonl_tasks

    write_jsonl_tasks([Task(question="q1", answer="a", meta={"hops": 1, "source": "crawlqa"})], tmp_path / "train.jsonl")
    write_jsonl_tasks([Task(question="q2", answer="b", meta={"hops": 2})], tmp_path / "test.jsonl")
    tasks = TaskSection(train=str(tmp_path / "train.jsonl"), test=str(tmp_path / "test.jsonl"))
    assert len(load_tasks(rl_config(tasks=tasks, **{option: "hops"}), tmp_path)[0]) == 1
    with pytest.raises(ValueError, match=f"{option}='hop' is in no training task's meta; use one of: hops, source"):
        load_tasks(rl_config(tasks=tasks, **{option: "hop"}), tmp_path)


def test_gradient_noise_recovers_a_known_noise_scale() -> None:
    """Episode gradients G + noise with tr(Sigma) = 64 * 0.25 and |G|^2 = 0.16: B_noise = 100."""
    import torch

    from webdancer.algos.rl_batch import GradientNoise

    gen = torch.Generator().manual_seed(0)
    true = torch.full((64,), 0.05)  # |G|^2 = 64 * 0.05^2 = 0.16
    noise = GradientNoise()
    for _ in range(1000):
        episodes = true + 0.5 * torch.randn(32, 64, generator=gen)
        g_a, g_b = episodes[:16].mean(0), episodes[16:].mean(0)
        metrics = noise.add(float(g_a @ g_a), float(g_b @ g_b), float(g_a @ g_b), 16, 16)
    assert metrics["grad_noise/scale_episodes"] == pytest.approx(100, rel=0.1)
    assert metrics["grad_noise/trace"] == pytest.approx(16.0, rel=0.5)
    assert noise.trace_sum / 1000 == pytest.approx(16.0, rel=0.05)
    assert noise.signal_sum / 1000 == pytest.approx(0.16, rel=0.1)


def test_rollout_waves_and_prefix_cache_reach_the_rollout_and_the_engine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from webdancer.agents.tiny import make_tiny
    from webdancer.algos.rl import rollout_config, rollout_engine

    cfg = rl_config(rollout=RolloutSection(max_in_flight=96, prefix_cache_mb=32.0))
    assert rollout_config(cfg).max_in_flight == 96
    path = make_tiny(tmp_path / "tiny", hidden_size=32, num_layers=1)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    engine = rollout_engine(cfg, model, tokenizer)
    assert engine.prefix_cache is not None and engine.prefix_cache.max_bytes == 32 * 2**20
    assert rollout_engine(rl_config(rollout=RolloutSection(prefix_cache_mb=0.0)), model, tokenizer).prefix_cache is None
    for option, match in (("max_in_flight", "rollout.max_in_flight=-1"), ("prefix_cache_mb", "rollout.prefix_cache_mb=-1")):
        with pytest.raises(ValueError, match=match):
            rl_config(rollout=RolloutSection(**{option: -1}))
