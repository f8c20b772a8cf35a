"""The vLLM engine stays out of the way where vLLM is missing, and maps vLLM's
outputs onto the engine contract (checked here against a stand-in ``vllm`` module)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
import torch

from webdancer.agents.engines import ENGINE_MODULES, engine_class
from webdancer.agents.engines.base import EOS_STOP, SamplingParams

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_importing_the_engines_does_not_import_vllm() -> None:
    code = (
        "import sys, webdancer.agents.engines as e\n"
        "assert 'vllm' not in sys.modules, 'vllm was imported'\n"
        "assert 'webdancer.agents.engines.vllm' not in sys.modules, 'the vllm engine module was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert ENGINE_MODULES["vllm"] == "webdancer.agents.engines.vllm"


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here; the missing-package error cannot be seen")
def test_construction_without_vllm_says_how_to_install() -> None:
    cls = engine_class("vllm")
    with pytest.raises(ImportError, match=r"pip install -e \.\[vllm\]"):
        cls(llm=None, tokenizer=None)
    with pytest.raises(ImportError, match="CUDA"):
        cls.from_pretrained("some/model")


# ------------------------------------------------------- a stand-in vllm module


class FakeSamplingParams:
    def __init__(self, **kw: Any) -> None:
        self.kw = kw


@dataclass
class FakeLogprob:
    logprob: float


@dataclass
class FakeCompletion:
    token_ids: list[int]
    logprobs: list[dict[int, FakeLogprob]]
    finish_reason: str
    stop_reason: Any = None


@dataclass
class FakeModel:
    loaded: list[tuple[str, torch.Tensor]] = field(default_factory=list)

    def load_weights(self, weights: Any) -> None:
        self.loaded.extend(weights)


class FakeLLM:
    """Returns the completions queued in ``replies`` and records what it was asked."""

    def __init__(self, replies: list[FakeCompletion]) -> None:
        self.replies = replies
        self.calls: list[tuple[list[dict[str, list[int]]], list[FakeSamplingParams]]] = []
        self.resets = 0

    def generate(self, inputs: Any, sampling: Any, use_tqdm: bool = True) -> list[Any]:
        self.calls.append((inputs, sampling))
        return [types.SimpleNamespace(outputs=[self.replies[i]]) for i in range(len(inputs))]

    def reset_prefix_cache(self) -> None:
        self.resets += 1


class FakeTokenizer:
    """Token i decodes to the i-th entry of ``vocab``."""

    vocab: ClassVar[list[str]] = ["<eos>", "a", "b", "</answer>"]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(self.vocab[i] for i in ids)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    module.__version__ = "0.0-fake"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def _completion(ids: list[int], finish: str, stop: Any = None) -> FakeCompletion:
    return FakeCompletion(ids, [{t: FakeLogprob(-0.1 * (k + 1))} for k, t in enumerate(ids)], finish, stop)


def test_generate_maps_sampling_and_finish_reasons(fake_vllm: types.ModuleType) -> None:
    from webdancer.agents.engines.vllm import VLLMEngine

    llm = FakeLLM([
        _completion([1, 3], "stop", "</answer>"),
        _completion([1, 2, 0], "stop", None),  # EOS
        _completion([2, 2], "length"),
    ])
    engine = VLLMEngine(llm, FakeTokenizer())
    params = SamplingParams(max_new_tokens=2, temperature=0.7, top_k=0, top_p=0.9, seed=5)
    gens = engine.generate([[1], [1, 2], [3]], params)
    assert [g.finish_reason for g in gens] == ["stop", "stop", "length"]
    assert [g.stop_string for g in gens] == ["</answer>", EOS_STOP, None]
    assert gens[0].text == "a</answer>" and gens[1].text == "ab" and gens[2].text == "bb"
    assert gens[1].token_ids == [1, 2, 0] and gens[1].logprobs == pytest.approx([-0.1, -0.2, -0.3])
    inputs, sampling = llm.calls[0]
    assert inputs == [{"prompt_token_ids": [1]}, {"prompt_token_ids": [1, 2]}, {"prompt_token_ids": [3]}]
    kw = sampling[0].kw
    assert kw["top_k"] == -1 and kw["top_p"] == 0.9 and kw["temperature"] == 0.7 and kw["max_tokens"] == 2
    assert kw["include_stop_str_in_output"] is True and kw["logprobs"] == 0
    assert kw["stop"] == list(params.stop)
    # one distinct seed per prompt (a group's samples share their prompt), the same on a rerun
    seeds = [s.kw["seed"] for s in sampling]
    assert len(set(seeds)) == 3
    engine.generate([[1], [1, 2], [3]], params)
    assert [s.kw["seed"] for s in llm.calls[1][1]] == seeds


def test_generate_rejects_empty_prompts_and_unknown_finish(fake_vllm: types.ModuleType) -> None:
    from webdancer.agents.engines.vllm import VLLMEngine

    engine = VLLMEngine(FakeLLM([_completion([1], "abort")]), FakeTokenizer())
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        engine.generate([[]], SamplingParams())
    with pytest.raises(RuntimeError, match="finish_reason='abort'"):
        engine.generate([[1]], SamplingParams())


def test_load_weights_prefers_the_in_process_model(fake_vllm: types.ModuleType) -> None:
    from webdancer.agents.engines.vllm import VLLMEngine

    llm = FakeLLM([])
    model = FakeModel()
    llm.llm_engine = types.SimpleNamespace(  # type: ignore[attr-defined]
        model_executor=types.SimpleNamespace(driver_worker=types.SimpleNamespace(
            worker=types.SimpleNamespace(model_runner=types.SimpleNamespace(model=model)))))
    source = torch.nn.Linear(2, 3)
    VLLMEngine(llm, FakeTokenizer()).load_weights(source)
    assert sorted(name for name, _ in model.loaded) == ["bias", "weight"]
    assert torch.equal(dict(model.loaded)["weight"], source.weight)
    assert llm.resets == 1


def test_load_weights_falls_back_to_apply_model(fake_vllm: types.ModuleType) -> None:
    from webdancer.agents.engines.vllm import VLLMEngine

    model = FakeModel()
    llm = FakeLLM([])
    llm.apply_model = lambda func: [func(model)]  # type: ignore[attr-defined]
    VLLMEngine(llm, FakeTokenizer()).load_weights({"w": torch.ones(2)})
    assert [name for name, _ in model.loaded] == ["w"] and model.loaded[0][1].device.type == "cpu"


def test_load_weights_without_any_route_is_a_clear_error(fake_vllm: types.ModuleType) -> None:
    from webdancer.agents.engines.vllm import VLLMEngine

    with pytest.raises(RuntimeError, match="no way to load weights"):
        VLLMEngine(FakeLLM([]), FakeTokenizer()).load_weights({"w": torch.ones(2)})
