from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from webdancer.agents.engines import engine_class
from webdancer.agents.engines.base import ENGINES, EOS_STOP, SamplingParams
from webdancer.agents.engines.hf import HFEngine, process_logits
from webdancer.agents.tiny import PROTOCOL_TOKENS, make_tiny, make_tiny_command, protocol_samples
from webdancer.conf.model import MakeTinyConfig

SMALL = {"vocab_size": 600, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1}
PROMPTS = [
    "<|im_start|>user\nWho founded the Telmark Guild of Engravers?<|im_end|>\n<|im_start|>assistant\n",
    "<think>",
    "The city of Ostrava Vale lies in the region of",
]


def _small_corpus() -> list[str]:
    facts = [("Marlow Quen", "a cellist born in 1732"), ("Ostrava Vale", "a city in Telmark")]
    return [s for subject, fact in facts for s in protocol_samples(subject, fact)] * 4


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # The tiny model's matmuls are far too small to gain from intra-op threads,
    # and on a busy machine the thread handoff dominates each step.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def engine(tiny_dir: Path) -> HFEngine:
    return HFEngine.from_pretrained(str(tiny_dir), device="cpu")


@pytest.fixture(scope="module")
def prompts(engine: HFEngine) -> list[list[int]]:
    ids = [engine.tokenizer.encode(p, add_special_tokens=False) for p in PROMPTS]
    assert len({len(p) for p in ids}) == len(ids), "test prompts must differ in length"
    return ids


# ---------------------------------------------------------------- make_tiny


