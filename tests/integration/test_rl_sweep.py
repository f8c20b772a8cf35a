"""Hydra sweeps of ``webdancer rl``: every job of a ``--multirun`` gets its own run directory,
and ``sweep_metric`` makes a job return the number an optimizing sweeper (Optuna) reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from webdancer.agents.tiny import make_tiny
from webdancer.algos.rl import final_metric
from webdancer.cli import main

TINY = ["steps=1", "prompts_per_step=2", "group_size=2", "mini_batch_prompts=1", "micro_batch_size=2",
        "tasks.n_train=8", "tasks.n_test=2", "rollout.max_turns=2", "rollout.max_new_tokens=16",
        "rollout.max_context_tokens=1024", "rollout.prompt_style=compact", "lr=1e-3", "progress=false",
        "wandb_mode=disabled", "threads=1", "algo.max_gen_rounds=1", "algo.dynamic_sampling=false"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("sweep") / "tiny", hidden_size=32, num_layers=1)


def test_multirun_gives_each_job_its_own_run_directory(tmp_path: Path, tiny: Path, synthetic_web: Path) -> None:
    sweep = tmp_path / "sweep"
    main(["rl", "--multirun", "algo.clip_high=0.24,0.28", "seed=1,2", f"hydra.sweep.dir={sweep}",
          f"model={tiny}", f"env.web={synthetic_web}", *TINY])
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1]
        assert "reward/mean" in rows[0]
        assert (job / "final" / "model.safetensors").exists()
        config = json.loads((job / "config.json").read_text())
        assert config["out"] == str(job)  # RLConfig.out defaults to the job's own Hydra directory
        seen.add((config["algo"]["clip_high"], config["seed"]))
    assert seen == {(0.24, 1), (0.24, 2), (0.28, 1), (0.28, 2)}


def test_final_metric_reads_the_last_logged_value(tmp_path: Path) -> None:
    rows = [{"step": 1, "reward/mean": 0.1}, {"step": 2, "reward/mean": 0.3, "eval/accuracy": 0.5},
            {"step": 3, "reward/mean": 0.2}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert final_metric(tmp_path, "eval/accuracy") == 0.5
    assert final_metric(tmp_path, "reward/mean") == 0.2
    with pytest.raises(ValueError, match="eval_every"):
        final_metric(tmp_path, "eval/pass_at_3")


def test_optuna_sweep_returns_the_metric_of_each_trial(tmp_path: Path, tiny: Path, synthetic_web: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install hydra-optuna-sweeper")
    sweep = tmp_path / "optuna"
    main(["rl", "--multirun", "hydra/sweeper=optuna_rl", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}",
          f"model={tiny}", f"env.web={synthetic_web}", "eval_every=1", "sweep_metric=eval/accuracy", *TINY])
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in best and "best_value" in best
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
