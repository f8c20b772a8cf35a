"""Batched sampling with a transformers causal LM and its KV cache.

Prompts of different lengths share one forward pass: they are left-padded, masked,
and given position ids that start at 0 at each row's first real token, so each row
sees exactly what an unpadded run would. A row leaves the batch (and the cache) as
soon as it ends on EOS, a stop string or ``max_new_tokens``.

A multi-turn rollout sends each conversation back with what the model just wrote and
the new observation appended. The engine keeps the keys and values of the sequences
it has seen (``PrefixCache``) and, when a prompt extends one of them, runs the model
only over the new tokens: the prefill then costs the observation, not the whole
conversation again. The cache is dropped whenever the model's weights change.
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
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
    distribution (``process_logits``); greedy takes the argmax.

    Sampling inverts each row's cumulative distribution at one uniform draw, which
    needs one random number per row where ``torch.multinomial`` draws one per
    vocabulary entry (the larger cost for small models and big vocabularies)."""
    logprobs = process_logits(logits, params)
    if params.temperature == 0:
        tokens = torch.argmax(logprobs, dim=-1)
    else:
        cdf = torch.cumsum(logprobs.exp(), dim=-1)  # (B, V)
        total = cdf[:, -1:]
        u = torch.rand(total.shape, generator=generator, device=cdf.device, dtype=cdf.dtype) * total
        # Strictly below the total mass, so the index found always has a positive probability.
        u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))
        tokens = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)
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


KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (keys, values)


@dataclass
class _Row:
    """One prompt's growing completion."""

    index: int  # position of the prompt in the caller's list
    prompt: Sequence[int] = ()
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    stop_string: str | None = None


@dataclass
class _Prefix:
    """Keys and values of one token sequence; per layer (kv_heads, len(ids), head_dim)."""

    ids: list[int]
    kv: KV

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for pair in self.kv for t in pair)


class PrefixCache:
    """Recently seen sequences and their keys/values, least recently stored dropped first.

    ``take(prompt)`` hands out (and forgets) the longest stored sequence that is a
    proper prefix of ``prompt``; ``max_bytes`` bounds the memory of all keys/values held.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[int, _Prefix] = OrderedDict()
        self._next_key = 0

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, prompt: Sequence[int]) -> _Prefix | None:
        best_key, best_len = None, 0
        n = len(prompt)
        for key, entry in self._entries.items():
            m = len(entry.ids)
            # cheap checks first: most entries differ in length or in their last token
            if best_len < m < n and prompt[m - 1] == entry.ids[-1] and list(prompt[:m]) == entry.ids:
                best_key, best_len = key, m
        if best_key is None:
            return None
        entry = self._entries.pop(best_key)
        self.bytes -= entry.bytes
        return entry

    def put(self, ids: list[int], kv: KV) -> None:
        entry = _Prefix(ids, kv)
        if not ids or entry.bytes > self.max_bytes:
            return
        self._entries[self._next_key] = entry
        self._next_key += 1
        self.bytes += entry.bytes
        while self.bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.bytes -= old.bytes

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


def cache_layers(cache: Any) -> KV | None:
    """Per-layer (keys, values), each (B, kv_heads, T, head_dim), of a plain dynamic
    cache; ``None`` for caches whose layers are not all full attention."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        if any(getattr(layer, "is_sliding", False) or getattr(layer, "keys", None) is None for layer in layers):
            return None
        return [(layer.keys, layer.values) for layer in layers]
    keys, values = getattr(cache, "key_cache", None), getattr(cache, "value_cache", None)
    if keys is None or values is None:
        return None
    return list(zip(keys, values))


def build_cache(layers: KV, cache: Any = None) -> Any:
    """``cache`` (default: a new transformers ``DynamicCache``) filled with ``layers``
    (per layer (B, kv_heads, T, head_dim))."""
    if cache is None:
        from transformers import DynamicCache

        cache = DynamicCache()
    for i, (keys, values) in enumerate(layers):
        cache.update(keys, values, i)
    return cache


