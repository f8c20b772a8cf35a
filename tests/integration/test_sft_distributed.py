"""SFT under `accelerate launch` with 2 CPU processes (gloo): the step's gradients equal
the single-process ones (a global token mean over processes and micro-batches), and a
2-step run writes its outputs once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sft_setup import oracle_conversations, step_grads, tiny_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, synthetic_web: Path) -> tuple[Path, Path]:
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this torch build")
    root = tmp_path_factory.mktemp("sft-ddp")
    data = oracle_conversations(synthetic_web, root / "oracle.jsonl")
    return tiny_model(root / "tiny", data), data


def test_two_processes_give_single_process_gradients(tmp_path: Path, setup: tuple[Path, Path]) -> None:
    tiny, data = setup
    torch.set_num_threads(1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "webdancer" / "conf" / "accelerate" / "cpu_2proc.yaml"),
           str(Path(__file__).with_name("sft_ddp_script.py")), str(tiny), str(data), str(tmp_path / "grads.pt"),
           str(tmp_path / "run")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stderr[-4000:]

    two = torch.load(tmp_path / "grads.pt")
    assert two["world"] == 2, "accelerate started a single process"
    one, metrics = step_grads(tiny, data, batch_size=4, row_tokens=1100)
    assert two["metrics"]["sft/loss_tokens"] == metrics["sft/loss_tokens"]
    assert two["metrics"]["sft/loss"] == pytest.approx(metrics["sft/loss"], rel=1e-5)
    assert one.keys() == two["grads"].keys() and one
    for name in one:
        torch.testing.assert_close(two["grads"][name], one[name], atol=1e-6, rtol=1e-4, msg=name)

    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # rank 0 alone logs
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()