def test_make_tiny_round_trip_loads_every_weight(tiny_dir: Path) -> None:
    model, info = AutoModelForCausalLM.from_pretrained(tiny_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.tie_word_embeddings
    saved = load_file(tiny_dir / "model.safetensors")
    state = model.state_dict()
    for name, tensor in saved.items():
        assert torch.equal(state[name], tensor), name
    assert torch.equal(model.lm_head.weight, saved["model.embed_tokens.weight"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert len(tokenizer) == model.config.vocab_size
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None


def test_make_tiny_saved_model_gives_same_logits_after_resave(tiny_dir: Path, tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = AutoTokenizer.from_pretrained(tiny_dir).encode(PROMPTS[0], add_special_tokens=False)
    with torch.inference_mode():
        a = model(torch.tensor([ids])).logits
        b = again(torch.tensor([ids])).logits
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)


def test_make_tiny_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = make_tiny(tmp_path / "a", corpus=_small_corpus(), seed=1, **SMALL)
    b = make_tiny(tmp_path / "b", corpus=_small_corpus(), seed=1, **SMALL)
    c = make_tiny(tmp_path / "c", corpus=_small_corpus(), seed=2, **SMALL)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    config = json.loads((a / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 1
    assert config["vocab_size"] <= SMALL["vocab_size"]


def test_make_tiny_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = make_tiny_command(MakeTinyConfig(out=str(tmp_path / "m"), vocab_size=512, hidden_size=32, num_layers=1))
    assert "tiny model ->" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    with pytest.raises(ValueError, match="vocab_size"):
        MakeTinyConfig(out="x", vocab_size=10)


def test_make_tiny_rejects_bad_head_counts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_heads"):
        make_tiny(tmp_path, corpus=_small_corpus(), hidden_size=30, num_heads=4)


def _copy_accuracy(model_dir: Path, length: int = 30, filler: int = 200) -> float:
    """Greedy next-token accuracy on the second copy of a random string of distinct
    tokens, with random filler of other tokens between the copies: only in-context
    copying can score here."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    g = torch.Generator().manual_seed(0)
    middle = (50 + model.config.vocab_size) // 2
    x = torch.stack([50 + torch.randperm(middle - 50, generator=g)[:length] for _ in range(8)])
    ids = torch.cat([x, torch.randint(middle, model.config.vocab_size, (8, filler), generator=g), x], 1)
    with torch.no_grad():
        logits = model(ids).logits
    start = length + filler
    return (logits[:, start:-1].argmax(-1) == ids[:, start + 1:]).float().mean().item()


def test_induction_heads_copy_an_unseen_string_before_any_training(tmp_path: Path) -> None:
    kw = {"corpus": _small_corpus(), "vocab_size": 600, "hidden_size": 128, "num_layers": 2, "head_dim": 64,
          "rope_theta": 1e9}
    with_heads = make_tiny(tmp_path / "with", induction_heads=True, **kw)
    without = make_tiny(tmp_path / "without", **kw)
    assert _copy_accuracy(with_heads) > 0.8
    assert _copy_accuracy(without) < 0.1


def test_induction_heads_need_slow_rotary_pairs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rope_theta"):
        make_tiny(tmp_path, corpus=_small_corpus(), vocab_size=600, hidden_size=128, num_layers=2,
                  induction_heads=True)


def test_protocol_tags_are_single_tokens(tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    for tag in (*PROTOCOL_TOKENS, "<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        ids = tokenizer.encode(tag, add_special_tokens=False)
        assert len(ids) == 1, tag
    text = '<think>go</think>\n<tool_call>\n{"name": "search"}\n</tool_call>'
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    # protocol tags survive skip_special_tokens; ChatML markers do not
    assert tokenizer.decode(ids + [tokenizer.eos_token_id], skip_special_tokens=True) == text


def test_tokenizer_loaded_by_auto_matches_trained_file(tiny_dir: Path) -> None:
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    loaded = AutoTokenizer.from_pretrained(tiny_dir)
    for text in (*PROMPTS, "Numbers 41,200 and 1732.\n\n  spaced\ttabs ünïcode 漢字"):
        assert loaded.encode(text, add_special_tokens=False) == raw.encode(text).ids


def _pieces_of(tokenizer: object, text: str, span: str) -> list[str]:
    """The tokens that cover the last occurrence of ``span`` in ``text``."""
    start = text.rindex(span)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)  # type: ignore[operator]
    return [tokenizer.decode([i]) for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)  # type: ignore[attr-defined]
            if a < start + len(span) and b > start]


def test_a_name_is_the_same_tokens_wherever_the_agent_copies_it(tiny_dir: Path) -> None:
    """A name or value copied from a question or page into a tool call or an answer must be
    the same token sequence there; GPT-2 style pieces (" Marlow" vs "Marlow") are not."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    contexts = {
        "Marlow Quen": ["Who taught Marlow Quen?", "Who taught Marlow Quen in 1740?",
                        '{"query": ["Marlow Quen"]}', "<answer>Marlow Quen</answer>",
                        "1. [Marlow Quen - SynthWiki](https://synthwiki.example/wiki/Marlow_Quen)"],
        "1732": ["Born: 1732", "was born in 1732.", "<answer>1732</answer>", '{"query": ["1732"]}'],
        "cellist": ["Occupation: cellist", "<answer>cellist</answer>"],
        "Marlow_Quen": ["https://synthwiki.example/wiki/Marlow_Quen)",
                        '{"url": ["https://synthwiki.example/wiki/Marlow_Quen"]}'],
    }
    for span, texts in contexts.items():
        pieces = [_pieces_of(tokenizer, text, span) for text in texts]
        assert all(p == pieces[0] for p in pieces), (span, pieces)
        assert "".join(pieces[0]) == span


def test_chat_template_renders_chatml(tiny_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "<think>t</think>\n<tool_call>\n{}\n</tool_call>"},
        {"role": "tool", "content": "R"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>system\nS<|im_end|>\n"
        "<|im_start|>user\nQ<|im_end|>\n"
        "<|im_start|>assistant\n<think>t</think>\n<tool_call>\n{}\n</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nR\n</tool_response><|im_end|>\n"
    )
    with_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert with_prompt == text + "<|im_start|>assistant\n"
    # append-only: a conversation's rendering is a prefix of its continuation's
    for n in range(1, len(messages)):
        assert text.startswith(tokenizer.apply_chat_template(messages[:n], tokenize=False))


# ---------------------------------------------------------------- HFEngine


def test_engine_is_registered() -> None:
    assert ENGINES.get("hf") is HFEngine
    assert engine_class("hf") is HFEngine


def test_greedy_batch_equals_each_prompt_alone(engine: HFEngine, prompts: list[list[int]]) -> None:
    params = SamplingParams(max_new_tokens=12, temperature=0.0, stop=())
    batch = engine.generate(prompts, params)
    for prompt, got in zip(prompts, batch):
        alone = engine.generate([prompt], params)[0]
        assert got.token_ids == alone.token_ids
        assert got.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
        assert got.finish_reason == "length" and len(got.token_ids) == 12


def test_chunking_by_max_batch_size_keeps_results(engine: HFEngine, prompts: list[list[int]]) -> None:
    params = SamplingParams(max_new_tokens=6, temperature=0.0, stop=())
    small = HFEngine(engine.model, engine.tokenizer, max_batch_size=2, device="cpu")
    assert [g.token_ids for g in small.generate(prompts, params)] == [
        g.token_ids for g in engine.generate(prompts, params)
    ]


def _recomputed_logprobs(engine: HFEngine, prompt: list[int], tokens: list[int], params: SamplingParams) -> list[float]:
    with torch.inference_mode():
        logits = engine.model(torch.tensor([prompt + tokens])).logits[0]  # (T, V)
    logprobs = process_logits(logits[len(prompt) - 1 : -1], params)
    return logprobs.gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1).tolist()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=16, temperature=1.0, top_p=1.0, stop=(), seed=0),
        SamplingParams(max_new_tokens=16, temperature=0.7, top_k=50, top_p=0.9, stop=(), seed=0),
    ],
)
def test_logprobs_match_a_full_forward_pass(
    engine: HFEngine, prompts: list[list[int]], params: SamplingParams
) -> None:
    for prompt, gen in zip(prompts, engine.generate(prompts, params)):
        expected = _recomputed_logprobs(engine, prompt, gen.token_ids, params)
        assert gen.logprobs == pytest.approx(expected, abs=1e-4)
        assert all(lp <= 0.0 for lp in gen.logprobs)


