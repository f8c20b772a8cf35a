"""The RL loop on the tiny model: parameters change, every metric is logged, resume
reproduces the run, algorithms swap by override, and 2 processes give the same gradients."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from webdancer.agents.tiny import make_tiny
from webdancer.cli import main

EXPECTED_KEYS = [
    "reward/mean", "reward/std", "rollout/accuracy", "rollout/format_score", "rollout/invalid_action_rate",
    "rollout/tool_calls_mean", "rollout/response_length_mean", "rollout/episode_length_mean", "actor/entropy",
    "actor/clip_frac", "actor/clip_frac_low", "actor/clip_frac_high", "actor/approx_kl", "actor/grad_norm",
    "actor/lr", "filter/kept_group_ratio", "filter/gen_rounds", "perf/rollout_tokens_per_s",
    "perf/update_tokens_per_s", "perf/env_share",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("rl") / "tiny", hidden_size=32, num_layers=1)


def _rl(tmp: Path, tiny: Path, web: Path, run: str, *extra: str) -> Path:
    out = tmp / run
    main(["rl", f"model={tiny}", f"out={out}", f"env.web={web}", f"hydra.run.dir={tmp / 'hydra' / run}",
          "steps=2", "prompts_per_step=2", "group_size=2", "mini_batch_prompts=1", "micro_batch_size=2",
          "tasks.n_train=8", "tasks.n_test=2", "rollout.max_turns=2", "rollout.max_new_tokens=16",
          "rollout.max_context_tokens=1024", "rollout.prompt_style=compact", "lr=1e-3", "progress=false",
          "wandb_mode=disabled", "threads=1", "algo.max_gen_rounds=1", *extra])
    return out


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_rl_step_changes_parameters_and_logs_every_metric(tmp_path: Path, tiny: Path, synthetic_web: Path) -> None:
    from safetensors.torch import load_file

    out = _rl(tmp_path, tiny, synthetic_web, "dapo", "algo.dynamic_sampling=false", "eval_every=2")
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for key in EXPECTED_KEYS:
        assert key in rows[0], key
    assert "eval/accuracy" in rows[1]
    before, after = load_file(tiny / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "an RL step must change the policy"
    assert (out / "curves.png").exists()


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, tiny: Path, synthetic_web: Path) -> None:
    common = ("algo.dynamic_sampling=false", "save_every=1", "seed=3")
    full = _rl(tmp_path, tiny, synthetic_web, "full", *common)
    part = _rl(tmp_path, tiny, synthetic_web, "part", *common)
    # Simulate a kill after step 1: drop the step-2 checkpoint, final weights and its metrics row.
    shutil.rmtree(part / "checkpoints" / "step-000002")
    shutil.rmtree(part / "final")
    rows = (part / "metrics.jsonl").read_text().splitlines()
    (part / "metrics.jsonl").write_text(rows[0] + "\n")
    _rl(tmp_path, tiny, synthetic_web, "part", *common, "resume=true")
    a, b = _metrics(full), _metrics(part)
    assert [r["step"] for r in b] == [1, 2]
    for key in ("reward/mean", "actor/approx_kl", "actor/grad_norm", "rollout/response_length_mean"):
        assert a[1][key] == pytest.approx(b[1][key], rel=1e-5, abs=1e-7), key


def test_engine_logprobs_are_pi_old_at_a_rollout_temperature_below_one(tmp_path: Path, tiny: Path,
                                                                          synthetic_web: Path) -> None:
    # One update whose pi_old is the sampler's log-probs at T=0.7: the trainer must score the
    # same tempered distribution, so the first ratio is 1 (untempered it is far from 1).
    out = _rl(tmp_path, tiny, synthetic_web, "t07", "steps=1", "mini_batch_prompts=2", "old_logprobs=engine",
              "rollout.temperature=0.7", "algo.dynamic_sampling=false")
    row = _metrics(out)[0]
    assert row["actor/approx_kl"] < 1e-6
    assert row["actor/ratio_max"] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("algo", ["grpo", "dr_grpo", "gspo"])
def test_algorithm_swap_by_override(tmp_path: Path, tiny: Path, synthetic_web: Path, algo: str) -> None:
    out = _rl(tmp_path, tiny, synthetic_web, algo, f"algo={algo}", "steps=1", "algo.dynamic_sampling=false")
    config = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else None
    assert _metrics(out)[0]["step"] == 1
    if config is not None:
        assert config["algo"]["name"] == algo


def test_unknown_algorithm_option_is_a_clear_error(tmp_path: Path, tiny: Path, synthetic_web: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _rl(tmp_path, tiny, synthetic_web, "bad", "algo.nonsense=1")
    err = capsys.readouterr().err
    assert "nonsense" in err and "DAPO" in err


def test_two_processes_give_single_process_gradients_and_keep_their_stream_positions_and_rngs(tmp_path: Path, tiny: Path) -> None:
    script = Path(__file__).with_name("rl_ddp_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    two_procs = Path(__file__).resolve().parents[2] / "webdancer" / "conf" / "accelerate" / "cpu_2proc.yaml"
    launch = {1: [sys.executable, str(script)],  # torchrun with gloo on the CPU; `--cpu` alone starts one process
              2: [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(two_procs), str(script)]}
    for n in (1, 2):
        result = subprocess.run([*launch[n], str(tiny), str(tmp_path / f"grads{n}.pt")], env=env,
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
    for n in (1, 2):  # a checkpoint keeps every process's place in its task stream
        state = json.loads((tmp_path / f"grads{n}.pt.state.json").read_text())
        assert state["world"] == n, "accelerate started the wrong number of processes"
        assert state["ranks"] == [[7, 40], [8, 43]][:n]
        assert (state["group_counter"], state["position"]) == (7, 40)
        assert len(state["rng"]) == n and all(saved == loaded for saved, loaded in state["rng"])
        assert len({str(saved) for saved, _ in state["rng"]}) == n  # each process resumed its own RNG
    one, two = torch.load(tmp_path / "grads1.pt"), torch.load(tmp_path / "grads2.pt")
    assert one.keys() == two.keys() and one
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-6, rtol=1e-4), name


def test_vllm_rollout_engine_without_vllm_says_how_to_install(tiny: Path) -> None:
    import importlib.util
    from types import SimpleNamespace

    from webdancer.algos.rl import rollout_engine

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here; tests/gpu covers the vLLM rollout engine")
    cfg = SimpleNamespace(rollout_engine="vllm", model=str(tiny), dtype="float32", seed=0,
                          vllm_gpu_memory_utilization=0.4)
    with pytest.raises(ImportError, match=r"pip install -e \.\[vllm\]"):
        rollout_engine(cfg, None, None)
    with pytest.raises(SystemExit):  # an unknown engine is a config error naming the valid ones
        main(["rl", f"model={tiny}", "rollout_engine=sglang"])


def test_single_update_takes_pi_old_from_its_own_forward_pass(tiny: Path) -> None:
    """A batch's only update needs no separate pi_old pass: its gradients are those of
    the update with pi_old recomputed."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from webdancer.algos import ALGORITHMS
    from webdancer.algos.rl import has_dropout
    from webdancer.algos.rl_batch import Sample, recompute_logprobs, update_step

    sys.path.insert(0, str(Path(__file__).parent))
    from grad_capture import CaptureGrads, NoSchedule

    algo = ALGORITHMS.get("dapo")
    grads = []
    for recompute in (True, False):
        model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
        assert not has_dropout(model)
        gen = torch.Generator().manual_seed(0)
        samples = [Sample(torch.randint(3, 200, (10 + 3 * i,), generator=gen).tolist(), [0] * 4 + [1] * (6 + 3 * i),
                          advantage=float(i % 3) - 1.0) for i in range(4)]
        if recompute:
            model.eval()
            recompute_logprobs(model, samples, pad_id=0, micro_batch_size=2)
        else:
            with pytest.raises(AssertionError, match="old log-probs"):  # never silently on-policy
                update_step(model, CaptureGrads(model), NoSchedule(), Accelerator(cpu=True), algo,
                            algo.make_config({}), samples, pad_id=0, micro_batch_size=2, grad_clip=1e9)
            model.zero_grad(set_to_none=True)
        capture = CaptureGrads(model)
        update_step(model, capture, NoSchedule(), Accelerator(cpu=True), algo, algo.make_config({}), samples,
                    pad_id=0, micro_batch_size=2, grad_clip=1e9, old_from_this_pass=not recompute)
        grads.append(capture.grads)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)
    dropping = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32, attention_dropout=0.1)
    assert has_dropout(dropping)


