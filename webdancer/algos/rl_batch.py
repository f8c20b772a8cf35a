"""Tensors for the policy update: batching trajectories, token log-probs, one optimizer step.

Positions follow the token ids: ``logp[:, t]`` is the log-probability of ``ids[:, t]``
given ``ids[:, :t]`` (position 0 has none and is never in the loss mask).

``single_turn_step`` strings the pieces into one step of single-turn RL (one
completion per sample, no environment): the same sampling, advantages, pi_old and
update as the multi-turn loop in ``rl.py``, for prompt-to-answer workloads and for
comparing the update path against other trainers.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from webdancer.agents.engines.base import Engine, SamplingParams
from webdancer.algos.base import Algorithm
from webdancer.algos.losses import step_loss_scales


@dataclass
class Sample:
    """One sequence ready for the loss."""

    ids: list[int]
    loss_mask: list[int]  # 1 on generated tokens whose loss counts
    advantage: float
    old_logp: list[float] | None = None  # filled by recompute_logprobs or from the engine
    ref_logp: list[float] | None = None


@dataclass
class PolicyBatch:
    input_ids: Tensor  # (B, T) right-padded
    attention_mask: Tensor  # (B, T)
    loss_mask: Tensor  # (B, T) float
    advantages: Tensor  # (B,)
    old_logp: Tensor | None  # (B, T)
    ref_logp: Tensor | None  # (B, T)


def _pad(rows: Sequence[Sequence[float]], width: int, value: float, dtype: torch.dtype) -> Tensor:
    out = torch.full((len(rows), width), value, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=dtype)
    return out


def collate(samples: Sequence[Sample], pad_id: int, device: torch.device | str = "cpu") -> PolicyBatch:
    width = max(len(s.ids) for s in samples)
    ids = _pad([s.ids for s in samples], width, pad_id, torch.long)
    attn = _pad([[1] * len(s.ids) for s in samples], width, 0, torch.long)
    mask = _pad([s.loss_mask for s in samples], width, 0, torch.float32)
    mask[:, 0] = 0.0
    adv = torch.tensor([s.advantage for s in samples], dtype=torch.float32)
    old = _pad([s.old_logp for s in samples], width, 0.0, torch.float32) if samples[0].old_logp else None
    ref = _pad([s.ref_logp for s in samples], width, 0.0, torch.float32) if samples[0].ref_logp else None
    to = lambda t: None if t is None else t.to(device)
    return PolicyBatch(to(ids), to(attn), to(mask), to(adv), to(old), to(ref))


@functools.cache
def _forward_takes_logits_to_keep(cls: type) -> bool:
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def takes_logits_to_keep(model: Any) -> bool:
    """Whether ``model`` (or the module a wrapper such as DDP holds) projects to the
    vocabulary only at the positions given as ``logits_to_keep`` (transformers causal LMs)."""
    return _forward_takes_logits_to_keep(type(getattr(model, "module", model)))


def loss_positions(mask: Tensor) -> Tensor:
    """Positions (K,) where some row of ``mask`` (B, T) is set; ``[0]`` when none is, so a
    forward pass always has a position to project."""
    keep = mask.bool().any(0).nonzero().squeeze(-1)
    return keep if keep.numel() else keep.new_zeros(1)


def token_logprobs(model: Any, input_ids: Tensor, attention_mask: Tensor, *, with_entropy: bool = False,
                   temperature: float = 1.0, loss_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """-> (logp (B, T), entropy (B, T) or None) of each token under ``model``.

    ``temperature``: the rollout's, so that the loss differentiates the distribution the
    tokens were sampled from, softmax(logits / T), and its log-probs equal the engine's
    (as verl's actor does); 0 (greedy rollouts) counts as 1.

    ``loss_mask`` (B, T): where the caller needs them. A model that takes ``logits_to_keep``
    then projects to the vocabulary only before the positions where some row has a loss
    token; the others get 0. A trajectory is mostly tool responses, so this skips most
    of the vocabulary work and memory. Position 0 has no log-prob and is always 0.

    Memory: beyond the (B, K, V) float logits, only a few rows of the vocabulary-wide
    softmax exist at a time, forward and backward (``TokenLogProb``), instead of a full
    log-softmax, its gradient and the entropy's products (see ``benchmarks/logprob_memory.py``).
    """
    if loss_mask is not None and takes_logits_to_keep(model):
        targets = loss_positions(loss_mask[:, 1:]) + 1  # (K,) the positions scored
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=targets - 1).logits
    else:
        targets = torch.arange(1, input_ids.shape[1], device=input_ids.device)
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    logits = logits.float()  # (B, K, V)
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    kept, entropy = TokenLogProb.apply(logits, input_ids[:, targets], with_entropy)  # (B, K) each
    logp = kept.new_zeros(input_ids.shape).index_copy(1, targets, kept)
    if not with_entropy:
        return logp, None
    return logp, entropy.new_zeros(input_ids.shape).index_copy(1, targets, entropy)


CHUNK_ELEMENTS = 2**24  # logits per piece of the softmax work (64 MB of float32)


def _row_chunks(logits: Tensor) -> Iterator[tuple[int, slice]]:
    """(batch row, token slice) pieces of ``logits`` (B, T, V) of at most ``CHUNK_ELEMENTS``."""
    step = max(1, CHUNK_ELEMENTS // max(logits.shape[-1], 1))
    for b in range(logits.shape[0]):
        for i in range(0, logits.shape[1], step):
            yield b, slice(i, i + step)


class TokenLogProb(torch.autograd.Function):
    """log softmax(logits)[target] per position, without a (B, T, V) log-softmax.

    forward: (logits (B, T, V), targets (B, T), with_entropy) -> (logp (B, T), entropy (B, T),
    not differentiable; empty without ``with_entropy``), both from one exp per logit, piece by
    piece; backward: d logp / d logits = onehot(target) - softmax, written piece by piece into
    the one gradient tensor autograd needs anyway.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, targets: Tensor,  # type: ignore[override]
                with_entropy: bool) -> tuple[Tensor, Tensor]:
        lse = logits.new_empty(logits.shape[:-1])
        entropy = logits.new_empty(logits.shape[:-1] if with_entropy else (0,))
        with torch.no_grad():
            for b, t in _row_chunks(logits):
                x = logits[b, t]
                top = x.amax(-1, keepdim=True)
                e = (x - top).exp_()
                total = e.sum(-1)
                lse[b, t] = top[:, 0] + total.log()
                if with_entropy:  # H = lse - Σ softmax · logit
                    entropy[b, t] = lse[b, t] - (e * x).sum(-1) / total
        logp = logits.gather(-1, targets[..., None])[..., 0] - lse
        ctx.save_for_backward(logits, targets, lse)
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx: Any, grad_logp: Tensor, _grad_entropy: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        logits, targets, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for b, t in _row_chunks(logits):
            grad[b, t] = (logits[b, t] - lse[b, t, None]).exp_().mul_(-grad_logp[b, t, None])
        grad.scatter_add_(-1, targets[..., None], grad_logp[..., None].to(grad.dtype))
        return grad, None, None


