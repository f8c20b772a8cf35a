"""SFT data: reading conversations, the assistant-only mask, packing, padding, data
order, the masked loss against a hand computation, and config validation."""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import pytest
import torch

from webdancer.agents.prompts import build_messages, encode, observation_message, render_text
from webdancer.agents.rollout import ObservationEncoder
from webdancer.agents.tiny import protocol_samples, train_tokenizer
from webdancer.algos.sft import sft_loss, step_indices
from webdancer.conf.sft import SFTConfig
from webdancer.data.sft_data import (
    SFTSample,
    block_causal_mask,
    load_sft_samples,
    pack,
    pad_batch,
    read_conversations,
    tokenize_conversation,
)

SEARCH = '<think>I should search.</think>\n<tool_call>\n{"name": "search", "arguments": {"query": ["Quen"]}}\n</tool_call>'
VISIT = ('<think>The first result looks right.</think>\n<tool_call>\n{"name": "visit", "arguments": '
         '{"url": ["https://synthwiki.example/wiki/Quen"], "goal": "birth year"}}\n</tool_call>')
ANSWER = "<think>The page says 1732.</think>\n<answer>1732</answer>"
OBS1 = "A search for 'Quen' found 1 result:\n## Web Results\n1. [Marlow Quen](https://synthwiki.example/wiki/Quen)"
OBS2 = "Page: Marlow Quen\nEvidence:\nMarlow Quen was born in 1732 in Ostrava Vale."


@pytest.fixture(scope="module")
def tok():
    corpus = [s for i in range(12) for s in protocol_samples(f"Marlow Quen {i}", "a cellist born in 1732")]
    return train_tokenizer(corpus * 2, 700)


def conversation(tool_role: bool = False) -> list[dict[str, str]]:
    messages = build_messages("When was Marlow Quen born?", style="compact", date="2025-01-01")
    return [*messages, {"role": "assistant", "content": SEARCH}, observation_message(OBS1, tool_role=tool_role),
            {"role": "assistant", "content": VISIT}, observation_message(OBS2, tool_role=tool_role),
            {"role": "assistant", "content": ANSWER}]


def spans(ids: list[int], mask: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i, (t, m) in enumerate(zip(ids, mask)):
        if m and (i == 0 or not mask[i - 1]):
            out.append([])
        if m:
            out[-1].append(t)
    return out


# ----------------------------------------------------------------------------- reading


def test_reads_trajectory_rows_and_generic_chat_rows(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    traj_row = {"task": {"question": "q", "answer": "1732"}, "messages": conversation(), "turns": [], "ids": []}
    chat_row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path.write_text(json.dumps(traj_row) + "\n\n" + json.dumps(chat_row) + "\n")
    rows = read_conversations(path)
    assert [where for where, _ in rows] == [f"{path}:1", f"{path}:3"]
    assert rows[0][1] == conversation() and rows[1][1] == chat_row["messages"]


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ('{"text": "no messages"}', "no 'messages'"),
    ('{"messages": [{"role": "user", "content": "only a question"}]}', "no assistant message"),
    ('{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}', "role 'robot'"),
    ('{"messages": [{"role": "assistant", "content": "y"}]}', "starts with an assistant"),
])
def test_a_bad_line_is_named_by_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(ValueError, match=f"{path}:2: .*{message}"):
        read_conversations(path)


# ----------------------------------------------------------------------------- tokenizing


def test_mask_is_exactly_the_assistant_tokens(tok) -> None:
    messages = conversation()
    ids, mask = tokenize_conversation(tok, messages)
    assert len(ids) == len(mask)
    assistant = [m["content"] for m in messages if m["role"] == "assistant"]
    assert [tok.decode(s) for s in spans(ids, mask)] == assistant
    # Everything else is the template's own text around them: the whole decodes to the rendering.
    full = render_text(tok, messages, add_generation_prompt=False)
    assert full == tok.decode(ids) + "<|im_end|>\n"


def test_ids_are_those_the_rollout_builds(tok) -> None:
    messages = conversation()
    prompt = messages[:2]
    encoder = ObservationEncoder(tok)
    expected = encode(tok, render_text(tok, prompt, add_generation_prompt=True))
    history = list(prompt)
    for text, obs in ((SEARCH, OBS1), (VISIT, OBS2)):
        expected += encode(tok, text) + encoder.encode(history, text, obs)
        history += [{"role": "assistant", "content": text}, observation_message(obs)]
    expected += encode(tok, ANSWER)
    ids, _ = tokenize_conversation(tok, messages)
    assert ids == expected


