"""HFEngine reuses the keys/values of prompts it has seen, and gives the same results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from webdancer.agents.engines.base import SamplingParams
from webdancer.agents.engines.hf import HFEngine, PrefixCache, process_logits
from webdancer.agents.tiny import make_tiny, protocol_samples

GREEDY = SamplingParams(max_new_tokens=10, temperature=0.0, stop=())


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    facts = [("Marlow Quen", "a cellist born in 1732"), ("Ostrava Vale", "a city in Telmark")]
    corpus = [s for subject, fact in facts for s in protocol_samples(subject, fact)] * 4
    return make_tiny(tmp_path_factory.mktemp("tiny") / "model", corpus=corpus, vocab_size=600, hidden_size=32,
                     num_layers=2, num_heads=2, num_kv_heads=1)


@pytest.fixture
def engines(tiny_dir: Path) -> tuple[HFEngine, HFEngine]:
    cached = HFEngine.from_pretrained(str(tiny_dir), device="cpu")
    plain = HFEngine(cached.model, cached.tokenizer, device="cpu", prefix_cache_mb=0)
    return cached, plain


def _prompts(n: int) -> list[list[int]]:
    return [[(7 * i + j) % 300 + 20 for j in range(12 + 5 * i)] for i in range(n)]


def _extend(prompts: list[list[int]], gens: list) -> list[list[int]]:
    """What a rollout sends next: prompt + generated ids + an observation (lengths differ)."""
    return [p + g.token_ids + list(range(40, 43 + 2 * i)) for i, (p, g) in enumerate(zip(prompts, gens))]


def test_prefix_cache_take_and_put() -> None:
    def kv(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:  # 8 bytes a token (float32 keys + values)
        return [(torch.zeros(1, n, 1), torch.zeros(1, n, 1))]

    cache = PrefixCache(max_bytes=80)
    cache.put([1, 2], kv(2))
    cache.put([1, 2, 3], kv(3))
    cache.put([9], kv(1))
    assert cache.bytes == 48
    assert cache.take([1, 2, 3]).ids == [1, 2]  # a proper prefix only: [1, 2, 3] needs a new token
    assert cache.take([1, 2, 3, 4]).ids == [1, 2, 3]  # the longest, handed out once
    assert cache.take([1, 2, 3, 4]) is None and len(cache) == 1 and cache.bytes == 8
    cache.put(list(range(6)), kv(6))
    cache.put(list(range(5)), kv(5))  # 1 + 6 + 5 tokens > 10: the oldest entries go
    assert cache.bytes <= 80 and cache.take([9, 9]) is None
    cache.put(list(range(11)), kv(11))  # larger than the whole budget: not kept
    assert cache.take(list(range(12))) is not None and cache.bytes <= 80


def test_extended_prompts_reuse_the_cache_and_match_a_fresh_engine(engines: tuple[HFEngine, HFEngine]) -> None:
    cached, plain = engines
    prompts = _prompts(4)
    first = cached.generate(prompts, GREEDY)
    assert cached.prefix_cache is not None and len(cached.prefix_cache) == 4
    follow = _extend(prompts, first) + [[5, 6, 7]]  # one prompt with no stored prefix
    widths: list[int] = []
    hook = cached.model.register_forward_pre_hook(
        lambda _m, _args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        got = cached.generate(follow, GREEDY)
    finally:
        hook.remove()
    # the prefill ran over the new tokens only (the longest new part), not whole prompts
    new_parts = [len(f) - len(p) - len(g.token_ids) + 1 for f, p, g in zip(follow, prompts, first)] + [3]
    assert widths[0] == max(new_parts) < max(len(f) for f in follow)
    want = plain.generate(follow, GREEDY)
    for a, b in zip(got, want):
        assert a.token_ids == b.token_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_sampled_logprobs_after_reuse_match_a_full_forward_pass(engines: tuple[HFEngine, HFEngine]) -> None:
    cached, _ = engines
    params = SamplingParams(max_new_tokens=8, temperature=0.8, top_k=40, stop=(), seed=1)
    prompts = _prompts(3)
    follow = _extend(prompts, cached.generate(prompts, params))
    for prompt, gen in zip(follow, cached.generate(follow, params)):
        with torch.inference_mode():
            logits = cached.model(torch.tensor([prompt + gen.token_ids])).logits[0]
        expected = process_logits(logits[len(prompt) - 1 : -1], params)
        expected = expected.gather(-1, torch.tensor(gen.token_ids)[:, None]).squeeze(-1)
        assert gen.logprobs == pytest.approx(expected.tolist(), abs=1e-4)


def test_a_weight_update_drops_the_cache(engines: tuple[HFEngine, HFEngine]) -> None:
    cached, plain = engines
    prompts = _prompts(2)
    first = cached.generate(prompts, GREEDY)
    with torch.no_grad():
        for p in cached.model.parameters():
            p.mul_(1.5)  # in place, as an optimizer step
    follow = _extend(prompts, first)
    got = cached.generate(follow, GREEDY)
    assert [g.token_ids for g in got] == [g.token_ids for g in plain.generate(follow, GREEDY)]
    assert len(cached.prefix_cache) == 2  # only what the last call stored


def test_prefix_cache_can_be_turned_off(tiny_dir: Path) -> None:
    engine = HFEngine.from_pretrained(str(tiny_dir), device="cpu", prefix_cache_mb=0)
    engine.generate(_prompts(2), GREEDY)
    assert engine.prefix_cache is None
    with pytest.raises(ValueError, match="prefix_cache_mb"):
        HFEngine(engine.model, engine.tokenizer, prefix_cache_mb=-1)