@torch.no_grad()
def recompute_logprobs(model: Any, samples: Sequence[Sample], *, pad_id: int, micro_batch_size: int,
                       field: str = "old_logp", temperature: float = 1.0) -> None:
    """Fill ``sample.<field>`` with ``model``'s log-probs (PPO's pi_old, or the reference)
    at the rollout ``temperature``."""
    device = next(model.parameters()).device
    ordered = sorted(samples, key=lambda s: len(s.ids))  # similar lengths pad little
    for i in range(0, len(ordered), micro_batch_size):
        chunk = ordered[i: i + micro_batch_size]
        batch = collate([Sample(s.ids, s.loss_mask, 0.0) for s in chunk], pad_id, device)
        logp, _ = token_logprobs(model, batch.input_ids, batch.attention_mask, temperature=temperature,
                                 loss_mask=batch.loss_mask)
        for s, row in zip(chunk, logp.cpu()):
            setattr(s, field, row[: len(s.ids)].tolist())


class GradientNoise:
    """Running estimate of the gradient noise scale of the policy loss (McCandlish et al.
    2018, "An Empirical Model of Large-Batch Training", arXiv:1812.06162, appendix A).

    Each update's groups are split into two halves, A and B, whose gradients g_A and g_B
    are independent estimates of the same true gradient G at the same weights. Then
    ``<g_A, g_B>`` estimates ``|G|^2`` and ``|g_A - g_B|^2 / (1/B_A + 1/B_B)`` estimates
    ``tr(Sigma)``, the variance of one episode's gradient; ``B_noise = tr(Sigma) / |G|^2``
    is the batch size, in episodes, at which an update's gradient is as much signal as
    noise (an update of B episodes is a share ``B / (B + B_noise)`` signal). Both terms
    are summed over the run before dividing, as the paper recommends, because a single
    update's ``|G|^2`` estimate is noisy and can be negative.
    """

    def __init__(self) -> None:
        self.signal_sum = 0.0
        self.trace_sum = 0.0

    def add(self, sq_a: float, sq_b: float, dot: float, n_a: float, n_b: float) -> dict[str, float]:
        """Take one update's half-batch gradients as ``|g_A|^2``, ``|g_B|^2`` and
        ``<g_A, g_B>``, and the halves' episode counts."""
        trace = (sq_a + sq_b - 2.0 * dot) / (1.0 / n_a + 1.0 / n_b)
        self.signal_sum += dot
        self.trace_sum += trace
        out = {"grad_noise/half_cosine": dot / max((sq_a * sq_b) ** 0.5, 1e-30),
               "grad_noise/signal_sq": dot, "grad_noise/trace": trace}
        if self.scale is not None:
            out["grad_noise/scale_episodes"] = self.scale
        return out

    @property
    def scale(self) -> float | None:
        """B_noise in episodes so far; ``None`` while the summed signal is not positive."""
        return self.trace_sum / self.signal_sum if self.signal_sum > 0 else None


