"""Build an engine from a spec string, as configs and command lines name them.

    make_engine("hf:runs/sft/final")                        # transformers, in-process
    make_engine("hf:Qwen/Qwen2.5-7B-Instruct", dtype="bfloat16")
    make_engine("openai:http://127.0.0.1:8000/v1#qwen")     # OpenAI-compatible server
    make_engine("openai", base_url="http://127.0.0.1:8000/v1", model="qwen")
    make_engine("vllm:runs/rl/final", gpu_memory_utilization=0.8)

``openai:BASE_URL:MODEL`` (the ``synth trajectories`` form) is accepted too. Keyword
arguments go to the engine's constructor (``from_pretrained`` for hf and vllm).
Backends are imported only when asked for, so a missing optional package (vllm)
fails only the spec that needs it.
"""

from __future__ import annotations

from typing import Any

SPEC_HELP = "use 'hf:PATH_OR_NAME', 'openai:BASE_URL#MODEL' or 'vllm:PATH'"


def split_spec(spec: str) -> tuple[str, str]:
    """``"kind:rest"`` -> ``(kind, rest)``; ValueError naming the valid forms otherwise."""
    kind, _sep, rest = spec.strip().partition(":")
    if kind not in ("hf", "openai", "vllm") or (kind != "openai" and not rest):
        raise ValueError(f"engine spec {spec!r} is not valid; {SPEC_HELP}.")
    return kind, rest


def parse_openai(rest: str, spec: str) -> tuple[str, str]:
    """-> ``(base_url, model)`` from ``BASE_URL#MODEL`` or ``BASE_URL:MODEL``."""
    if "#" in rest:
        base_url, _, model = rest.rpartition("#")
    else:
        from webdancer.conf.synth import parse_engine_spec  # the colon form, shared with synth

        try:
            parsed = parse_engine_spec(f"openai:{rest}")
        except ValueError:
            raise ValueError(f"engine spec {spec!r} is not valid; {SPEC_HELP} "
                             "(e.g. openai:http://127.0.0.1:8000/v1#qwen).") from None
        base_url, model = parsed.base_url, parsed.model
    if "://" not in base_url or not model:
        raise ValueError(f"engine spec {spec!r} needs a base URL with http(s):// and a model name, "
                         "e.g. openai:http://127.0.0.1:8000/v1#qwen.")
    return base_url, model


def make_engine(spec: str, **kw: Any) -> Any:
    """The engine ``spec`` names (see the module doc); ``kw`` go to its constructor.

    ``"openai"`` alone takes ``base_url`` and ``model`` from ``kw``.
    """
    kind, rest = split_spec(spec)
    if kind == "hf":
        from webdancer.agents.engines.hf import HFEngine

        return HFEngine.from_pretrained(rest, **kw)
    if kind == "vllm":
        from webdancer.agents.engines.vllm import import_vllm

        import_vllm()  # an ImportError that says how to install vLLM
        from webdancer.agents.engines.vllm import VLLMEngine

        return VLLMEngine.from_pretrained(rest, **kw)
    from webdancer.agents.engines.openai import OpenAIEngine

    if rest:
        if "base_url" in kw or "model" in kw:
            raise ValueError(f"engine spec {spec!r} already names the server; "
                             "drop base_url= and model=.")
        base_url, model = parse_openai(rest, spec)
        return OpenAIEngine(base_url, model, **kw)
    if not kw.get("base_url") or not kw.get("model"):
        raise ValueError("engine 'openai' needs base_url and model; write openai:BASE_URL#MODEL.")
    return OpenAIEngine(**kw)


def engine_label(spec_or_engine: Any) -> str:
    """A short name for reports: the spec string, or the engine's class name."""
    if isinstance(spec_or_engine, str):
        return spec_or_engine
    return str(getattr(spec_or_engine, "label", None) or type(spec_or_engine).__name__)


def is_token_engine(engine: Any) -> bool:
    """True when ``engine`` generates from token ids (``Engine``), False for chat-only models."""
    has_generate = callable(getattr(engine, "generate", None))
    return has_generate and getattr(engine, "tokenizer", None) is not None