def test_greedy_logprobs_are_temperature_one(engine: HFEngine, prompts: list[list[int]]) -> None:
    params = SamplingParams(max_new_tokens=5, temperature=0.0, stop=())
    gen = engine.generate(prompts[:1], params)[0]
    expected = _recomputed_logprobs(engine, prompts[0], gen.token_ids, SamplingParams(temperature=1.0))
    assert gen.logprobs == pytest.approx(expected, abs=1e-4)


def test_seed_reproduces_samples(engine: HFEngine, prompts: list[list[int]]) -> None:
    params = SamplingParams(max_new_tokens=10, stop=(), seed=123)
    first = engine.generate(prompts, params)
    again = engine.generate(prompts, params)
    other = engine.generate(prompts, SamplingParams(max_new_tokens=10, stop=(), seed=124))
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert [g.token_ids for g in first] != [g.token_ids for g in other]


def test_stop_string_ends_generation(engine: HFEngine, prompts: list[list[int]]) -> None:
    free = engine.generate(prompts[:1], SamplingParams(max_new_tokens=8, temperature=0.0, stop=()))[0]
    assert free.finish_reason == "length" and free.stop_string is None
    stop = engine.tokenizer.decode(free.token_ids[:2])
    assert stop, "the greedy continuation decodes to text"
    got = engine.generate(prompts[:1], SamplingParams(max_new_tokens=8, temperature=0.0, stop=(stop,)))[0]
    assert got.finish_reason == "stop" and got.stop_string == stop
    assert got.token_ids == free.token_ids[: len(got.token_ids)] and len(got.token_ids) <= 2
    assert stop in got.text


