"""RL set-up: the reward from config, its answer term, and the overlong lengths."""

from __future__ import annotations

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
