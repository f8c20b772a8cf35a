"""SFT on the tiny model with oracle conversations: the mask, the loss by hand, packing
without leaks, gradient accumulation, loss falling, and resume after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from sft_setup import oracle_conversations, step_grads, tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from webdancer.algos.checkpoint import checkpoints
from webdancer.algos.sft import train_sft
from webdancer.conf.sft import SFTConfig
from webdancer.data.sft_data import (
    SFTSample,
    load_sft_samples,
    pack,
    read_conversations,
    tokenize_conversation,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # 2 cores: no oversubscription, and reproducible sums


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, synthetic_web: Path) -> Path:
    return oracle_conversations(synthetic_web, tmp_path_factory.mktemp("sft") / "oracle.jsonl")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    return tiny_model(tmp_path_factory.mktemp("sft") / "tiny", data)


def _cfg(tiny: Path, data: Path, out: Path, **kw) -> SFTConfig:
    base = {"model": str(tiny), "data": [str(data)], "out": str(out), "lr": 3e-3, "batch_size": 4, "max_length": 1100,
                "epochs": 1, "wandb_mode": "disabled", "progress": False, "threads": 1, "keep_checkpoints": 10}
    return SFTConfig(**{**base, **kw})


def _losses(run: Path, key: str = "sft/loss") -> list[float]:
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_mask_is_the_assistant_messages_on_oracle_trajectories(tiny: Path, data: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny)
    conversations = read_conversations(data)
    assert len(conversations) >= 6
    for _, messages in conversations:
        ids, mask = tokenize_conversation(tok, messages)
        spans, cur = [], []
        for t, m in zip(ids, mask):
            if m:
                cur.append(t)
            elif cur:
                spans.append(cur)
                cur = []
        spans += [cur] if cur else []
        assert [tok.decode(s) for s in spans] == [m["content"] for m in messages if m["role"] == "assistant"]
        tool_responses = [m["content"] for m in messages if m["content"].startswith("<tool_response>")]
        unmasked = tok.decode([t for t, m in zip(ids, mask) if m])
        assert tool_responses and not any(r in unmasked for r in tool_responses)


def _alone_logits(model, samples: list[SFTSample]) -> list[torch.Tensor]:
    return [model(input_ids=torch.tensor([s.ids])).logits[0] for s in samples]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packing_does_not_leak_attention_across_samples(tiny: Path, data: Path, attn: str) -> None:
    from webdancer.algos.sft import forward_options
    from webdancer.data.sft_data import block_causal_mask

    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32, attn_implementation=attn).eval()
    samples, _ = load_sft_samples(tok, data, max_length=1100)
    samples = sorted(samples, key=len)[:3]
    (row,) = pack(samples, sum(len(s) for s in samples))
    order = [next(s for s in samples if s.ids == row.input_ids[0, a: a + len(s)].tolist())
             for a, s in zip((row.position_ids[0] == 0).nonzero()[:, 0].tolist(), samples)]
    with torch.no_grad():
        alone = torch.cat(_alone_logits(model, order))
        # As the training loop calls it: with a KV cache transformers ignores packed position ids.
        by_positions = model(input_ids=row.input_ids, position_ids=row.position_ids, use_cache=False).logits[0]
        mask = block_causal_mask(row.position_ids, forward_options(model, "mask4d").mask_dtype)
        by_mask = model(input_ids=row.input_ids, position_ids=row.position_ids, attention_mask=mask,
                        use_cache=False).logits[0]
        leaky = model(input_ids=row.input_ids).logits[0]  # one long sequence: later samples see earlier ones
    torch.testing.assert_close(by_positions, alone, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(by_mask, alone, atol=2e-5, rtol=1e-4)
    first = len(order[0])
    assert not torch.allclose(leaky[first:], alone[first:], atol=1e-3)


def test_step_loss_and_gradients_equal_a_hand_computation(tiny: Path, data: Path) -> None:
    """The global token mean over a step split into several packed micro-batches."""
    from webdancer.algos.sft import step_indices

    grads, metrics = step_grads(tiny, data, batch_size=4, row_tokens=1100)
    tok = AutoTokenizer.from_pretrained(tiny)
    samples, _ = load_sft_samples(tok, data, max_length=1100)
    _, idx = step_indices(len(samples), 4, seed=0, step=0)
    step_samples = [samples[i] for i in idx]
    assert len(pack(step_samples, 1100)) > 1, "the step should need gradient accumulation"
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    total, count = torch.zeros(()), 0
    for s in step_samples:  # by hand: each conversation alone, NLL of every assistant token
        logp = torch.log_softmax(model(input_ids=torch.tensor([s.ids])).logits[0].float(), -1)
        for t in range(1, len(s)):
            if s.mask[t]:
                total = total - logp[t - 1, s.ids[t]]
                count += 1
    hand = total / count
    hand.backward()
    assert metrics["sft/loss_tokens"] == count
    assert metrics["sft/loss"] == pytest.approx(float(hand.detach()), rel=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_loss_falls_and_the_run_writes_its_outputs(tmp_path: Path, tiny: Path, data: Path) -> None:
    run = train_sft(_cfg(tiny, data, tmp_path / "run", max_steps=30, batch_size=2, warmup_steps=3, save_every=10,
                         keep_checkpoints=2))
    losses = _losses(run)
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0, losses
    assert [p.name for p in checkpoints(run)] == ["step-000020", "step-000030"]
    assert (run / "checkpoints" / "step-000030" / "model.safetensors").exists()
    assert (run / "curves.png").exists() and json.loads((run / "config.json").read_text())["lr"] == 3e-3
    final = AutoModelForCausalLM.from_pretrained(run / "final")
    assert final.config.vocab_size == AutoTokenizer.from_pretrained(run / "final").__len__()


def test_resume_after_a_kill_reproduces_the_loss_curve(tmp_path: Path, tiny: Path, data: Path) -> None:
    common = {"max_steps": 6, "batch_size": 2, "save_every": 1, "warmup_steps": 2, "schedule": "cosine"}
    full = train_sft(_cfg(tiny, data, tmp_path / "full", **common))

    part = tmp_path / "part"
    overrides = [f"{k}={v}" for k, v in {**common, "model": tiny, "out": part, "lr": 3e-3, "max_length": 1100,
                                         "epochs": 1, "wandb_mode": "disabled", "progress": "false",
                                         "threads": 1, "keep_checkpoints": 10}.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "webdancer.cli", "sft", str(data), *overrides,
                             f"hydra.run.dir={tmp_path / 'hydra'}"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (part / "checkpoints" / "step-000003").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "the run never reached step 3"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode in (0, -signal.SIGKILL), err[-2000:]
    for ckpt in checkpoints(part):  # the kill landed right after step 3
        if int(ckpt.name.split("-")[1]) > 3:
            shutil.rmtree(ckpt)

    train_sft(_cfg(tiny, data, part, resume=True, **common))
    rows = [json.loads(line) for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for key in ("sft/loss", "sft/grad_norm", "sft/lr"):
        assert _losses(part, key) == _losses(full, key), key  # bit for bit on CPU