def test_eos_ends_generation_without_text(engine: HFEngine, prompts: list[list[int]]) -> None:
    free = engine.generate(prompts[:1], SamplingParams(max_new_tokens=4, temperature=0.0, stop=()))[0]
    eos_engine = HFEngine(engine.model, engine.tokenizer, device="cpu")
    eos_engine.eos_ids = {free.token_ids[0]}
    got = eos_engine.generate(prompts[:1], SamplingParams(max_new_tokens=4, temperature=0.0, stop=()))[0]
    assert got.finish_reason == "stop" and got.stop_string == EOS_STOP
    assert got.token_ids == free.token_ids[:1] and got.text == ""


def test_finished_rows_leave_the_batch(engine: HFEngine, prompts: list[list[int]]) -> None:
    params = SamplingParams(max_new_tokens=10, temperature=0.0, stop=())
    free = engine.generate(prompts, params)
    spy_engine = HFEngine(engine.model, engine.tokenizer, device="cpu")
    # the first row's third greedy token acts as EOS: that row must leave after 3 tokens
    spy_engine.eos_ids = {free[0].token_ids[2]}
    sizes: list[int] = []
    hook = engine.model.register_forward_pre_hook(
        lambda _m, _args, kwargs: sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        gens = spy_engine.generate(prompts, params)
    finally:
        hook.remove()
    lengths = [len(g.token_ids) for g in gens]
    assert lengths[0] <= 3 and max(lengths) == 10
    # one prefill of all rows, then one step per token for the rows still running
    expected = [len(prompts)] + [sum(n > k for n in lengths) for k in range(1, max(lengths))]
    assert sizes == expected
    assert sizes[-1] < len(prompts)
    for g, f in zip(gens, free):
        assert g.token_ids == f.token_ids[: len(g.token_ids)]


def test_empty_prompt_is_an_error(engine: HFEngine) -> None:
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        engine.generate([[1, 2], []], SamplingParams(max_new_tokens=2))


def test_from_pretrained_names_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="make-tiny"):
        HFEngine.from_pretrained(str(tmp_path / "missing"))


@pytest.mark.parametrize("temperature", [0.6, 1.0])
def test_the_trainers_logprobs_are_those_of_the_rollout_temperature(
    engine: HFEngine, prompts: list[list[int]], temperature: float
) -> None:
    from webdancer.algos.rl_batch import token_logprobs

    params = SamplingParams(max_new_tokens=12, temperature=temperature, top_p=1.0, stop=(), seed=3)
    gen = engine.generate(prompts[:1], params)[0]
    ids = torch.tensor([prompts[0] + gen.token_ids])
    with torch.inference_mode():
        logp, _ = token_logprobs(engine.model, ids, torch.ones_like(ids), temperature=temperature)
        untempered, _ = token_logprobs(engine.model, ids, torch.ones_like(ids))
        loss_mask = torch.zeros_like(ids)
        loss_mask[0, len(prompts[0]):] = 1
        # projected to the vocabulary only before the generated tokens (the model takes logits_to_keep)
        only, _ = token_logprobs(engine.model, ids, torch.ones_like(ids), temperature=temperature,
                                 loss_mask=loss_mask)
    generated = slice(len(prompts[0]), ids.shape[1])
    assert logp[0, generated].tolist() == pytest.approx(gen.logprobs, abs=1e-4)
    assert only[0, generated].tolist() == pytest.approx(logp[0, generated].tolist(), abs=1e-5)
    assert only[0, : len(prompts[0])].abs().sum() == 0
    if temperature != 1.0:  # the untempered log-probs are not the sampler's: a ratio off 1 from the start
        assert untempered[0, generated].tolist() != pytest.approx(gen.logprobs, abs=1e-2)
