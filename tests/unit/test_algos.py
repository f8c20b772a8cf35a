from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from webdancer.algos import (
    AGG_MODES,
    ALGORITHMS,
    DAPOConfig,
    aggregate,
    dapo,
    dr_grpo,
    grpo,
    gspo,
    reinforce_pp,
    step_loss_scales,
)
from webdancer.algos.losses import clipped_surrogate, k3_kl

LN = math.log


# Ratios 0.5, 1.0, 1.5 in each row; advantage +1 for row 0 and -1 for row 1.
def ratio_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    old = torch.full((2, 3), -1.0, dtype=torch.float64)
    logp = (old + torch.tensor([LN(0.5), 0.0, LN(1.5)], dtype=torch.float64)).requires_grad_()
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    return logp, old, adv, mask


# ---------------------------------------------------------------- clipped surrogate


def test_clip_higher_per_token_losses_by_hand() -> None:
    ratio = torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, 1.5]], dtype=torch.float64)
    adv = torch.tensor([[1.0] * 3, [-1.0] * 3], dtype=torch.float64)
    loss, ev = clipped_surrogate(ratio, adv, clip_low=0.2, clip_high=0.28)
    # A>0: -min(r, clip(r)) -> r=0.5 stays (-0.5), r=1.5 capped at 1.28.
    # A<0: -min(-r, -clip(r)) = max(r, clip(r)) -> r=0.5 raised to 0.8, r=1.5 stays.
    expected = torch.tensor([[-0.5, -1.0, -1.28], [0.8, 1.0, 1.5]], dtype=torch.float64)
    torch.testing.assert_close(loss, expected)
    assert ev.clipped.tolist() == [[False, False, True], [True, False, False]]
    assert ev.high.tolist() == [[False, False, True], [False, False, False]]
    assert ev.low.tolist() == [[False, False, False], [True, False, False]]
    assert not ev.dual.any()


def test_dapo_loss_value_metrics_and_gradient() -> None:
    logp, old, adv, mask = ratio_batch()
    loss, m = dapo.policy_loss(logp, old, adv, mask)
    assert loss.item() == pytest.approx(0.52 / 6)  # (-0.5-1-1.28+0.8+1+1.5) / 6 tokens
    assert m["clip_frac"].item() == pytest.approx(2 / 6)
    assert m["clip_frac_low"].item() == pytest.approx(1 / 6)
    assert m["clip_frac_high"].item() == pytest.approx(1 / 6)
    assert m["dual_clip_frac"].item() == 0.0
    assert m["approx_kl"].item() == pytest.approx(-(2 * (LN(0.5) + LN(1.5))) / 6)
    assert m["ratio_mean"].item() == pytest.approx(1.0)
    assert m["ratio_max"].item() == pytest.approx(1.5)
    assert all(v.dim() == 0 and not v.requires_grad for v in m.values())

    loss.backward()
    # d/dlogp of -A·r/N is -A·r/N where the unclipped term is active, 0 where clipped.
    expected = torch.tensor([[-0.5, -1.0, 0.0], [0.0, 1.0, 1.5]], dtype=torch.float64) / 6
    torch.testing.assert_close(logp.grad, expected)


