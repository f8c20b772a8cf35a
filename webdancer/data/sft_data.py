"""SFT data: conversations -> token ids with an assistant-only loss mask -> micro-batches.

A conversation is a list of ``{"role", "content"}`` messages as ``Trajectory.messages``
and WebDancer's released rows hold them: system, user (prompt and question), then
assistant turns, each followed by the observation that came back (a user turn wrapped
in ``<tool_response>``, or a ``tool`` turn). ``tokenize_conversation`` builds the ids
piece by piece exactly as ``Rollout`` does, so that SFT trains on the very ids the
policy later sees and samples:

    prompt       template(leading messages, add_generation_prompt)   mask 0
    assistant    encode(content)                                       mask 1
    observation  ObservationEncoder suffix up to the next generation prompt   mask 0

The mask is 1 exactly on the tokens of assistant contents (WebDancer masks tool
responses, and prompts, from the loss). An assistant turn ends where the protocol's
stop strings (``</tool_call>``, ``</answer>``) end it, as in the rollout; the
template's end-of-turn token belongs to the observation that follows.

Micro-batches come padded (``pad_batch``) or packed (``pack``): several samples
laid end to end in one row with ``position_ids`` restarting at 0 for each. In
transformers >= 5 the attention of every model built on ``create_causal_mask``
(sdpa, eager, flex, flash) turns restarting position ids, with no 2-D attention
mask and no KV cache (``use_cache=False``: with a cache the position ids are not
read as packing), into a block-diagonal causal mask, so no token attends to another
sample; ``block_causal_mask`` builds the same mask explicitly as a 4-D tensor for
models that do not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from webdancer.agents.prompts import Message, encode, render_text
from webdancer.agents.rollout import ObservationEncoder
from webdancer.data.formats import check_messages, iter_records, unwrap_tool_response

log = logging.getLogger("webdancer.data")


@dataclass(frozen=True)
class SFTSample:
    """One tokenized conversation."""

    ids: list[int]
    mask: list[int]  # 1 on assistant tokens (the loss), 0 on prompt and observation tokens

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class LoadStats:
    """What happened to the conversations of a dataset, in conversations."""

    read: int = 0
    kept: int = 0
    dropped_long: int = 0  # longer than max_length (truncate=False)
    truncated: int = 0  # cut to max_length (truncate=True)
    dropped_no_loss: int = 0  # no assistant token left
    tokens: int = 0  # tokens of the kept samples
    loss_tokens: int = 0  # assistant tokens of the kept samples
    files: list[str] = field(default_factory=list)


@dataclass
class Batch:
    """One micro-batch. Position ``t`` predicts ``labels[:, t]``, the token at ``t + 1``."""

    input_ids: Tensor  # (B, T) long
    position_ids: Tensor  # (B, T) long; restarts at 0 for every sample of a packed row
    labels: Tensor  # (B, T) long: next token ids (0 where there is none)
    loss_mask: Tensor  # (B, T) bool: labels[:, t] is an assistant token
    attention_mask: Tensor | None  # (B, T) padding mask of a padded batch; None for a packed row
    n_tokens: int  # tokens that are not padding
    n_samples: int

    def to(self, device: torch.device | str) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)
        return Batch(move(self.input_ids), move(self.position_ids), move(self.labels), move(self.loss_mask),
                     move(self.attention_mask), self.n_tokens, self.n_samples)


# ----------------------------------------------------------------------------- reading


def check_conversation(messages: Any, where: str) -> list[Message]:
    """Validate one conversation; -> plain ``{"role", "content"}`` dicts."""
    out = check_messages(messages, where)
    roles = [m["role"] for m in out]
    if "assistant" not in roles:
        raise ValueError(f"{where}: the conversation has no assistant message to train on; drop the record.")
    if roles[0] == "assistant":
        raise ValueError(f"{where}: the conversation starts with an assistant message; put the system/user "
                         "prompt before it.")
    return out


def read_conversations(path: str | Path) -> list[tuple[str, list[Message]]]:
    """``(file:line, messages)`` of every record of a JSONL file.

    Accepts ``Trajectory.to_dict()`` rows, WebDancer's rows and generic chat rows: any
    object with a ``"messages"`` list. A malformed line raises ``ValueError`` naming it.
    """
    out = []
    for where, record in iter_records(path):
        if not isinstance(record, Mapping) or "messages" not in record:
            raise ValueError(f"{where}: the record has no 'messages' list; SFT reads rows with "
                             "{\"messages\": [{\"role\": ..., \"content\": ...}, ...]}.")
        out.append((where, check_conversation(record["messages"], where)))
    return out


# ----------------------------------------------------------------------------- tokenizing


def _as_tool_role(messages: Sequence[Message]) -> list[Message]:
    """Observation user turns (``<tool_response>``-wrapped) as ``tool`` messages."""
    out = []
    for m in messages:
        if m["role"] == "user" and m["content"].lstrip().startswith("<tool_response>"):
            out.append({"role": "tool", "content": unwrap_tool_response(m["content"])})
        else:
            out.append(dict(m))
    return out


def tokenize_conversation(tokenizer: Any, messages: Sequence[Message], *, tool_role: bool = False,
                          encoder: ObservationEncoder | None = None) -> tuple[list[int], list[int]]:
    """-> ``(ids, mask)`` of one conversation, both of its token length.

    ``tool_role=True`` hands ``<tool_response>`` user turns to the template as ``tool``
    messages, as a rollout with ``tool_role=True`` would have built them. ``encoder``:
    one shared over a dataset, so that a template that is not append-only is reported once.
    """
    messages = _as_tool_role(messages) if tool_role else list(messages)
    first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
    if first is None or first == 0:
        raise ValueError("the conversation needs prompt messages followed by at least one assistant message.")
    history = messages[:first]
    ids = encode(tokenizer, render_text(tokenizer, history, add_generation_prompt=True))
    mask = [0] * len(ids)
    encoder = encoder or ObservationEncoder(tokenizer, tool_role=tool_role)
    i = first
    while i < len(messages):
        content = messages[i]["content"]
        piece = encode(tokenizer, content)
        ids += piece
        mask += [1] * len(piece)
        j = i + 1
        while j < len(messages) and messages[j]["role"] != "assistant":
            j += 1
        if j > i + 1 or j < len(messages):  # the turns up to the next generation prompt
            suffix = encoder.encode_messages(history, content, messages[i + 1: j])
            ids += suffix
            mask += [0] * len(suffix)
        history += messages[i: j]
        i = j
    return ids, mask


def load_sft_samples(tokenizer: Any, paths: str | Path | Iterable[str | Path], *, max_length: int,
                     truncate: bool = False, tool_role: bool = False) -> tuple[list[SFTSample], LoadStats]:
    """Tokenize every conversation of ``paths`` (JSONL files), in file order.

    Samples longer than ``max_length`` tokens are dropped (counted), or cut to it with
    ``truncate=True``; samples left without an assistant token are dropped.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    stats = LoadStats(files=[str(p) for p in paths])
    samples: list[SFTSample] = []
    encoder = ObservationEncoder(tokenizer, tool_role=tool_role)
    for path in paths:
        for where, messages in read_conversations(path):
            stats.read += 1
            ids, mask = tokenize_conversation(tokenizer, messages, tool_role=tool_role, encoder=encoder)
            if len(ids) > max_length:
                if not truncate:
                    stats.dropped_long += 1
                    continue
                ids, mask = ids[:max_length], mask[:max_length]
                stats.truncated += 1
            if not any(mask):
                stats.dropped_no_loss += 1
                continue
            samples.append(SFTSample(ids, mask))
            stats.tokens += len(ids)
            stats.loss_tokens += sum(mask)
    stats.kept = len(samples)
    if stats.dropped_long:
        log.warning("dropped %d of %d conversations longer than max_length=%d tokens (truncate=true keeps them "
                    "cut)", stats.dropped_long, stats.read, max_length)
    return samples, stats


