"""Token-level generation with vLLM, for rollouts on GPUs (``pip install -e .[vllm]``).

``VLLMEngine`` speaks token ids like every ``Engine``: prompts go to
``vllm.LLM.generate`` as ``{"prompt_token_ids": ...}``, and each completion comes
back with the sampled ids, the log-probability of each sampled token, the finish
reason and the stop string that ended it. vLLM is imported only when an engine is
built, so that ``webdancer`` imports (and its tests run) without it.

Log-probabilities. The contract asks for the log-probability under the distribution
actually sampled from (after temperature, top-k and top-p). vLLM releases whose
engine arguments have ``logprobs_mode`` are asked for ``"processed_logprobs"``,
which in current releases is exactly that (in the first releases with the option it
meant "after penalties", still before temperature; ``tests/gpu`` checks the values
against a transformers recomputation). Older releases return the log-probabilities
of the raw model distribution on their V1 engine; there the engine sets
``processed_logprobs = False`` and logs a warning once when temperature or filtering
make a difference, and the trainer should recompute old log-probabilities itself (a
known pitfall: TRL #4159, verl PR #2953).

Weights. ``load_weights`` copies a trainer's weights into the running engine. It
prefers a model object living in this process (vLLM's V0 engine, or V1 with
``VLLM_ENABLE_V1_MULTIPROCESSING=0``, which ``from_pretrained`` sets by default so
that no copy crosses a process boundary) and otherwise ships the weights to the
workers with ``LLM.apply_model`` or ``LLM.collective_rpc`` (recent vLLM releases
send a function to its workers only with ``VLLM_ALLOW_INSECURE_SERIALIZATION=1``).
The prefix cache is reset afterwards, since keys and values computed with the old
weights are stale.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from webdancer.agents.engines.base import ENGINES, EOS_STOP, Generation, SamplingParams

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("webdancer.agents")

INSTALL_HINT = "install it with `pip install -e .[vllm]` on a machine with a CUDA GPU"

# Where a model object lives when the engine runs in this process, oldest layouts first.
_IN_PROCESS_MODEL_PATHS = (
    ("llm_engine", "model_executor", "driver_worker", "model_runner", "model"),
    ("llm_engine", "model_executor", "driver_worker", "worker", "model_runner", "model"),
    ("llm_engine", "engine_core", "engine_core", "model_executor", "driver_worker", "worker", "model_runner", "model"),
)


def import_vllm() -> Any:
    """The ``vllm`` module, or an ``ImportError`` that says how to install it."""
    try:
        import vllm
    except ImportError as err:
        raise ImportError(f"VLLMEngine needs the vllm package, which is not installed; {INSTALL_HINT}.") from err
    return vllm


def supports_logprobs_mode() -> bool:
    """Whether the installed vLLM takes the ``logprobs_mode`` engine argument."""
    try:
        from vllm.engine.arg_utils import EngineArgs
    except ImportError:
        return False
    if not dataclasses.is_dataclass(EngineArgs):
        return False
    return any(f.name == "logprobs_mode" for f in dataclasses.fields(EngineArgs))


def row_seeds(seed: int | None, n: int) -> list[int | None]:
    """One seed per prompt derived from the batch seed: the samples of a group share
    their prompt, and one seed for all would make them identical."""
    if seed is None:
        return [None] * n
    import numpy as np

    return [int(s) for s in np.random.SeedSequence(seed).generate_state(n)]


def _load_into_model(model: Any, weights: list[tuple[str, Any]]) -> None:
    """Run inside a vLLM worker by ``apply_model``: copy ``weights`` into its model."""
    model.load_weights(weights=weights)


def _load_into_worker(worker: Any, weights: list[tuple[str, Any]]) -> None:
    """Run inside a vLLM worker by ``collective_rpc``: copy ``weights`` into its model."""
    runner = getattr(worker, "model_runner", None)
    model = runner.model if runner is not None else worker.get_model()
    model.load_weights(weights=weights)


class VLLMEngine:
    """``Engine`` over a ``vllm.LLM`` (registered as ``"vllm"``).

    Args:
        llm: a constructed ``vllm.LLM``.
        tokenizer: the tokenizer whose ids the engine speaks (the model's own).
        processed_logprobs: whether ``llm`` returns log-probabilities after temperature,
            top-k and top-p (built with ``logprobs_mode="processed_logprobs"``).
    """

    def __init__(self, llm: Any, tokenizer: PreTrainedTokenizerBase, *, processed_logprobs: bool = True) -> None:
        self.vllm = import_vllm()
        self.llm = llm
        self.tokenizer = tokenizer
        self.processed_logprobs = processed_logprobs
        self._warned_raw = False

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        gpu_memory_utilization: float = 0.5,
        dtype: str = "auto",
        in_process: bool = True,
        **kw: Any,
    ) -> VLLMEngine:
        """Start vLLM on the model at ``path`` (a directory or a cached Hub name).

        ``gpu_memory_utilization`` is the share of GPU memory vLLM may take (leave room
        for a trainer on the same GPU); ``in_process`` keeps the model in this process
        so that ``load_weights`` copies tensors directly; ``kw`` go to ``vllm.LLM``
        (``max_model_len``, ``enforce_eager``, ``seed``, ``tensor_parallel_size``...).
        """
        vllm = import_vllm()
        from transformers import AutoTokenizer

        if in_process:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        processed = True
        if "logprobs_mode" not in kw:
            if supports_logprobs_mode():
                kw["logprobs_mode"] = "processed_logprobs"
            else:
                processed = False
        else:
            processed = kw["logprobs_mode"] == "processed_logprobs"
        llm = vllm.LLM(model=path, gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, **kw)
        return cls(llm, AutoTokenizer.from_pretrained(path), processed_logprobs=processed)

    def sampling_params(self, params: SamplingParams, seed: int | None) -> Any:
        """The ``vllm.SamplingParams`` of one prompt."""
        return self.vllm.SamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            include_stop_str_in_output=True,
            skip_special_tokens=False,  # stop strings may be special tokens
            spaces_between_special_tokens=False,
            seed=seed,
            logprobs=0,  # the sampled token's log-probability only
        )

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        """One ``Generation`` per prompt, in input order (vLLM batches them itself)."""
        for i, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {i} is empty; every prompt needs at least one token.")
        if not prompts:
            return []
        filtered = params.temperature not in (0.0, 1.0) or params.top_k > 0 or params.top_p < 1.0
        if not self.processed_logprobs and filtered and not self._warned_raw:
            log.warning("this vLLM returns log-probabilities before temperature and top-k/top-p; "
                        "recompute old log-probabilities in the trainer")
            self._warned_raw = True
        inputs = [{"prompt_token_ids": list(p)} for p in prompts]
        sampling = [self.sampling_params(params, s) for s in row_seeds(params.seed, len(prompts))]
        outputs = self.llm.generate(inputs, sampling, use_tqdm=False)
        return [self._to_generation(out.outputs[0]) for out in outputs]

    def _to_generation(self, completion: Any) -> Generation:
        ids = [int(t) for t in completion.token_ids]
        logprobs = [float(step[token].logprob) for token, step in zip(ids, completion.logprobs or [])]
        if len(logprobs) != len(ids):
            raise RuntimeError(f"vLLM returned {len(logprobs)} log-probabilities for {len(ids)} tokens; "
                               "request logprobs=0 (the engine does) and use a vLLM that honours it.")
        reason = completion.finish_reason
        if reason == "length":
            finish, stop = "length", None
        elif reason == "stop":
            finish = "stop"
            # a string: the stop string; None or a token id: EOS or a stop token
            stop = completion.stop_reason if isinstance(completion.stop_reason, str) else EOS_STOP
        else:
            raise RuntimeError(f"vLLM ended a request with finish_reason={reason!r}; check the vLLM logs.")
        text_ids = ids[:-1] if stop == EOS_STOP and ids else ids  # EOS is not text
        text = self.tokenizer.decode(text_ids, skip_special_tokens=False)
        return Generation(token_ids=ids, logprobs=logprobs, finish_reason=finish, stop_string=stop, text=text)

    def load_weights(self, model_or_state_dict: Any) -> None:
        """Copy weights into the running engine: a ``torch.nn.Module`` (its
        ``state_dict``), a mapping of names to tensors, or an iterable of
        ``(name, tensor)`` pairs, named as in the Hugging Face checkpoint."""
        weights = _named_tensors(model_or_state_dict)
        model = self._in_process_model()
        if model is not None:
            model.load_weights(weights=weights)
        elif hasattr(self.llm, "apply_model"):
            cpu = [(name, t.detach().cpu()) for name, t in weights]  # tensors cross a process boundary
            self.llm.apply_model(functools.partial(_load_into_model, weights=cpu))
        elif hasattr(self.llm, "collective_rpc"):
            cpu = [(name, t.detach().cpu()) for name, t in weights]
            self.llm.collective_rpc(_load_into_worker, args=(cpu,))
        else:
            version = getattr(self.vllm, "__version__", "unknown")
            raise RuntimeError(f"vLLM {version} offers no way to load weights into a running engine "
                               "(no in-process model, apply_model or collective_rpc); use vLLM >= 0.8.")
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()  # cached keys/values were computed with the old weights

    def _in_process_model(self) -> Any:
        for path in _IN_PROCESS_MODEL_PATHS:
            obj: Any = self.llm
            for name in path:
                obj = getattr(obj, name, None)
                if obj is None:
                    break
            if obj is not None and hasattr(obj, "load_weights"):
                return obj
        return None


def _named_tensors(source: Any) -> list[tuple[str, torch.Tensor]]:
    if hasattr(source, "state_dict") and callable(source.state_dict):
        source = source.state_dict()
    items: Iterable[tuple[str, Any]] = source.items() if isinstance(source, Mapping) else source
    return [(name, tensor.detach()) for name, tensor in items]


ENGINES.register("vllm", VLLMEngine)