def test_dual_clip_caps_negative_advantage_loss() -> None:
    logp, old, adv, mask = ratio_batch()
    loss, m = dapo.policy_loss(logp, old, adv, mask, clip_c=1.2)
    # Row 1, r=1.5, A=-1: loss 1.5 capped at c·|A| = 1.2; nothing else changes.
    assert loss.item() == pytest.approx(0.22 / 6)
    assert m["dual_clip_frac"].item() == pytest.approx(1 / 6)
    loss.backward()
    expected = torch.tensor([[-0.5, -1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64) / 6
    torch.testing.assert_close(logp.grad, expected)
    with pytest.raises(ValueError, match="clip_c"):
        dapo.policy_loss(logp, old, adv, mask, clip_c=0.9)


def test_dual_clip_leaves_positive_advantages_alone() -> None:
    ratio = torch.tensor([[5.0]])
    clips = {"clip_low": 0.2, "clip_high": 0.28, "clip_c": 3.0}
    loss, ev = clipped_surrogate(ratio, torch.tensor([[2.0]]), **clips)
    assert loss.item() == pytest.approx(-2.0 * 1.28) and not ev.dual.any()
    loss, ev = clipped_surrogate(ratio, torch.tensor([[-2.0]]), **clips)
    assert loss.item() == pytest.approx(6.0) and ev.dual.all()  # min(10, 3·2)


def test_grpo_symmetric_clip_and_seq_mean() -> None:
    logp, old, adv, mask = ratio_batch()
    loss, m = grpo.policy_loss(logp, old, adv, mask)
    # Row 0: -0.5, -1, -1.2 (mean -0.9); row 1: 0.8, 1, 1.5 (mean 1.1).
    assert loss.item() == pytest.approx(0.1)
    assert m["clip_frac"].item() == pytest.approx(2 / 6)
    assert m["kl"].item() == 0.0


def test_token_advantages_accepted_and_bad_shape_rejected() -> None:
    logp, old, adv, mask = ratio_batch()
    per_seq, _ = dapo.policy_loss(logp, old, adv, mask)
    per_tok, _ = dapo.policy_loss(logp, old, adv[:, None].expand(2, 3), mask)
    torch.testing.assert_close(per_seq, per_tok)
    with pytest.raises(ValueError, match="advantages"):
        dapo.policy_loss(logp, old, torch.ones(2, 4), mask)


# ---------------------------------------------------------------- aggregation


LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)


@pytest.mark.parametrize(
    ("agg", "kwargs", "expected"),
    [
        ("token-mean", {}, 18 / 5),
        ("seq-mean-token-mean", {}, (1.5 + 5.0) / 2),
        ("seq-mean-token-sum", {}, (3 + 15) / 2),
        ("seq-mean-token-sum-norm", {}, 18 / (2 * 3)),
        ("seq-mean-token-sum-norm", {"norm_length": 4}, 18 / (2 * 4)),
        ("token-mean", {"scale_tokens": 9.0}, 18 / 9),
        ("seq-mean-token-mean", {"scale_seqs": torch.tensor(4.0)}, 6.5 / 4),
    ],
)
def test_aggregation_modes(agg: str, kwargs: dict, expected: float) -> None:
    assert aggregate(LOSS, MASK, agg, **kwargs).item() == pytest.approx(expected)


def _dapo(logp, old, adv, mask, agg):  # type: ignore[no-untyped-def]
    return dapo.policy_loss(logp, old, adv, mask, agg=agg, clip_c=3.0)


def _grpo_kl(logp, old, adv, mask, agg):  # type: ignore[no-untyped-def]
    ref = torch.full_like(old, -1.2)
    return grpo.policy_loss(logp, old, adv, mask, agg=agg, kl_coef=0.3, ref_logp=ref)


def _gspo(logp, old, adv, mask, agg):  # type: ignore[no-untyped-def]
    return gspo.policy_loss(logp, old, adv, mask, agg=agg, clip_low=0.5, clip_high=0.5)


@pytest.mark.parametrize("loss_fn", [_dapo, _grpo_kl, _gspo])
@pytest.mark.parametrize("agg", AGG_MODES)
def test_masked_positions_change_nothing(agg: str, loss_fn) -> None:  # type: ignore[no-untyped-def]
    logp, old, adv, _ = ratio_batch()
    mask = MASK.clone()
    base, _ = loss_fn(logp, old, adv, mask, agg)
    base.backward()
    grad = logp.grad.clone()
    assert grad[0, :2].abs().sum() > 0
    for junk in (5.0, float("inf"), float("nan")):
        moved = logp.detach().clone()
        moved[0, 2] = junk
        moved.requires_grad_()
        loss, m = loss_fn(moved, old, adv, mask, agg)
        loss.backward()
        assert loss.item() == pytest.approx(base.item())
        assert torch.isfinite(moved.grad).all() and moved.grad[0, 2] == 0
        torch.testing.assert_close(moved.grad, grad)
        assert all(torch.isfinite(v) for v in m.values())


def test_empty_rows_do_not_dilute_sequence_means() -> None:
    mask = torch.tensor([[0, 0, 0], [1, 1, 1]], dtype=torch.bool)
    assert aggregate(LOSS, mask, "seq-mean-token-mean").item() == pytest.approx(5.0)
    assert aggregate(LOSS, mask, "seq-mean-token-sum").item() == pytest.approx(15.0)
    assert aggregate(LOSS, torch.zeros_like(mask), "token-mean").item() == 0.0
    with pytest.raises(ValueError, match="token-mean"):
        aggregate(LOSS, mask, "sum")


def _micro_batch_setup() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(6, 7, generator=g, dtype=torch.float64)
    old = logp + 0.3 * torch.randn(6, 7, generator=g, dtype=torch.float64)
    adv = torch.randn(6, generator=g, dtype=torch.float64)
    mask = torch.rand(6, 7, generator=g) > 0.3
    mask[1] = False  # a row a filter emptied
    mask[2:, 5:] = False  # the second micro-batch is padded to only 5 tokens
    mask[2:, 0] = True
    return logp, old, adv, mask


@pytest.mark.parametrize("agg", AGG_MODES)
def test_micro_batches_with_step_scales_equal_full_batch(agg: str) -> None:
    logp, old, adv, mask = _micro_batch_setup()
    full = logp.clone().requires_grad_()
    loss, _ = dapo.policy_loss(full, old, adv, mask, agg=agg, norm_length=7)
    loss.backward()

    split = logp.clone().requires_grad_()
    parts = [(slice(0, 2), 7), (slice(2, 6), 5)]
    tokens, seqs = step_loss_scales([mask[rows, :t] for rows, t in parts])
    assert tokens.item() == mask.sum().item() and seqs.item() == 5
    total = 0.0
    for rows, t in parts:
        part, _ = dapo.policy_loss(
            split[rows, :t], old[rows, :t], adv[rows], mask[rows, :t], agg=agg,
            norm_length=7, loss_scale_tokens=tokens, loss_scale_seqs=seqs,
        )  # fmt: skip
        part.backward()  # summed as is: no division by the number of micro-batches
        total += part.item()
    assert total == pytest.approx(loss.item())
    torch.testing.assert_close(split.grad, full.grad)


def test_data_parallel_contract_divides_by_world_size() -> None:
    logp, old, adv, mask = _micro_batch_setup()
    full = logp.clone().requires_grad_()
    dapo.policy_loss(full, old, adv, mask)[0].backward()

    # Two processes, each with two micro-batches; DDP averages their gradients.
    world = 2
    tokens, _ = step_loss_scales([mask])  # what the all-reduce would sum to
    grads = []
    for rank_rows in (range(3), range(3, 6)):
        x = logp.clone().requires_grad_()
        for r in rank_rows:
            rows = slice(r, r + 1)
            part, _ = dapo.policy_loss(
                x[rows], old[rows], adv[rows], mask[rows], loss_scale_tokens=tokens / world
            )
            part.backward()
        grads.append(x.grad)
    torch.testing.assert_close(sum(grads) / world, full.grad)


def _ddp_rank(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # a forked child must not enter the parent's thread pool
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        logp, old, adv, mask = _micro_batch_setup()
        x = logp.clone().requires_grad_()
        rows = [range(2), range(2, 6)][rank]  # unequal shares of tokens per process
        micro = [slice(r, r + 1) for r in rows]
        tokens, seqs = step_loss_scales([mask[m] for m in micro])
        for m in micro:
            part, _ = dapo.policy_loss(
                x[m], old[m], adv[m], mask[m], loss_scale_tokens=tokens, loss_scale_seqs=seqs
            )
            part.backward()
        grad = x.grad.clone()
        torch.distributed.all_reduce(grad)  # what DDP does: sum, then divide by world
        torch.save({"grad": grad / world, "tokens": tokens}, f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.timeout(120)
def test_step_loss_scales_across_two_processes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    # fork: the children inherit the imported torch instead of importing it again.
    torch.multiprocessing.start_processes(
        _ddp_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork"
    )
    logp, old, adv, mask = _micro_batch_setup()
    full = logp.clone().requires_grad_()
    dapo.policy_loss(full, old, adv, mask)[0].backward()
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        assert out["tokens"].item() == pytest.approx(mask.sum().item() / 2)
        torch.testing.assert_close(out["grad"], full.grad)


# ---------------------------------------------------------------- advantages


def test_group_advantages_unbiased_std_matches_numpy() -> None:
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 0.25])
    ids = torch.tensor([7, 3, 7, 3, 42, 7, -1])  # non-contiguous, interleaved, singletons
    adv = grpo.group_advantages(rewards, ids)
    r, g = rewards.numpy().astype(np.float64), ids.numpy()
    expected = np.zeros_like(r)
    for gid in np.unique(g):
        sel = g == gid
        std = r[sel].std(ddof=1) if sel.sum() > 1 else 0.0
        expected[sel] = (r[sel] - r[sel].mean()) / (std + 1e-6)
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-6)
    assert adv[4].item() == 0.0 and adv[6].item() == 0.0  # groups of one
    assert adv.dtype == torch.float32