# ----------------------------------------------------------------------------- batching


def _targets(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Next-token labels and their loss mask for one row: (T,) each."""
    labels = torch.zeros_like(ids)
    labels[:-1] = ids[1:]
    loss_mask = torch.zeros_like(mask, dtype=torch.bool)
    loss_mask[:-1] = mask[1:].bool()
    return labels, loss_mask


def _row(samples: Sequence[SFTSample]) -> tuple[Tensor, Tensor, Tensor]:
    """Samples end to end: ids, mask and restarting position ids, (T,) each.

    The first token of every sample is kept out of the mask so that no position
    predicts a token of the next sample.
    """
    ids = torch.tensor([t for s in samples for t in s.ids], dtype=torch.long)
    mask = torch.tensor([m if k else 0 for s in samples for k, m in enumerate(s.mask)], dtype=torch.long)
    pos = torch.cat([torch.arange(len(s), dtype=torch.long) for s in samples])
    return ids, mask, pos


def pack(samples: Sequence[SFTSample], max_tokens: int) -> list[Batch]:
    """Pack samples into rows of at most ``max_tokens`` tokens, one row per batch.

    First-fit decreasing (deterministic: ties keep input order), so few rows and no
    padding at all. Each row holds whole samples with ``position_ids`` restarting at 0.
    """
    too_long = [len(s) for s in samples if len(s) > max_tokens]
    if too_long:
        raise ValueError(f"a sample of {too_long[0]} tokens does not fit a packed row of {max_tokens}; raise "
                         "micro_batch_tokens to at least max_length.")
    order = sorted(range(len(samples)), key=lambda i: (-len(samples[i]), i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = len(samples[i])
        slot = next((b for b, free in enumerate(room) if free >= n), None)
        if slot is None:
            bins.append([i])
            room.append(max_tokens - n)
        else:
            bins[slot].append(i)
            room[slot] -= n
    batches = []
    for b in bins:
        ids, mask, pos = _row([samples[i] for i in sorted(b)])
        labels, loss_mask = _targets(ids, mask)
        batches.append(Batch(ids[None], pos[None], labels[None], loss_mask[None], None, len(ids), len(b)))
    return batches


def pad_batch(samples: Sequence[SFTSample], pad_id: int) -> Batch:
    """Right-padded ``(B, T_max)`` batch with a 2-D attention mask."""
    width = max(len(s) for s in samples)
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    labels = torch.zeros((len(samples), width), dtype=torch.long)
    loss_mask = torch.zeros((len(samples), width), dtype=torch.bool)
    attn = torch.zeros((len(samples), width), dtype=torch.long)
    for r, s in enumerate(samples):
        row_ids, row_mask, _ = _row([s])
        n = len(s)
        ids[r, :n] = row_ids
        attn[r, :n] = 1
        labels[r, :n], loss_mask[r, :n] = _targets(row_ids, row_mask)
    pos = torch.arange(width, dtype=torch.long).expand(len(samples), width).clone()
    return Batch(ids, pos, labels, loss_mask, attn, int(attn.sum()), len(samples))


def micro_batches(samples: Sequence[SFTSample], *, packing: bool, micro_batch_size: int,
                  micro_batch_tokens: int, pad_id: int) -> list[Batch]:
    """The forward passes of one process's share of an optimizer step."""
    if not samples:
        return []
    if packing:
        return pack(samples, micro_batch_tokens)
    return [pad_batch(samples[i: i + micro_batch_size], pad_id) for i in range(0, len(samples), micro_batch_size)]


def block_causal_mask(position_ids: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(B, 1, T, T)`` mask: query ``q`` may attend to key ``k`` when both are in the same
    sample and ``k <= q``. Boolean (true = attend) for ``dtype=torch.bool``, else additive
    (0 or the dtype's minimum, as eager attention adds it). Samples are told apart by
    ``position_ids`` restarting at 0. Memory grows as ``T²``: prefer position ids alone
    where the model supports them.
    """
    starts = (position_ids == 0).long().cumsum(-1)  # (B, T) sample index of each token
    same = starts[:, :, None] == starts[:, None, :]  # (B, T, T)
    T = position_ids.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=position_ids.device).tril()
    allowed = (same & causal)[:, None]
    if dtype == torch.bool:
        return allowed
    out = torch.zeros(allowed.shape, dtype=dtype, device=position_ids.device)
    out.masked_fill_(~allowed, torch.finfo(dtype).min)
    return out