def _loss_weight(masks: Sequence[Tensor], agg: str) -> tuple[float, float]:
    """(the masks' weight in the step's loss, their sequences): loss tokens under
    token-mean aggregation, sequences with a loss token under the others."""
    seqs = float(sum(int((m.bool().sum(-1) > 0).sum()) for m in masks))
    return (float(sum(int(m.bool().sum()) for m in masks)) if agg == "token-mean" else seqs), seqs


def update_step(model: Any, optimizer: Any, scheduler: Any, accelerator: Any, algo: Algorithm, algo_cfg: Any,
                samples: Sequence[Sample], *, pad_id: int, micro_batch_size: int, grad_clip: float,
                old_from_this_pass: bool = False, temperature: float = 1.0,
                noise: GradientNoise | None = None, group_size: int = 0) -> dict[str, float]:
    """One optimizer step over ``samples`` (this process's share of a mini-batch).

    ``old_from_this_pass``: pi_old is this step's own forward pass (detached) instead of
    the samples' ``old_logp``; exact when the step is the batch's only update (one
    mini-batch, one epoch, no dropout), and it saves the separate pi_old pass.
    ``temperature``: the rollout's (see ``token_logprobs``).

    The loss is scaled so that summing micro-batches and averaging gradients over
    processes gives the algorithm's aggregation over the whole step
    (``losses.step_loss_scales``): the token mean stays global.

    ``noise`` (one process only): ``samples`` hold whole groups of ``group_size`` in a
    row; the even-numbered and odd-numbered groups run as two halves and ``noise`` gets
    their gradients (see ``GradientNoise``). The step's gradient is the same sum.
    """
    device = accelerator.device
    halves = [list(samples)]
    if noise is not None and group_size > 0 and len(samples) >= 2 * group_size:
        halves = [[s for j, s in enumerate(samples) if (j // group_size) % 2 == h] for h in (0, 1)]
    # Micro-batches of similar lengths pad little; the step's gradient is their sum either way.
    chunks: list[list[Sample]] = []
    for half in halves:
        ordered = sorted(half, key=lambda s: len(s.ids))
        chunks += [ordered[i: i + micro_batch_size] for i in range(0, len(ordered), micro_batch_size)]
    split = -(-len(halves[0]) // micro_batch_size) if len(halves) == 2 else None  # first micro-batch of half B
    batches = [collate(chunk, pad_id, device) for chunk in chunks]
    scale_tokens, scale_seqs = step_loss_scales([b.loss_mask for b in batches])
    sums: dict[str, float] = {}
    n_tok = 0.0
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    grads_a: list[Tensor] = []
    for k, batch in enumerate(batches):
        if k == split:
            grads_a = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        last = k == len(batches) - 1
        ctx = nullcontext() if last or accelerator.num_processes == 1 else accelerator.no_sync(model)
        with ctx:
            logp, entropy = token_logprobs(model, batch.input_ids, batch.attention_mask, with_entropy=True,
                                           temperature=temperature, loss_mask=batch.loss_mask)
            old_logp = logp.detach() if old_from_this_pass else batch.old_logp
            assert old_logp is not None, "old log-probs must be filled before the update"
            loss, metrics = algo.policy_loss(logp, old_logp, batch.advantages, batch.loss_mask, algo_cfg,
                                             ref_logp=batch.ref_logp, scale_tokens=scale_tokens,
                                             scale_seqs=scale_seqs)
            accelerator.backward(loss)
        tokens = float(batch.loss_mask.sum())
        n_tok += tokens
        assert entropy is not None
        metrics = {**metrics, "entropy": (entropy * batch.loss_mask).sum() / max(tokens, 1.0)}
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value) * tokens
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
    noise_metrics: dict[str, float] = {}
    if noise is not None and split is not None:
        agg = getattr(algo_cfg, "agg", "token-mean")
        (w_a, n_a), (w_b, n_b) = (_loss_weight([b.loss_mask for b in part], agg)
                                  for part in (batches[:split], batches[split:]))
        if min(w_a, w_b) > 0:
            # The accumulated gradient is c_A + c_B, each half's share of the step's loss;
            # |c_B|^2 and <c_A, c_B> follow from |c_A|^2, <c_A, c_A + c_B> and |c_A + c_B|^2
            # without building c_B. Rescaled by (w_A + w_B) / w_half, a share is that half's
            # own gradient.
            aa = ag = gg = 0.0
            for p, a in zip(params, grads_a):
                a64 = a.double()
                g64 = p.grad.detach().double() if p.grad is not None else torch.zeros_like(a64)
                aa += float(a64.pow(2).sum())
                ag += float((a64 * g64).sum())
                gg += float(g64.pow(2).sum())
            f_a, f_b = (w_a + w_b) / w_a, (w_a + w_b) / w_b
            noise_metrics = noise.add(aa * f_a**2, (gg - 2.0 * ag + aa) * f_b**2, (ag - aa) * f_a * f_b, n_a, n_b)
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    out = {f"actor/{k}": v / max(n_tok, 1.0) for k, v in sums.items() if k != "loss"}
    out["actor/loss"] = sums.get("loss", 0.0)
    out["actor/grad_norm"] = float(grad_norm)
    out["actor/tokens"] = n_tok
    out.update(noise_metrics)
    return out


def single_turn_step(model: Any, engine: Engine, optimizer: Any, scheduler: Any, accelerator: Any, algo: Algorithm,
                     algo_cfg: Any, prompts: Sequence[Sequence[int]],
                     reward_fn: Callable[[int, list[int]], float], *, group_size: int, params: SamplingParams,
                     pad_id: int,
                     micro_batch_size: int, grad_clip: float, old_logprobs: str = "recompute") -> dict[str, float]:
    """One step of single-turn RL: ``group_size`` completions of each prompt, one optimizer step.

    ``engine`` samples from the weights of ``model`` (e.g. ``HFEngine(policy, tokenizer)``) with
    ``params`` (``SamplingParams``); ``reward_fn(prompt_index, completion_ids) -> float``.
    Rewards are shaped (``max_len = params.max_new_tokens``), filtered by group and turned into
    advantages by ``algo``, exactly as the multi-turn loop does; a filtered group is dropped,
    not regenerated. ``old_logprobs``: "recompute" (pi_old from a forward pass of ``model``) or
    "engine" (the sampling log-probs, valid while they come from the same weights).

    Returns the update's ``actor/*`` metrics plus ``reward/mean``, ``perf/generated_tokens``
    and the seconds of each phase: ``perf/generate_s``, ``perf/reward_s``, ``perf/logprob_s``,
    ``perf/update_s``, ``perf/step_s``.
    """
    if old_logprobs not in ("recompute", "engine"):
        raise ValueError(f"old_logprobs={old_logprobs!r} is not valid; use recompute or engine.")
    t0 = time.perf_counter()
    model.eval()
    rows = [i for i in range(len(prompts)) for _ in range(group_size)]
    gens = engine.generate([prompts[i] for i in rows], params)
    t1 = time.perf_counter()
    rewards = torch.tensor([reward_fn(i, g.token_ids) for i, g in zip(rows, gens)], dtype=torch.float32)
    groups = torch.tensor(rows)
    truncated = torch.tensor([g.finish_reason == "length" for g in gens])
    lengths = torch.tensor([len(g.token_ids) for g in gens])
    shaped = algo.shape_rewards(rewards, lengths, truncated, algo_cfg, max_len=params.max_new_tokens)
    keep = algo.sample_filter(rewards, groups, algo_cfg).tolist()
    adv = algo.advantages(shaped, groups, algo_cfg).tolist()
    loss_ok = algo.loss_sample_mask(truncated, algo_cfg).tolist()
    samples = []
    for k, (i, g) in enumerate(zip(rows, gens)):
        if not keep[k]:
            continue
        n_prompt, n_gen = len(prompts[i]), len(g.token_ids)
        old = [0.0] * n_prompt + list(g.logprobs) if old_logprobs == "engine" else None
        samples.append(Sample(list(prompts[i]) + list(g.token_ids), [0] * n_prompt + [int(loss_ok[k])] * n_gen,
                              float(adv[k]), old_logp=old))
    t2 = time.perf_counter()
    if samples and old_logprobs == "recompute":
        recompute_logprobs(model, samples, pad_id=pad_id, micro_batch_size=micro_batch_size,
                           temperature=params.temperature)
    t3 = time.perf_counter()
    metrics = update_step(model, optimizer, scheduler, accelerator, algo, algo_cfg, samples, pad_id=pad_id,
                          micro_batch_size=micro_batch_size, grad_clip=grad_clip,
                          temperature=params.temperature) if samples else {}
    t4 = time.perf_counter()
    metrics.update({"reward/mean": float(rewards.mean()), "filter/kept_sample_ratio": len(samples) / len(gens),
                    "perf/generated_tokens": float(lengths.sum()), "perf/generate_s": t1 - t0,
                    "perf/reward_s": t2 - t1, "perf/logprob_s": t3 - t2, "perf/update_s": t4 - t3,
                    "perf/step_s": t4 - t0})
    return metrics
