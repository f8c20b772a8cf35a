"""Build an offline tokenizer and a small randomly initialised model.

``make_tiny(out_dir)`` writes a normal Hugging Face model directory that
``AutoTokenizer`` / ``AutoModelForCausalLM.from_pretrained(out_dir)`` load: a
byte-level BPE tokenizer trained on text of the synthetic website plus samples of
the agent protocol, ChatML special tokens, the protocol tags as single tokens, a
ChatML chat template, and a Qwen3 causal LM with tied embeddings in safetensors.
Tests and the demo use it so that every part of the pipeline runs without network.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from webdancer.conf.model import MakeTinyConfig

log = logging.getLogger("webdancer.agents")

PROTOCOL_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<answer>",
    "</answer>",
)
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|endoftext|>"
CHATML_TOKENS = (PAD, IM_START, IM_END)

# Append-only ChatML: every message renders the same whatever follows it, so a
# rollout can tokenize a new turn as the suffix of the longer rendering. A ``tool``
# message becomes a user turn wrapped in <tool_response>, as the agent protocol wants.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'tool' -%}"
    "{{ '<|im_start|>user\\n<tool_response>\\n' + message['content'] + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- elif message['role'] in ['system', 'user', 'assistant'] -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- else -%}"
    "{{ raise_exception('unknown chat role ' + message['role'] + '; use system, user, assistant or tool.') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_FALLBACK_FACTS = (
    ("Marlow Quen", "a cellist born in 1732 in the city of Ostrava Vale"),
    ("Ostrava Vale", "a city in the region of Telmark with 41,200 inhabitants"),
    ("Telmark Guild of Engravers", "an organization founded in 1811 in Port Aldery"),
    ("the Siege of Harrowmere", "an event of 1644 that ended with a treaty"),
    ("Blue Ashwing", "a species of moth found in the marshes of Lindqvale"),
    ("The Glass Orchard", "a novel published in 1902 by Ilse Varnhoff"),
)
# How text is cut before BPE. A small model copies names from its context into tool
# calls and answers, so a name must come out as the same tokens wherever it stands:
# after a space in a question, after `["` in a JSON argument, after `<answer>`. GPT-2
# style pieces (" Ornor" vs "Ornor") break that. Here a capitalized word or a number
# never takes the space before it; that space (or a slug's underscore) goes to the end
# of the previous piece instead. Lowercase words keep their leading space, and
# punctuation takes the space after it, so "Industry: theatre" ends in "theatre" too.
PRETOKENIZE_PATTERN = (
    r" ?\p{Ll}+(?:: | (?=[\p{Lu}\p{N}]))?"
    r"|\p{Lu}\p{L}*(?:: |[ _](?=[\p{Lu}\p{N}]))?"
    r"|\p{N}+(?: (?=[\p{Lu}\p{N}]))?"
    r"| ?[^\s\p{L}\p{N}]+ ?"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def _html_text(html: str) -> str:
    """Visible text of a page, whitespace collapsed (good enough to train BPE on)."""
    html = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", html)
    text = _TAG.sub(" ", html)
    text = text.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&rsaquo;", "›")
    return _SPACE.sub(" ", text).strip()


def protocol_samples(subject: str, fact: str) -> list[str]:
    """Agent-protocol snippets about one subject: a search call, a visit call, a
    tool response and an answer, written as the model should write them."""
    slug = subject.replace(" ", "_")
    search = {"name": "search", "arguments": {"query": [subject, f"{subject} history"]}}
    visit = {
        "name": "visit",
        "arguments": {"url": [f"https://synthwiki.example/wiki/{slug}"], "goal": f"facts about {subject}"},
    }
    return [
        (f"<think>I need to find out about {subject}. A search should give me its page.</think>\n"
        f"<tool_call>\n{json.dumps(search)}\n</tool_call>"),
        (f"<tool_response>\nA search for '{subject}' found 1 result:\n## Web Results\n"
        f"1. [{subject}](https://synthwiki.example/wiki/{slug})\n{subject} is {fact}.\n</tool_response>"),
        (f"<think>The result looks relevant; I will read the page.</think>\n"
         f"<tool_call>\n{json.dumps(visit)}\n</tool_call>"),
        (f"<think>The page says that {subject} is {fact}. That answers the question.</think>\n"
        f"<answer>{subject} is {fact}.</answer>"),
    ]


def default_corpus(n_pages: int = 300, seed: int = 0) -> Iterator[str]:
    """Text of a small synthetic website followed by protocol samples about its pages;
    built-in samples when the synthetic site is not available."""
    try:
        from webdancer.web.synthetic import generate_site, iter_pages
    except ImportError:
        for subject, fact in _FALLBACK_FACTS * 8:
            yield from protocol_samples(subject, fact)
        return
    site = generate_site(n_pages, seed=seed)
    for _, html in iter_pages(site):
        text = _html_text(html)
        yield text
        title = re.search(r"(?is)<title>(.*?)</title>", html)
        if title:
            subject = title.group(1).split(" - ")[0].strip()
            yield from protocol_samples(subject, text[:120])


def train_tokenizer(corpus: Iterable[str], vocab_size: int,
                    extra_tokens: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML special tokens and the protocol tags as
    single (non-special) tokens. ``vocab_size`` is an upper bound that counts them
    all; a small corpus runs out of merges (at ``min_frequency`` 2) before it.
    ``extra_tokens`` become single tokens on top of it (matched longest first)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    base_size = vocab_size - len(PROTOCOL_TOKENS)
    min_size = 256 + len(CHATML_TOKENS)
    if base_size < min_size:
        raise ValueError(f"vocab_size={vocab_size} is too small; use at least {min_size + len(PROTOCOL_TOKENS)}.")
    backend = Tokenizer(models.BPE())
    # Saved as a plain TokenizersBackend, which AutoTokenizer loads from tokenizer.json as
    # is for a qwen3 model directory (for qwen2 it would rebuild Qwen2Tokenizer from vocab
    # and merges, with Qwen2's own pre-tokenizer instead of this one).
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=base_size,
        min_frequency=2,
        special_tokens=list(CHATML_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer)
    # Added after training so that BPE never merges across a tag; not "special" so
    # that decoding with skip_special_tokens keeps the protocol visible.
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in PROTOCOL_TOKENS])
    extra = sorted(set(extra_tokens) - set(PROTOCOL_TOKENS))
    if extra:
        backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=PAD,
        bos_token=None,
        unk_token=None,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_tiny(
    out_dir: str | Path,
    *,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 4096,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 384,
    max_position_embeddings: int = 4096,
    seed: int = 0,
    extra_tokens: Iterable[str] = (),
    head_dim: int = 0,
    rope_theta: float = 10000.0,
    induction_heads: bool = False,
) -> Path:
    """Train a tokenizer on ``corpus`` (default: ``default_corpus(seed=seed)``), build a
    randomly initialised Qwen3 causal LM for it, and save both to ``out_dir``.

    ``vocab_size`` bounds the tokenizer (the model's vocabulary is the tokenizer's
    actual size: 4053 for the default corpus and 4096); the default model has
    about 0.91M parameters.

    ``extra_tokens`` are added to the vocabulary as whole tokens (the demo adds the
    site's entity names and URL slugs, so that copying a name is copying one token).

    ``head_dim`` 0 means ``hidden_size // num_heads``. ``induction_heads`` writes
    a copying circuit into the first two layers (``agents.induction``); it needs slow
    rotary pairs, e.g. ``head_dim=64, rope_theta=1e9``.

    Deterministic for a given corpus and ``seed``. Returns ``out_dir`` as a ``Path``.
    """
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"hidden_size={hidden_size}, num_heads={num_heads}, num_kv_heads={num_kv_heads}: "
            "hidden_size must divide by num_heads and num_heads by num_kv_heads."
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(corpus if corpus is not None else default_corpus(seed=seed), vocab_size,
                                extra_tokens)
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.convert_tokens_to_ids(PAD)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim or hidden_size // num_heads,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    # A private RNG stream: the weights depend only on ``seed``, and callers'
    # global torch RNG state is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    if induction_heads:
        from webdancer.agents.induction import implant_induction_heads

        implant_induction_heads(model, seed=seed)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=None)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def make_tiny_command(cfg: MakeTinyConfig) -> Path:
    """``webdancer model make-tiny OUT_DIR``: build the tiny model and say what was built."""
    start = time.perf_counter()
    out = make_tiny(
        cfg.out,
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        seed=cfg.seed,
        head_dim=cfg.head_dim,
        rope_theta=cfg.rope_theta,
        induction_heads=cfg.induction_heads,
    )
    seconds = time.perf_counter() - start
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    log.info("tiny model written to %s in %.1f s", out, seconds)
    print(
        f"tiny model -> {out} (vocab {config['vocab_size']}, hidden {config['hidden_size']}, "
        f"{config['num_hidden_layers']} layers) in {seconds:.1f} s"
    )
    return out
