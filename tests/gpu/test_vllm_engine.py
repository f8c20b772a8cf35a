"""VLLMEngine on a GPU with the tiny model: token ids, logprobs, stop strings, weight sync.

Skipped where vLLM or CUDA is missing. vLLM runs the model in float16 here, and the
logprobs are compared against a float32 transformers forward pass on the same ids,
so the tolerances allow for half-precision rounding.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vllm is not installed; install it with `pip install -e .[vllm]` on a CUDA machine")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("vLLM tests need a CUDA GPU", allow_module_level=True)

from transformers import AutoModelForCausalLM

from webdancer.agents.engines import engine_class
from webdancer.agents.engines.base import SamplingParams
from webdancer.agents.engines.hf import process_logits
from webdancer.agents.engines.vllm import VLLMEngine
from webdancer.agents.tiny import default_corpus, make_tiny

PROMPTS = [
    "<|im_start|>user\nWho founded the Telmark Guild of Engravers?<|im_end|>\n<|im_start|>assistant\n",
    "<think>",
    "The city of Ostrava Vale lies in the region of",
]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    # the same tokenizer (same corpus), different weights
    return make_tiny(root / "seed0", seed=0), make_tiny(root / "seed1", corpus=default_corpus(seed=0), seed=1)


@pytest.fixture(scope="module")
def engine(tiny_dirs: tuple[Path, Path]) -> VLLMEngine:
    return VLLMEngine.from_pretrained(str(tiny_dirs[0]), gpu_memory_utilization=0.2, dtype="float16",
                                      max_model_len=1024, enforce_eager=True)


@pytest.fixture(scope="module")
def prompts(engine: VLLMEngine) -> list[list[int]]:
    return [engine.tokenizer.encode(p, add_special_tokens=False) for p in PROMPTS]


def _recomputed(model_dir: Path, prompt: list[int], tokens: list[int], params: SamplingParams) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + tokens])).logits[0]  # (T, V)
    logprobs = process_logits(logits[len(prompt) - 1 : -1], params)
    return logprobs.gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)


def test_registered() -> None:
    assert engine_class("vllm") is VLLMEngine


def test_generate_returns_ids_and_logprobs_of_the_sampling_distribution(
    engine: VLLMEngine, prompts: list[list[int]], tiny_dirs: tuple[Path, Path]
) -> None:
    params = SamplingParams(max_new_tokens=16, temperature=0.7, top_k=50, stop=(), seed=0)
    if not engine.processed_logprobs:
        params = SamplingParams(max_new_tokens=16, temperature=1.0, stop=(), seed=0)  # raw == processed only here
    gens = engine.generate(prompts, params)
    assert len(gens) == len(prompts)
    for prompt, gen in zip(prompts, gens):
        assert len(gen.token_ids) == len(gen.logprobs) > 0
        assert gen.finish_reason in ("stop", "length")
        expected = _recomputed(tiny_dirs[0], prompt, gen.token_ids, params)
        diff = (torch.tensor(gen.logprobs) - expected).abs()
        assert diff.mean().item() < 0.02 and diff.max().item() < 0.1, diff
    again = engine.generate(prompts, params)
    assert [g.token_ids for g in again] == [g.token_ids for g in gens]  # seeded


def test_group_samples_of_one_prompt_differ(engine: VLLMEngine, prompts: list[list[int]]) -> None:
    gens = engine.generate([prompts[0]] * 4, SamplingParams(max_new_tokens=12, stop=(), seed=3))
    assert len({tuple(g.token_ids) for g in gens}) > 1


def test_stop_string_ends_generation(engine: VLLMEngine, prompts: list[list[int]]) -> None:
    free = engine.generate(prompts[:1], SamplingParams(max_new_tokens=8, temperature=0.0, stop=()))[0]
    assert free.finish_reason == "length" and free.stop_string is None
    stop = engine.tokenizer.decode(free.token_ids[:2])
    got = engine.generate(prompts[:1], SamplingParams(max_new_tokens=8, temperature=0.0, stop=(stop,)))[0]
    assert got.finish_reason == "stop" and got.stop_string == stop
    assert got.token_ids == free.token_ids[: len(got.token_ids)] and len(got.token_ids) <= 2
    assert stop in got.text


def test_weight_sync_changes_outputs(
    engine: VLLMEngine, prompts: list[list[int]], tiny_dirs: tuple[Path, Path]
) -> None:
    params = SamplingParams(max_new_tokens=12, temperature=0.0, stop=())
    before = [g.token_ids for g in engine.generate(prompts, params)]
    other = AutoModelForCausalLM.from_pretrained(tiny_dirs[1], dtype=torch.float32)
    engine.load_weights(other)
    after = engine.generate(prompts, params)
    assert [g.token_ids for g in after] != before
    # greedy decoding now follows the new weights
    for prompt, gen in zip(prompts, after):
        expected = _recomputed(tiny_dirs[1], prompt, gen.token_ids, SamplingParams(temperature=1.0))
        assert (torch.tensor(gen.logprobs) - expected).abs().mean().item() < 0.02
    engine.load_weights(AutoModelForCausalLM.from_pretrained(tiny_dirs[0], dtype=torch.float32).state_dict())
    assert [g.token_ids for g in engine.generate(prompts, params)] == before