@pytest.mark.parametrize("algo_name", ["dapo", "grpo"])  # token-mean and seq-mean-token-mean
def test_gradient_noise_halves_are_each_halfs_own_gradient_and_sum_to_the_step(tiny: Path, algo_name: str) -> None:
    """With grad_noise the step's gradient is unchanged, and the two halves it reports are
    the gradients each half of the groups would give as a step of its own."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from webdancer.algos import ALGORITHMS
    from webdancer.algos.rl_batch import GradientNoise, Sample, recompute_logprobs, update_step

    sys.path.insert(0, str(Path(__file__).parent))
    from grad_capture import CaptureGrads, NoSchedule

    algo = ALGORITHMS.get(algo_name)
    algo_cfg = algo.make_config({})
    gen = torch.Generator().manual_seed(1)
    group = 3
    samples = [Sample(torch.randint(3, 200, (8 + 5 * (i % 4),), generator=gen).tolist(),
                      [0] * 3 + [1] * (5 + 5 * (i % 4)), advantage=float(i % 3) - 1.0) for i in range(4 * group)]
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    recompute_logprobs(model, samples, pad_id=0, micro_batch_size=2)

    def step(part: list[Sample], noise: GradientNoise | None = None) -> tuple[dict, dict]:
        capture = CaptureGrads(model)
        metrics = update_step(model, capture, NoSchedule(), Accelerator(cpu=True), algo, algo_cfg, part, pad_id=0,
                              micro_batch_size=2, grad_clip=1e9, noise=noise, group_size=group)
        return capture.grads, metrics

    def flat(grads: dict) -> torch.Tensor:
        return torch.cat([grads[name].flatten() for name in sorted(grads)]).double()

    whole, _ = step(samples)
    noise = GradientNoise()
    with_noise, metrics = step(samples, noise)
    for name in whole:
        torch.testing.assert_close(with_noise[name], whole[name], rtol=1e-4, atol=1e-7)
    halves = [[s for j, s in enumerate(samples) if (j // group) % 2 == h] for h in (0, 1)]
    g_a, g_b = (flat(step(half)[0]) for half in halves)
    assert metrics["grad_noise/signal_sq"] == pytest.approx(float(g_a @ g_b), rel=1e-3)
    trace = float((g_a - g_b).pow(2).sum()) / (1 / 6 + 1 / 6)
    assert metrics["grad_noise/trace"] == pytest.approx(trace, rel=1e-3)
    assert metrics["grad_noise/half_cosine"] == pytest.approx(float(g_a @ g_b / (g_a.norm() * g_b.norm())), rel=1e-3)
    _, single = step(samples[:group], GradientNoise())  # one group has no halves to compare
    assert not any(key.startswith("grad_noise/") for key in single)


def test_rl_logs_the_gradient_noise_scale_when_asked(tmp_path: Path, tiny: Path, synthetic_web: Path) -> None:
    out = _rl(tmp_path, tiny, synthetic_web, "noise", "algo.dynamic_sampling=false", "grad_noise=true",
              "mini_batch_prompts=2")
    rows = _metrics(out)
    for row in rows:
        assert {"grad_noise/half_cosine", "grad_noise/signal_sq", "grad_noise/trace"} <= row.keys()
        assert row["grad_noise/trace"] >= 0