def test_tool_role_turns_match_the_rollout_with_tool_role(tok) -> None:
    # The tiny template renders a tool message as a wrapped user turn: the same ids either way.
    plain = tokenize_conversation(tok, conversation())
    assert tokenize_conversation(tok, conversation(), tool_role=True) == plain
    assert tokenize_conversation(tok, conversation(tool_role=True)) == plain


def test_generic_multi_turn_chat(tok) -> None:
    messages = [{"role": "user", "content": "Name a cellist."}, {"role": "assistant", "content": "Marlow Quen."},
                {"role": "user", "content": "Born when?"}, {"role": "assistant", "content": "In 1732."},
                {"role": "assistant", "content": "In Ostrava Vale."}]
    ids, mask = tokenize_conversation(tok, messages)
    assert [tok.decode(s) for s in spans(ids, mask)] == ["Marlow Quen.", "In 1732.", "In Ostrava Vale."]
    assert tok.decode(ids) + "<|im_end|>\n" == render_text(tok, messages, add_generation_prompt=False)


def test_long_conversations_are_dropped_or_truncated(tmp_path: Path, tok) -> None:
    path = tmp_path / "d.jsonl"
    short = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    path.write_text("\n".join(json.dumps({"messages": m}) for m in (conversation(), short)) + "\n")
    n_long = len(tokenize_conversation(tok, conversation())[0])
    prompt_len = len(encode(tok, render_text(tok, conversation()[:2], add_generation_prompt=True)))
    samples, stats = load_sft_samples(tok, path, max_length=n_long - 1)
    assert (stats.read, stats.kept, stats.dropped_long) == (2, 1, 1) and len(samples[0]) < n_long
    samples, stats = load_sft_samples(tok, path, max_length=n_long - 1, truncate=True)
    assert (stats.kept, stats.truncated) == (2, 1) and len(samples[0]) == n_long - 1
    # Cut inside the prompt: nothing left to learn, so dropped.
    _, stats = load_sft_samples(tok, path, max_length=prompt_len, truncate=True)
    assert stats.dropped_no_loss == 1
    assert stats.loss_tokens == sum(sum(s.mask) for s in load_sft_samples(tok, path, max_length=10**6)[0]) - \
        sum(tokenize_conversation(tok, conversation())[1])


# Opens with the message count, so a longer conversation rewrites the start: not append-only.
COUNTING_TEMPLATE = (
    "{{ messages | length }}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def test_a_template_that_is_not_append_only_is_reported_once_per_load(
        tmp_path: Path, tok, caplog: pytest.LogCaptureFixture) -> None:
    counting = copy.deepcopy(tok)
    counting.chat_template = COUNTING_TEMPLATE
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"messages": conversation()}) + "\n" for _ in range(3)))
    with caplog.at_level(logging.WARNING):
        samples, _ = load_sft_samples(counting, path, max_length=10**6)
    assert len(samples) == 3
    assert sum("not append-only" in r.getMessage() for r in caplog.records) == 1


# ----------------------------------------------------------------------------- batching


def _samples() -> list[SFTSample]:
    lengths = [7, 3, 5, 2, 6, 4]
    out = []
    for i, n in enumerate(lengths):
        ids = [10 * (i + 1) + k for k in range(n)]
        out.append(SFTSample(ids, [0] + [int(k % 2 == 1) for k in range(1, n)]))
    return out


def test_pack_rows_hold_whole_samples_with_restarting_positions() -> None:
    samples = _samples()
    batches = pack(samples, 10)
    assert all(b.input_ids.shape[0] == 1 and b.input_ids.shape[1] <= 10 for b in batches)
    assert len(batches) == 3  # 27 tokens, first-fit decreasing: [7,3] [6,4] [5,2]
    seen = []
    for b in batches:
        ids, pos = b.input_ids[0].tolist(), b.position_ids[0].tolist()
        assert b.attention_mask is None and b.n_tokens == len(ids)
        starts = [i for i, p in enumerate(pos) if p == 0]
        for s, e in zip(starts, starts[1:] + [len(ids)]):
            sample = next(x for x in samples if x.ids == ids[s:e])
            seen.append(samples.index(sample))
            assert pos[s:e] == list(range(e - s))
            # labels are the next token; the loss sees exactly the sample's own masked tokens
            labels, mask = b.labels[0, s:e - 1].tolist(), b.loss_mask[0, s:e - 1].tolist()
            assert labels == sample.ids[1:] and mask == [bool(m) for m in sample.mask[1:]]
        assert not b.loss_mask[0, [e - 1 for e in starts[1:] + [len(ids)]]].any()  # never across samples
    assert sorted(seen) == list(range(len(samples)))
    with pytest.raises(ValueError, match="micro_batch_tokens"):
        pack(samples, 6)


