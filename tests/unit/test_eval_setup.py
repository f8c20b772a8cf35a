"""Eval set-up: engine specs, reward specs, the config, and the journal's crash handling."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from webdancer.agents.engines.factory import is_token_engine, make_engine, parse_openai, split_spec
from webdancer.conf.eval import EvalConfig
from webdancer.eval.journal import Journal, check_state
from webdancer.eval.runner import auto_reward_spec, correct_of, parse_reward_spec
from webdancer.rewards import RewardResult


@pytest.mark.parametrize("rest,expected", [
    ("http://127.0.0.1:8000/v1#qwen", ("http://127.0.0.1:8000/v1", "qwen")),
    ("https://api.example.com/v1#org/model:7b", ("https://api.example.com/v1", "org/model:7b")),
    ("http://127.0.0.1:8000/v1:qwen", ("http://127.0.0.1:8000/v1", "qwen")),  # synth's colon form
])
def test_openai_specs(rest: str, expected: tuple[str, str]) -> None:
    assert parse_openai(rest, "openai:" + rest) == expected


@pytest.mark.parametrize("spec", ["", "hf:", "vllm:", "torch:model", "oracle", "openai:qwen#m"])
def test_bad_engine_specs_name_the_valid_forms(spec: str) -> None:
    with pytest.raises(ValueError, match="openai:"):
        kind, rest = split_spec(spec)
        if kind == "openai":
            parse_openai(rest, spec)


def test_make_engine_builds_an_openai_chat_engine_without_connecting() -> None:
    engine = make_engine("openai:http://127.0.0.1:9/v1#tiny")
    assert (engine.base_url, engine.model) == ("http://127.0.0.1:9/v1", "tiny")
    assert not is_token_engine(engine)  # no tokenizer: the eval uses its chat loop
    same = make_engine("openai", base_url="http://127.0.0.1:9/v1", model="tiny")
    assert same.model == "tiny"
    with pytest.raises(ValueError, match="base_url"):
        make_engine("openai")


def test_make_engine_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="could not load a model"):
        make_engine(f"hf:{tmp_path / 'missing'}")
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match="vllm"):
            make_engine("vllm:some/model")


@pytest.mark.parametrize("text,benchmark,judge,expected", [
    ("auto", "synthetic", False, {"format": 0.1, "exact_match": 0.9}),
    ("auto", "webwalkerqa", True, {"format": 0.1, "judge": 0.9}),
    ("auto", "gaia", True, {"format": 0.1, "gaia_exact_match": 0.9}),
    ("f1", "synthetic", False, {"format": 0.1, "f1": 0.9}),
    ("format:0.2, contains:0.8", "synthetic", False, {"format": 0.2, "contains": 0.8}),
    ({"exact_match": 1}, "gaia", False, {"exact_match": 1.0}),
])
def test_reward_specs(text: Any, benchmark: str, judge: bool, expected: dict[str, float]) -> None:
    assert parse_reward_spec(text, benchmark, judge=judge) == pytest.approx(expected)
    assert auto_reward_spec("gaia", judge=False)["gaia_exact_match"] == pytest.approx(0.9)


@pytest.mark.parametrize("text", ["format", "format:x", "exact_match:0.9,f1"])
def test_bad_reward_specs(text: str) -> None:
    with pytest.raises(ValueError, match="reward"):
        parse_reward_spec(text, "synthetic", judge=False)


def test_correct_of_reads_the_answer_term() -> None:
    assert correct_of(RewardResult(1.0, {"exact_match": 1.0}), "exact_match") is True
    assert correct_of(RewardResult(0.1, {"exact_match": 0.0}), "exact_match") is False
    assert correct_of(RewardResult(0.0, {"judge": float("nan")}, unjudged=True), "judge") is None


@pytest.mark.parametrize("kw,match", [
    ({"mode": "crawl"}, "mode"),
    ({"k": 0}, "k="),
    ({"benchmark": "gaia.jsonl"}, "web=DIR"),
    ({"mode": "record"}, "web=DIR"),
    ({"reward": "judge"}, "judge="),
    ({"reward": "format:0.1,judge:0.9"}, "judge="),
    ({"hops": [3, 1]}, "hops"),
    ({"top_p": 0.0}, "top_p"),
    ({"visit_mode": "summary"}, "visit_mode='summary' is not valid"),
    ({"top_k": 0}, "top_k="),
])
def test_eval_config_validation(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EvalConfig(engine="hf:x", **kw)


def test_eval_config_defaults_are_the_reference_sampling() -> None:
    cfg = EvalConfig(engine="hf:x")
    assert (cfg.k, cfg.temperature, cfg.top_p, cfg.max_turns) == (3, 0.6, 0.95, 40)


def test_eval_config_observation_budgets_reach_the_env() -> None:
    from webdancer.eval.commands import env_kwargs

    cfg = EvalConfig(engine="hf:x", top_k=2, visit_mode="facts", visit_budget_chars=150, max_links=1, snippet_chars=40)
    assert env_kwargs(cfg) == {"top_k": 2, "snippet_chars": 40, "visit_mode": "facts", "visit_budget_chars": 150,
                               "max_links": 1}


def test_journal_drops_a_cut_off_line_and_refuses_garbage(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "trajectories.jsonl")
    journal.append({"task_id": "a", "run": 0, "correct": True})
    journal.append({"task_id": "a", "run": 1, "correct": False})
    with journal.path.open("a") as f:
        f.write('{"task_id": "b", "run"')
    assert journal.done() == {("a", 0), ("a", 1)}
    assert journal.path.read_text().endswith("}\n")  # the partial line is gone
    journal.path.write_text('{"task_id": "a", "run": 0}\nnot json\n')
    with pytest.raises(ValueError, match=":2 is not valid JSON"):
        journal.load()


def test_check_state_refuses_other_settings(tmp_path: Path) -> None:
    state = {"engine": "hf:x", "tools": ["search", "visit"], "temperature": 0.6}
    check_state(tmp_path, state, resume=True)
    check_state(tmp_path, {**state, "tools": ("search", "visit")}, resume=True)  # tuple == list
    with pytest.raises(ValueError, match="temperature: 0.6 -> 1.0"):
        check_state(tmp_path, {**state, "temperature": 1.0}, resume=True)
    check_state(tmp_path, {**state, "temperature": 1.0}, resume=False)  # starting over is fine
    assert json.loads((tmp_path / "eval_state.json").read_text())["temperature"] == 1.0