def test_group_advantages_without_std_and_integer_rewards() -> None:
    rewards = torch.tensor([3, 1, 2, 2])
    ids = torch.tensor([1, 1, 0, 0])
    adv = grpo.group_advantages(rewards, ids, normalize_std=False)
    assert adv.tolist() == [1.0, -1.0, 0.0, 0.0]
    assert dr_grpo.advantages(rewards.float(), ids).tolist() == [1.0, -1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="same length"):
        grpo.group_advantages(rewards, ids[:3])


def test_reinforce_pp_batch_normalized_advantages() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.9, 0.91, 0.0, 0.0])
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    adv = reinforce_pp.batch_normalized_advantages(rewards, ids)
    centered = np.array([0.5, -0.5, -0.005, 0.005, 0.0, 0.0])
    expected = (centered - centered.mean()) / (centered.std(ddof=1) + 1e-6)
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- DAPO sample-level pieces


def test_dynamic_sampling_mask_drops_uniform_groups() -> None:
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.5])
    ids = torch.tensor([10, 10, 4, 4, 2, 2, 99])
    keep = dapo.dynamic_sampling_mask(rewards, ids)
    assert keep.tolist() == [False, False, False, False, True, True, False]


@pytest.mark.parametrize(
    ("length", "expected"),
    [(100, 0.0), (16384, 0.0), (16385, -1 / 4096), (18432, -0.5), (20480, -1.0), (25000, -1.0)],
)
def test_soft_overlong_penalty_recipe_values(length: int, expected: float) -> None:
    lengths = torch.tensor([length])
    out = dapo.soft_overlong_penalty(lengths, max_len=20480, cache_len=4096)
    assert out.item() == pytest.approx(expected)
    half = dapo.soft_overlong_penalty(lengths, max_len=20480, cache_len=4096, factor=0.5)
    assert half.item() == pytest.approx(expected / 2)