def test_first_token_of_a_sample_never_counts() -> None:
    a, b = SFTSample([1, 2, 3], [0, 1, 1]), SFTSample([4, 5], [1, 1])  # b's first token is marked
    batch = pack([a, b], 8)[0]
    assert batch.input_ids[0].tolist() == [1, 2, 3, 4, 5]
    assert batch.loss_mask[0].tolist() == [True, True, False, True, False]


def test_pad_batch() -> None:
    samples = _samples()[:3]
    b = pad_batch(samples, pad_id=0)
    assert b.input_ids.shape == (3, 7) and b.n_tokens == 15 and b.attention_mask is not None
    assert b.attention_mask.sum(-1).tolist() == [7, 3, 5]
    assert b.loss_mask[1].tolist() == [True, False, False, False, False, False, False]  # [0,1,0]: only token 1
    assert b.labels[1, :2].tolist() == [21, 22]


def test_block_causal_mask_by_hand() -> None:
    pos = torch.tensor([[0, 1, 2, 0, 1]])
    allowed = block_causal_mask(pos, torch.bool)[0, 0].int().tolist()
    assert allowed == [[1, 0, 0, 0, 0],
                       [1, 1, 0, 0, 0],
                       [1, 1, 1, 0, 0],
                       [0, 0, 0, 1, 0],
                       [0, 0, 0, 1, 1]]
    additive = block_causal_mask(pos, torch.float32)[0, 0]
    assert additive[4, 3] == 0 and additive[4, 2] == torch.finfo(torch.float32).min


def test_data_order_is_a_seeded_permutation_per_epoch() -> None:
    n, bs = 10, 4  # 3 steps per epoch, the last one short
    epoch0 = [step_indices(n, bs, seed=5, step=s) for s in range(3)]
    assert [e for e, _ in epoch0] == [0, 0, 0] and [len(i) for _, i in epoch0] == [4, 4, 2]
    assert sorted(i for _, idx in epoch0 for i in idx) == list(range(n))
    assert step_indices(n, bs, 5, 3)[0] == 1 and step_indices(n, bs, 5, 3) != step_indices(n, bs, 5, 0)
    assert step_indices(n, bs, 5, 1) == epoch0[1]  # a pure function of the step: resumable


# ----------------------------------------------------------------------------- the loss


def test_sft_loss_equals_a_hand_computation() -> None:
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
                           [[1.0, 1.0, 3.0], [0.5, 0.0, 0.0], [9.0, 9.0, 9.0]]])  # (B=2, T=3, V=3)
    labels = torch.tensor([[0, 1, 2], [2, 0, 1]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)

    def nll(row: list[float], label: int) -> float:
        return -(row[label] - math.log(sum(math.exp(x) for x in row)))

    hand = [nll([2, 0, 0], 0), nll([0, 1, 0], 1), nll([1, 1, 3], 2)]
    loss, n = sft_loss(logits, labels, mask, scale_tokens=3.0)
    assert int(n) == 3
    assert float(loss) == pytest.approx(sum(hand) / 3, rel=1e-6)
    # Another scale (the step's global count) divides the same sum.
    assert float(sft_loss(logits, labels, mask, scale_tokens=10.0)[0]) == pytest.approx(sum(hand) / 10, rel=1e-6)
    # Masked positions never matter, not even as NaN or an out-of-range label.
    poisoned = logits.clone()
    poisoned[0, 2] = float("nan")
    labels2 = labels.clone()
    labels2[1, 2] = 10_000
    poisoned.requires_grad_(True)
    loss2, _ = sft_loss(poisoned, labels2, mask, 3.0)
    loss2.backward()
    assert float(loss2.detach()) == pytest.approx(float(loss)) and torch.isfinite(poisoned.grad).all()
    assert poisoned.grad[0, 2].abs().sum() == 0


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="no training data"):
        SFTConfig(model="m")
    with pytest.raises(ValueError, match="schedule='linear'"):
        SFTConfig(model="m", data=["d.jsonl"], schedule="linear")
    with pytest.raises(ValueError, match="micro_batch_tokens=100"):
        SFTConfig(model="m", data=["d.jsonl"], micro_batch_tokens=100, max_length=200)
    cfg = SFTConfig(model="m", data=["d.jsonl"], max_length=512)
    assert cfg.row_tokens == 512 and cfg.lr == 5e-6 and cfg.weight_decay == 0.1