@functools.lru_cache(maxsize=1)
def growing_layer_class() -> type | None:
    """A cache layer that writes new keys/values into spare capacity instead of
    concatenating (which copies the whole cache at every decoding step); ``None``
    where this transformers version has no ``DynamicLayer`` to build it on."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None

    class GrowingLayer(DynamicLayer):  # type: ignore[misc, valid-type]
        """``keys``/``values`` are views of the first ``length`` positions of buffers
        that grow by half their size when full."""

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
            if not self.is_initialized:
                self.dtype, self.device, self.is_initialized = key_states.dtype, key_states.device, True
                self._k, self._v, self._length = key_states[:, :, :0], value_states[:, :, :0], 0
            need = self._length + key_states.shape[-2]
            if need > self._k.shape[-2]:
                capacity = max(need, self._k.shape[-2] * 3 // 2, 64)
                k = key_states.new_empty((*key_states.shape[:2], capacity, key_states.shape[-1]))
                v = value_states.new_empty((*value_states.shape[:2], capacity, value_states.shape[-1]))
                k[:, :, : self._length] = self._k[:, :, : self._length]
                v[:, :, : self._length] = self._v[:, :, : self._length]
                self._k, self._v = k, v
            self._k[:, :, self._length : need] = key_states
            self._v[:, :, self._length : need] = value_states
            self._length = need
            self.keys, self.values = self._k[:, :, :need], self._v[:, :, :need]
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized and self._length > 0:
                self._k, self._v = self._k[indices], self._v[indices]
                self.keys, self.values = self._k[:, :, : self._length], self._v[:, :, : self._length]

    return GrowingLayer


def new_cache(config: Any) -> Any:
    """An empty growing cache for a model whose layers all use full attention, or
    ``None`` to let the model make its own (sliding-window and hybrid models, and
    transformers versions without the layer API)."""
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    layer_class = growing_layer_class()
    if layer_class is None or getattr(config, "sliding_window", None) or set(layer_types) != {"full_attention"}:
        return None
    from transformers.cache_utils import Cache

    try:
        return Cache(layer_class_to_replicate=layer_class)
    except TypeError:
        return None


class HFEngine:
    """``Engine`` over a transformers causal LM (registered as ``"hf"``).

    ``prefix_cache_mb`` bounds the memory (on the model's device) of the keys and
    values kept between calls for prompts that extend them; 0 turns the prefix cache
    off. A token costs ``2 * layers * kv_heads * head_dim`` numbers in the model's
    dtype: 1 KiB for the default tiny model, 56 KiB for a 7B Qwen2.5.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_size: int = 64,
        device: str | None = None,
        prefix_cache_mb: float = 256.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size={max_batch_size} must be at least 1.")
        if prefix_cache_mb < 0:
            raise ValueError(f"prefix_cache_mb={prefix_cache_mb} must be >= 0 (0 turns the prefix cache off).")
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
        self.prefix_cache = PrefixCache(int(prefix_cache_mb * 2**20)) if prefix_cache_mb else None
        self._weights_version: tuple[tuple[int, int], ...] | None = None
        # Write new keys/values into spare capacity rather than letting transformers
        # concatenate the whole cache at every step (False restores the latter).
        self.growing_cache = True

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

    def _new_cache(self) -> Any:
        return new_cache(self.model.config) if self.growing_cache else None

    def clear_prefix_cache(self) -> None:
        """Forget every stored prefix (also done automatically when the weights change)."""
        if self.prefix_cache is not None:
            self.prefix_cache.clear()

    def _check_weights(self) -> None:
        """Drop the prefix cache when any parameter changed since the last call: an
        optimizer step or ``load_state_dict`` writes in place, which bumps each
        tensor's version counter; replaced tensors change identity."""
        version = tuple((id(p), p._version) for p in self.model.parameters())
        if version != self._weights_version:
            self.clear_prefix_cache()
            self._weights_version = version

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        """One ``Generation`` per prompt, in input order. Prompts are grouped by
        length into batches of at most ``max_batch_size`` to limit padding."""
        for i, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {i} is empty; every prompt needs at least one token.")
        if self.prefix_cache is not None:
            self._check_weights()
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start : start + self.max_batch_size]
            rows = [_Row(index=i, prompt=prompts[i]) for i in chunk]
            for row in self._generate_batch(rows, params, generator):
                results[row.index] = self._to_generation(row)
        return [r for r in results if r is not None]

    def _generate_batch(
        self, rows: list[_Row], params: SamplingParams, generator: torch.Generator | None
    ) -> list[_Row]:
        """Sample completions for one batch; rows leave the batch as they finish."""
        logits, cache, mask, next_pos = self._prefill([row.prompt for row in rows])
        active = list(range(len(rows)))  # rows[active[j]] is batch row j
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
            if len(keep) < len(active):
                kept = set(keep)
                self._save_prefixes(rows, active, [j for j in range(len(active)) if j not in kept], cache, mask)
                if not keep:
                    break
                select = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(select)
                mask, next_pos, tokens = mask[select], next_pos[select], tokens[select]
                active = [active[j] for j in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=-1)
            logits, cache = self._forward(tokens[:, None], mask, next_pos, cache)
            next_pos = next_pos + 1
        return rows

    def _prefill(self, prompts: list[Sequence[int]]) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor]:
        """Run the prompts through the model, reusing stored prefixes.

        Returns ``(logits (B, V), cache, attention mask (B, T), next positions (B, 1))``.
        A batch with stored prefixes is laid out as ``[pad | prefix_i | pad | new_i]``:
        prefixes right-aligned in the cache, new tokens right-aligned after them, the
        padding masked out and positions counting real tokens only.
        """
        taken = [self.prefix_cache.take(p) if self.prefix_cache is not None else None for p in prompts]
        if all(t is None for t in taken):
            ids, mask, positions = left_pad(prompts, self.pad_id, self.device)
            logits, cache = self._forward(ids, mask, positions, self._new_cache())
            return logits, cache, mask, positions[:, -1:] + 1
        cached = [len(t.ids) if t is not None else 0 for t in taken]
        ids, new_mask, positions = left_pad([p[c:] for p, c in zip(prompts, cached)], self.pad_id, self.device)
        positions = positions + torch.tensor(cached, device=self.device)[:, None]
        width = max(cached)
        past_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for j, c in enumerate(cached):
            past_mask[j, width - c :] = 1
        reference = next(t for t in taken if t is not None).kv
        layers: KV = []
        for layer, (ref_k, ref_v) in enumerate(reference):
            keys = ref_k.new_zeros((len(prompts), ref_k.shape[0], width, ref_k.shape[2]))
            values = ref_v.new_zeros((len(prompts), ref_v.shape[0], width, ref_v.shape[2]))
            for j, t in enumerate(taken):
                if t is not None:
                    keys[j, :, width - cached[j] :] = t.kv[layer][0]
                    values[j, :, width - cached[j] :] = t.kv[layer][1]
            layers.append((keys, values))
        mask = torch.cat([past_mask.to(new_mask.device), new_mask], dim=-1)
        logits, cache = self._forward(ids, mask, positions, build_cache(layers, self._new_cache()))
        return logits, cache, mask, positions[:, -1:] + 1

    def _save_prefixes(self, rows: list[_Row], active: list[int], leaving: list[int], cache: Any,
                       mask: torch.Tensor) -> None:
        """Store the keys and values of the batch rows ``leaving`` (their prompt and all
        generated tokens but the last, which was never fed back)."""
        if self.prefix_cache is None:
            return
        layers = cache_layers(cache)
        if layers is None:
            self.prefix_cache = None  # sliding-window or other special caches: run without reuse
            return
        for j in leaving:
            row = rows[active[j]]
            keep = mask[j].bool()
            kv = [(k[j][:, keep.to(k.device)], v[j][:, keep.to(v.device)]) for k, v in layers]
            ids = [*row.prompt, *row.token_ids[:-1]]
            if kv and kv[0][0].shape[1] == len(ids):
                self.prefix_cache.put(ids, kv)

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