def test_soft_overlong_rejects_cache_longer_than_max() -> None:
    with pytest.raises(ValueError, match="cache_len"):
        dapo.soft_overlong_penalty(torch.tensor([10]), max_len=256, cache_len=4096)


def test_overlong_filter_and_curriculum() -> None:
    assert dapo.overlong_filter_mask(torch.tensor([True, False])).tolist() == [False, True]
    rewards = torch.tensor([0.0, 0.1, 0.1, 1.0, 1.0, 1.0, 0.0, 0.5, 1.0, 0.2, 0.2, 0.2])
    ids = torch.tensor([5, 5, 5, 0, 0, 0, 9, 9, 9, 3, 3, 3])
    keep, preferred = dapo.curriculum_mask(rewards, ids)
    # best 0.1 -> skipped; all solved -> kept, not preferred; mean 0.5 and 0.2 -> preferred.
    assert keep.tolist() == [False] * 3 + [True] * 9
    assert preferred.tolist() == [False] * 6 + [True] * 6


def test_dapo_adapters_filter_shape_and_mask() -> None:
    algo = ALGORITHMS.get("dapo")
    cfg = algo.make_config({"curriculum": True, "overlong_filter": True, "overlong_cache": 4})
    rewards = torch.tensor([0.0, 0.1, 1.0, 0.0, 1.0, 1.0])
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    only_group_1 = [False, False, True, True, False, False]
    assert algo.sample_filter(rewards, ids, cfg).tolist() == only_group_1
    assert algo.sample_priority(rewards, ids, cfg).tolist() == only_group_1
    lengths = torch.tensor([4, 6, 8, 12, 1, 1])
    shaped = algo.shape_rewards(rewards, lengths, lengths >= 10, cfg, max_len=10)
    torch.testing.assert_close(shaped, rewards + torch.tensor([0.0, 0.0, -0.5, -1.0, 0.0, 0.0]))
    assert algo.loss_sample_mask(lengths >= 10, cfg).tolist() == [True] * 3 + [False] + [True] * 2


