"""Causal-LM pretraining of a small model on raw text (the offline "base model" step).

Real agents start from a pretrained LM. The tiny model starts from random weights,
so ``pretrain`` gives it a short pass over the text it will browse (the synthetic
site's rendered pages): it learns the site's words. With ``copy_fraction`` > 0 that
share of each batch are windows written twice (``w w``), which exercise in-context
copying. The copy always sits half a window back, so a model without induction heads
learns that fixed offset rather than induction (Olsson et al., 2022) within a few
hundred steps; ``make_tiny(induction_heads=True)`` gives the model the circuit to
begin with (``agents.induction``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from webdancer.runlog import RunLogger


def token_stream(tokenizer: object, texts: Iterable[str]) -> list[int]:
    """All texts as one stream of ids, documents separated by EOS."""
    eos = tokenizer.eos_token_id  # type: ignore[attr-defined]
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        stream.append(eos)
    return stream


def pretrain(model_dir: str | Path, texts: Iterable[str], out_dir: str | Path, *, steps: int = 300,
             seq_len: int = 256, batch_size: int = 16, lr: float = 3e-3, warmup_steps: int = 20, seed: int = 0,
             copy_fraction: float = 0.0, wandb_mode: str = "disabled", progress: bool = True) -> Path:
    """Train ``model_dir`` for ``steps`` steps on random ``seq_len`` windows of ``texts``;
    save to ``out_dir`` (weights, tokenizer, ``metrics.jsonl`` with ``pretrain/loss``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    stream = token_stream(tokenizer, texts)
    if len(stream) <= seq_len + 1:
        raise ValueError(f"the pretraining text has {len(stream)} tokens; it needs more than seq_len={seq_len}.")
    data = torch.tensor(stream)
    out_dir = Path(out_dir)
    logger = RunLogger(out_dir, config={"steps": steps, "seq_len": seq_len, "batch_size": batch_size, "lr": lr,
                                        "tokens": len(stream)}, wandb_mode=wandb_mode)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(warmup_steps, 1)) * max(0.1, 1.0 - s / max(steps, 1)))
    rng = random.Random(seed)
    n_copy = round(batch_size * copy_fraction)
    half = (seq_len + 2) // 2
    model.train()
    t0 = time.perf_counter()
    for step in tqdm(range(steps), desc="pretrain", disable=not progress):
        starts = torch.tensor([rng.randrange(len(stream) - seq_len - 1) for _ in range(batch_size)])
        x = data[starts[:, None] + torch.arange(seq_len + 1)]  # (B, seq_len + 1)
        if n_copy:
            x[:n_copy] = x[:n_copy, :half].repeat(1, 2)[:, : seq_len + 1]  # w w: the second half is a copy
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0 or step == steps - 1:
            elapsed = time.perf_counter() - t0
            logger.log(step + 1, {"pretrain/loss": loss.item(), "pretrain/lr": sched.get_last_lr()[0],
                                  "pretrain/tokens_per_s": (step + 1) * batch_size * seq_len / elapsed})
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    logger.close(["pretrain/loss"])
    return out_dir
