"""Shared by the SFT tests and the script they launch: oracle conversations on the
synthetic web, a tiny model whose tokenizer is trained on them, and the gradients of
one SFT step captured instead of applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from grad_capture import CaptureGrads, NoSchedule

DATE = "2025-01-01"


def oracle_conversations(web: Path, out: Path, n: int = 8, seed: int = 1) -> Path:
    """Write ``n`` oracle trajectories (``Trajectory.to_dict`` rows) with short observations."""
    from webdancer.data.sampling import sample_oracle
    from webdancer.envs.backends import open_web
    from webdancer.envs.synthetic_tasks import SyntheticTasks
    from webdancer.envs.web_env import WebEnv
    from webdancer.web.webdir import WebDir

    store, search = open_web(web)
    tasks = list(SyntheticTasks(WebDir(web).graph(), n=n, hops=(1, 3), split="all", seed=seed))
    env_fn = lambda: WebEnv(store=store, search=search, max_turns=12, top_k=3, snippet_chars=80,
                            visit_budget_chars=400, max_links=3)
    trajs = sample_oracle(env_fn, tasks, prompt_style="compact", date=DATE, progress=False)
    store.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in trajs), encoding="utf-8")
    return out


def tiny_model(out: Path, data: Path) -> Path:
    """A 1-layer tiny model with a tokenizer trained on the conversations of ``data``."""
    from webdancer.agents.tiny import make_tiny

    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    texts = [m["content"] for r in rows for m in r["messages"]]
    return make_tiny(out, corpus=texts * 3, hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2,
                     intermediate_size=64)


def step_grads(model_dir: Path, data: Path, *, batch_size: int, row_tokens: int, step: int = 0
               ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Gradients and metrics of SFT step ``step`` on this process's share (any process count)."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from webdancer.algos.sft import forward_options, step_batches, train_step
    from webdancer.conf.sft import SFTConfig
    from webdancer.data.sft_data import load_sft_samples

    cfg = SFTConfig(model=str(model_dir), data=[str(data)], batch_size=batch_size, max_length=row_tokens,
                    micro_batch_tokens=row_tokens, seed=0)
    accelerator = Accelerator(cpu=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    samples, _ = load_sft_samples(tokenizer, cfg.data, max_length=cfg.max_length)
    opts = forward_options(model, cfg.pack_attention)
    capture = CaptureGrads(model)
    model, _ = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.0))
    batches = step_batches(samples, cfg, step, accelerator.process_index, accelerator.num_processes,
                           tokenizer.pad_token_id)
    metrics = train_step(model, capture, NoSchedule(), accelerator, batches, grad_clip=1e9, opts=opts,
                         pad_id=tokenizer.pad_token_id)
    assert capture.grads is not None
    return capture.grads, metrics