# ---------------------------------------------------------------- KL, Dr. GRPO, GSPO


def test_grpo_k3_kl_penalty_by_hand() -> None:
    logp = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[LN(2.0), 0.0, -LN(2.0)]], dtype=torch.float64)
    k3 = [1 - LN(2.0), 0.0, 0.5 + LN(2.0) - 1]  # exp(d) - d - 1 with d = ref - logp
    torch.testing.assert_close(k3_kl(logp, ref)[0], torch.tensor(k3, dtype=torch.float64))
    mask = torch.ones(1, 3, dtype=torch.bool)
    loss, m = grpo.policy_loss(
        logp, logp.detach(), torch.zeros(1), mask, kl_coef=0.5, ref_logp=ref
    )
    assert loss.item() == pytest.approx(0.5 * sum(k3) / 3)
    assert m["kl"].item() == pytest.approx(sum(k3) / 3)
    loss.backward()  # d k3 / d logp = 1 - exp(d)
    expected = torch.tensor([[1 - 2.0, 0.0, 1 - 0.5]], dtype=torch.float64) * 0.5 / 3
    torch.testing.assert_close(logp.grad, expected)
    with pytest.raises(ValueError, match="ref_logp"):
        grpo.policy_loss(logp, logp.detach(), torch.zeros(1), mask, kl_coef=0.1)


def test_dr_grpo_divides_token_sum_by_constant_length() -> None:
    logp, old, adv, mask = ratio_batch()
    loss, _ = dr_grpo.policy_loss(logp, old, adv, mask, norm_length=4)
    # Token losses as GRPO (-0.5, -1, -1.2, 0.8, 1, 1.5) summed, over 2 seqs · 4.
    assert loss.item() == pytest.approx(0.6 / 8)


def test_gspo_sequence_ratio_and_gradient() -> None:
    g = torch.Generator().manual_seed(1)
    old = -torch.rand(3, 5, generator=g, dtype=torch.float64)
    logp = (old + 0.1 * torch.randn(3, 5, generator=g, dtype=torch.float64)).requires_grad_()
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)

    mean_log = torch.stack([(logp - old)[i][mask[i]].mean() for i in range(3)])
    ratio = gspo.token_sequence_ratio(logp, old, mask)
    torch.testing.assert_close(ratio, mean_log.exp()[:, None].expand(3, 5).detach())

    loss, m = gspo.policy_loss(logp, old, adv, mask, clip_low=10.0, clip_high=10.0)
    (grad,) = torch.autograd.grad(loss, logp)
    # The same objective written at sequence level: -mean_i s_i·A_i, s_i = exp(mean log-ratio).
    (expected,) = torch.autograd.grad(-(mean_log.exp() * adv).mean(), logp)
    torch.testing.assert_close(grad, expected)
    assert m["ratio_mean"].item() == pytest.approx(mean_log.exp().mean().item())
    assert m["clip_frac"].item() == 0.0


