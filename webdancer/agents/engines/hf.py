"""Batched sampling with a transformers causal LM and its KV cache.

Prompts of different lengths share one forward pass: they are left-padded, masked,
and given position ids that start at 0 at each row's first real token, so each row
sees exactly what an unpadded run would. A row leaves the batch (and the cache) as
soon as it ends on EOS, a stop string or ``max_new_tokens``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from webdancer.agents.engines.base import ENGINES, EOS_STOP, Generation, SamplingParams, find_stop

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def process_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Log-probabilities of the distribution that ``params`` samples from.

    ``logits``: (B, V) float. Applies temperature, then top-k, then top-p (nucleus:
    the smallest set of most likely tokens whose mass reaches ``top_p``); filtered
    tokens get -inf. With ``temperature == 0`` (greedy) it is the plain log-softmax
    of ``logits``. Returns (B, V) float32.
    """
    logits = logits.float()
    if params.temperature == 0:
        return torch.log_softmax(logits, dim=-1)
    logits = logits / params.temperature
    if 0 < params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs  # mass of strictly more likely tokens
        drop_sorted = mass_before >= params.top_p  # the most likely token is never dropped
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.log_softmax(logits, dim=-1)


def sample_tokens(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row. ``logits``: (B, V). Returns ``(tokens, logprobs)``,
    both (B,): the sampled ids and their log-probabilities under the processed
    distribution (``process_logits``); greedy takes the argmax."""
    logprobs = process_logits(logits, params)
    if params.temperature == 0:
        tokens = torch.argmax(logprobs, dim=-1)
    else:
        tokens = torch.multinomial(logprobs.exp(), 1, generator=generator).squeeze(-1)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, position_ids)``, each (B, T) long, for prompts
    padded on the left to the longest; positions count real tokens only."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[i, width - len(prompt) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


@dataclass
class _Row:
    """One prompt's growing completion."""

    index: int  # position of the prompt in the caller's list
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    stop_string: str | None = None


class HFEngine:
    """``Engine`` over a transformers causal LM (registered as ``"hf"``)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_size: int = 64,
        device: str | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size={max_batch_size} must be at least 1.")
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        if getattr(model, "hf_device_map", None):
            self.device = model.device  # placed by accelerate across devices; leave it there
        else:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            model = model.to(self.device)
        self.model = model.eval()
        self.eos_ids = self._eos_ids()
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids, default=0)
        # transformers 5 renamed ``past_key_values`` to ``cache``; accept either.
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def from_pretrained(
        cls, path_or_name: str, *, dtype: str = "auto", device: str | None = None, **kw: Any
    ) -> HFEngine:
        """Load model and tokenizer from a local directory or a cached Hub name.
        ``dtype``: "auto" (as saved), "float32", "bfloat16" or "float16"; ``kw`` go to
        ``HFEngine.__init__``."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch_dtype: Any = dtype if dtype == "auto" else getattr(torch, dtype, None)
        if not isinstance(torch_dtype, (str, torch.dtype)):
            raise ValueError(f"dtype={dtype!r} is not a torch dtype; use auto, float32, bfloat16 or float16.")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path_or_name)
            model = AutoModelForCausalLM.from_pretrained(path_or_name, dtype=torch_dtype)
        except OSError as err:
            raise OSError(
                f"could not load a model from {path_or_name!r}; pass a model directory "
                "(e.g. one written by `webdancer model make-tiny OUT_DIR`) or a Hub name in the local cache."
            ) from err
        return cls(model, tokenizer, device=device, **kw)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif source is not None:
                ids.update(int(i) for i in source)
        return ids

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        """One ``Generation`` per prompt, in input order. Prompts are grouped by
        length into batches of at most ``max_batch_size`` to limit padding."""
        for i, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {i} is empty; every prompt needs at least one token.")
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start : start + self.max_batch_size]
            for row in self._generate_batch([prompts[i] for i in chunk], chunk, params, generator):
                results[row.index] = self._to_generation(row)
        return [r for r in results if r is not None]

    def _generate_batch(
        self,
        prompts: list[Sequence[int]],
        indices: list[int],
        params: SamplingParams,
        generator: torch.Generator | None,
    ) -> list[_Row]:
        """Sample completions for one batch; rows leave the batch as they finish."""
        ids, mask, positions = left_pad(prompts, self.pad_id, self.device)
        rows = [_Row(index=i) for i in indices]
        active = list(range(len(rows)))  # rows[active[j]] is batch row j
        logits, cache = self._forward(ids, mask, positions, None)
        next_pos = positions[:, -1:] + 1  # (B, 1)
        window = max((len(s.encode("utf-8")) for s in params.stop), default=0) + 1
        for step in range(params.max_new_tokens):
            tokens, logprobs = sample_tokens(logits, params, generator)
            last_step = step == params.max_new_tokens - 1
            keep = []
            for j, (token, logprob) in enumerate(zip(tokens.tolist(), logprobs.tolist())):
                row = rows[active[j]]
                row.token_ids.append(token)
                row.logprobs.append(logprob)
                self._check_finished(row, params.stop, window)
                if row.finish_reason is None and last_step:
                    row.finish_reason = "length"
                if row.finish_reason is None:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(active):
                select = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(select)
                mask, next_pos, tokens = mask[select], next_pos[select], tokens[select]
                active = [active[j] for j in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
            logits, cache = self._forward(tokens[:, None], mask, next_pos, cache)
            next_pos = next_pos + 1
        return rows

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any
    ) -> tuple[torch.Tensor, Any]:
        """Next-token logits (B, V) for the last position of each row, and the cache."""
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kw: cache},
        )
        new_cache = getattr(out, "cache", None)
        if new_cache is None:
            new_cache = getattr(out, "past_key_values", None)
        return out.logits[:, -1, :], new_cache

    def _check_finished(self, row: _Row, stops: Sequence[str], window: int) -> None:
        """Mark ``row`` finished on EOS or when its newest tokens complete a stop
        string. Only the last ``window`` tokens are decoded: a stop string of n bytes
        spans at most n tokens, and earlier text cannot hold one (the row would
        have ended then)."""
        if row.token_ids[-1] in self.eos_ids:
            row.finish_reason, row.stop_string = "stop", EOS_STOP
            return
        if not stops:
            return
        tail = self.tokenizer.decode(row.token_ids[-window:], skip_special_tokens=False)
        stop = find_stop(tail, stops)
        if stop is not None:
            row.finish_reason, row.stop_string = "stop", stop

    def _to_generation(self, row: _Row) -> Generation:
        ids = row.token_ids
        text_ids = ids[:-1] if row.stop_string == EOS_STOP else ids  # EOS is not text
        text = self.tokenizer.decode(text_ids, skip_special_tokens=False)
        return Generation(
            token_ids=list(ids),
            logprobs=list(row.logprobs),
            finish_reason=row.finish_reason or "length",
            stop_string=row.stop_string,
            text=text,
        )


ENGINES.register("hf", HFEngine)
