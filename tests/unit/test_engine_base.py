from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from webdancer.agents.engines import engine_class
from webdancer.agents.engines.base import ENGINES, Generation, SamplingParams, cut_at_stop, find_stop
from webdancer.agents.engines.hf import left_pad, process_logits, sample_tokens


def test_sampling_params_defaults_stop_at_protocol_tags() -> None:
    params = SamplingParams()
    assert params.stop == ("</tool_call>", "</answer>", "<tool_response>")
    assert params.top_k == 0 and params.top_p == 1.0 and params.seed is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_new_tokens": 0},
        {"temperature": -0.1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"top_k": -1},
        {"stop": "</answer>"},
    ],
)
def test_sampling_params_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        SamplingParams(**kwargs)


def test_generation_is_frozen() -> None:
    gen = Generation(token_ids=[1], logprobs=[-0.5], finish_reason="length")
    with pytest.raises(dataclasses.FrozenInstanceError):
        gen.text = "x"  # type: ignore[misc]


def test_find_stop_picks_earliest_occurrence() -> None:
    stops = ("</tool_call>", "</answer>", "<tool_response>")
    assert find_stop("a</answer> then </tool_call>", stops) == "</answer>"
    assert find_stop("x</tool_call>", stops) == "</tool_call>"
    assert find_stop("no stop here </answer", stops) is None
    assert find_stop("anything", ()) is None
    assert find_stop("anything", ("",)) is None


def test_find_stop_prefers_longer_at_same_position() -> None:
    assert find_stop("xx</answer>", ("</a", "</answer>")) == "</answer>"


def test_cut_at_stop_keeps_the_earliest_stop_string() -> None:
    stops = ("</tool_call>", "</answer>")
    assert cut_at_stop("a</answer> then </tool_call>", stops) == ("a</answer>", "</answer>")
    assert cut_at_stop("no stop here", stops) == ("no stop here", None)


def test_engine_registry_rejects_unknown_names() -> None:
    with pytest.raises(KeyError, match="unknown engine"):
        ENGINES.get("no-such-engine")
    with pytest.raises(KeyError, match="unknown engine"):
        engine_class("no-such-engine")


def _probs(logprobs: torch.Tensor) -> list[float]:
    return logprobs.exp().tolist()


def test_process_logits_greedy_is_plain_log_softmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    out = process_logits(logits, SamplingParams(temperature=0.0, top_k=1, top_p=0.1))
    assert torch.allclose(out, torch.log_softmax(logits, -1))


def test_process_logits_temperature() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    out = process_logits(logits, SamplingParams(temperature=2.0))
    expected = torch.log_softmax(torch.tensor([[1.0, 0.5, 0.0]]), -1)
    assert torch.allclose(out, expected)


def test_process_logits_top_k_renormalizes_the_k_best() -> None:
    logits = torch.log(torch.tensor([[0.1, 0.4, 0.3, 0.2]]))
    probs = _probs(process_logits(logits, SamplingParams(top_k=2)))[0]
    assert probs == pytest.approx([0.0, 4 / 7, 3 / 7, 0.0], abs=1e-6)


def test_process_logits_top_p_keeps_smallest_set_reaching_p() -> None:
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    # 0.5 alone is short of 0.7; 0.5 + 0.3 reaches it, so 0.2 goes.
    probs = _probs(process_logits(logits, SamplingParams(top_p=0.7)))[0]
    assert probs == pytest.approx([0.0, 0.5 / 0.8, 0.3 / 0.8], abs=1e-6)
    # 0.5 alone already reaches 0.45.
    probs = _probs(process_logits(logits, SamplingParams(top_p=0.45)))[0]
    assert probs == pytest.approx([0.0, 1.0, 0.0], abs=1e-6)


def test_process_logits_top_k_then_top_p() -> None:
    logits = torch.log(torch.tensor([[0.1, 0.4, 0.3, 0.2]]))
    # top-k 3 leaves 0.4, 0.3, 0.2 (sum 0.9); top-p 0.6 of that keeps 0.4/0.9 + 0.3/0.9.
    probs = _probs(process_logits(logits, SamplingParams(top_k=3, top_p=0.6)))[0]
    assert probs == pytest.approx([0.0, 4 / 7, 3 / 7, 0.0], abs=1e-6)


def test_sample_tokens_stays_inside_the_filtered_set() -> None:
    logits = torch.log(torch.tensor([[0.1, 0.4, 0.3, 0.2]])).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    tokens, logprobs = sample_tokens(logits, SamplingParams(top_k=2), gen)
    assert set(tokens.tolist()) == {1, 2}
    expected = torch.where(tokens == 1, math.log(4 / 7), math.log(3 / 7))
    assert torch.allclose(logprobs, expected, atol=1e-6)
    share = (tokens == 1).float().mean().item()
    assert abs(share - 4 / 7) < 0.05


def test_sample_tokens_greedy_logprob_is_temperature_one() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0]])
    tokens, logprobs = sample_tokens(logits, SamplingParams(temperature=0.0), None)
    assert tokens.tolist() == [1]
    assert logprobs.item() == pytest.approx(torch.log_softmax(logits, -1)[0, 1].item())


def test_left_pad_positions_count_real_tokens() -> None:
    ids, mask, positions = left_pad([[5, 6, 7], [8]], pad_id=0, device=torch.device("cpu"))
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]