def test_gspo_clips_whole_sequences() -> None:
    old = torch.zeros(2, 4, dtype=torch.float64)
    # Sequence 0 drifts up by 1e-3 on average (beyond 1 + 4e-4); sequence 1 stays at 1.
    logp = torch.tensor([[2e-3, 0.0, 2e-3, 0.0], [1e-3, -1e-3, 0.0, 0.0]], dtype=torch.float64)
    logp.requires_grad_()
    mask = torch.ones(2, 4, dtype=torch.bool)
    loss, m = gspo.policy_loss(logp, old, torch.tensor([1.0, 1.0]), mask)
    loss.backward()
    assert m["clip_frac"].item() == pytest.approx(0.5)  # one of two sequences
    assert m["clip_frac_high"].item() == pytest.approx(0.5)
    assert (logp.grad[0] == 0).all() and (logp.grad[1] != 0).all()
    assert loss.item() == pytest.approx(-(1 + 4e-4 + 1.0) / 2)


# ---------------------------------------------------------------- registry


def test_registry_names_configs_and_errors() -> None:
    assert {"dapo", "grpo", "dr_grpo", "gspo", "reinforce_pp"} <= set(ALGORITHMS.names())
    cfg = ALGORITHMS.get("dapo").make_config()
    assert isinstance(cfg, DAPOConfig)
    assert (cfg.clip_low, cfg.clip_high, cfg.clip_c, cfg.agg) == (0.2, 0.28, 10.0, "token-mean")
    assert (cfg.dynamic_sampling, cfg.max_gen_rounds, cfg.soft_overlong) == (True, 10, True)
    assert (cfg.overlong_cache, cfg.overlong_factor, cfg.kl_coef) == (4096, 1.0, 0.0)
    assert ALGORITHMS.get("dr_grpo").make_config().agg == "seq-mean-token-sum-norm"
    assert ALGORITHMS.get("gspo").make_config().clip_low == 3e-4
    assert ALGORITHMS.get("dapo").make_config(cfg) is cfg
    with pytest.raises(KeyError, match="valid names: dapo"):
        ALGORITHMS.get("ppo2")
    with pytest.raises(ValueError, match="clip_hi .*valid options"):
        ALGORITHMS.get("dapo").make_config({"clip_hi": 0.3})
    with pytest.raises(ValueError, match="aggregation"):
        ALGORITHMS.get("grpo").make_config({"agg": "mean"})


@pytest.mark.parametrize("name", ["dapo", "grpo", "dr_grpo", "gspo", "reinforce_pp"])
def test_every_algorithm_runs_end_to_end(name: str) -> None:
    algo = ALGORITHMS.get(name)
    cfg = algo.make_config({"kl_coef": 0.1})
    g = torch.Generator().manual_seed(2)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    keep = algo.sample_filter(rewards, ids, cfg)
    adv = algo.advantages(rewards[keep], ids[keep], cfg)
    n = int(keep.sum())
    assert adv.shape == (n,) and torch.isfinite(adv).all()
    logp = (-torch.rand(n, 6, generator=g)).requires_grad_()
    old = logp.detach() + 0.01 * torch.randn(n, 6, generator=g)
    mask = torch.rand(n, 6, generator=g) > 0.2
    ref = logp.detach() - 0.05
    tokens, seqs = step_loss_scales([mask])
    loss, metrics = algo.policy_loss(
        logp, old, adv, mask, cfg, ref_logp=ref, scale_tokens=tokens, scale_seqs=seqs
    )
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss) and logp.grad.abs().sum() > 0
    assert {"pg_loss", "kl", "clip_frac", "approx_kl", "ratio_mean"} <= set(metrics)
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())
    assert metrics["kl"].item() > 0


class _Logits(torch.nn.Module):
    """A stand-in causal LM: embedding then a vocabulary projection, logits on ``.logits``."""

    def __init__(self, vocab: int = 50, dim: int = 8) -> None:
        super().__init__()
        self.emb, self.head = torch.nn.Embedding(vocab, dim), torch.nn.Linear(dim, vocab)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.head(torch.tanh(self.emb(input_ids))) * 3.0)


@pytest.mark.parametrize("chunk_elements", [2**24, 7 * 50])  # one piece; 7 positions a piece (uneven)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_and_entropy_equal_the_full_log_softmax(temperature: float, chunk_elements: int,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from webdancer.algos import rl_batch

    monkeypatch.setattr(rl_batch, "CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(0)
    model, ids = _Logits(), torch.randint(0, 50, (3, 11))
    logp, entropy = rl_batch.token_logprobs(model, ids, torch.ones_like(ids), with_entropy=True,
                                            temperature=temperature)
    (logp.sum()).backward()
    grad = model.head.weight.grad.clone()
    model.zero_grad()
    full = torch.log_softmax(model(ids, None).logits[:, :-1] / temperature, dim=-1)
    ref = torch.nn.functional.pad(full.gather(-1, ids[:, 1:, None])[..., 0], (1, 0))
    ref.sum().backward()
    assert torch.allclose(logp, ref, atol=1e-5) and torch.allclose(grad, model.head.weight.grad, atol=1e-5)
    ref_entropy = torch.nn.functional.pad(-(full.exp() * full).sum(-1), (1, 0)).detach()
    assert torch.allclose(entropy, ref_entropy, atol=1e-5)


class _KeepLogits(_Logits):
    """``_Logits`` that projects only the positions named by ``logits_to_keep``, as HF causal LMs do."""

    def __init__(self) -> None:
        super().__init__()
        self.projected = 0

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                logits_to_keep: int | torch.Tensor = 0) -> SimpleNamespace:
        hidden = torch.tanh(self.emb(input_ids))
        if isinstance(logits_to_keep, torch.Tensor):
            hidden = hidden[:, logits_to_keep]
        self.projected += hidden.shape[1]
        return SimpleNamespace(logits=self.head(hidden) * 3.0)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_project_only_before_loss_tokens_and_agree_there(temperature: float) -> None:
    from webdancer.algos import rl_batch

    torch.manual_seed(0)
    model, ids = _KeepLogits(), torch.randint(0, 50, (2, 12))
    mask = torch.zeros(2, 12)
    mask[0, 3:6] = 1  # prompt 0-2, response 3-5, tool response 6-8, response 9-10, padding 11
    mask[0, 9:11] = 1
    mask[1, 4:6] = 1
    results = []
    for loss_mask in (None, mask):
        model.zero_grad()
        model.projected = 0
        logp, entropy = rl_batch.token_logprobs(model, ids, torch.ones_like(ids), with_entropy=True,
                                                temperature=temperature, loss_mask=loss_mask)
        (logp * mask).sum().backward()
        results.append((logp.detach(), entropy, model.head.weight.grad.clone(), model.projected))
    (full, full_h, full_g, n_full), (kept, kept_h, kept_g, n_kept) = results
    assert n_full == 12 and n_kept == 5  # positions 2-4 and 8-9 predict the loss tokens 3-5 and 9-10
    on = mask.bool()
    assert torch.allclose(kept[on], full[on], atol=1e-6) and torch.allclose(kept_h[on], full_h[on], atol=1e-6)
    assert torch.allclose(kept_g, full_g, atol=1e-6)  # the same gradient from 5 of 12 projections
    assert (kept[:, :3] == 0).all() and (kept[:, 6:9] == 0).all()


@pytest.mark.parametrize("chunk_elements", [2**24, 3 * 7])  # one piece; 3 positions a piece (uneven)
def test_token_logprob_gradient_passes_gradcheck(chunk_elements: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from webdancer.algos import rl_batch
    from webdancer.algos.rl_batch import TokenLogProb

    monkeypatch.setattr(rl_batch, "CHUNK_ELEMENTS", chunk_elements)

    logits = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 7, (2, 5))
    assert torch.autograd.gradcheck(lambda x: TokenLogProb.apply(x, targets, False)[0], (logits,))
