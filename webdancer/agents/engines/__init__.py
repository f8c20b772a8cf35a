"""Generation engines: the ``Engine`` / ``ChatEngine`` protocols and their implementations.

``hf`` (transformers, in-process) and ``openai`` (an OpenAI-compatible HTTP server)
register themselves in ``ENGINES`` when their module is imported; ``engine_class``
imports the module a name lives in, so that picking an engine by name from config
does not require importing every backend (and torch) up front.
"""

from __future__ import annotations

import importlib
from typing import Any

from webdancer.agents.engines.base import (
    ENGINES,
    EOS_STOP,
    ChatEngine,
    ChatGeneration,
    Engine,
    Generation,
    SamplingParams,
    find_stop,
)

ENGINE_MODULES = {
    "hf": "webdancer.agents.engines.hf",
    "openai": "webdancer.agents.engines.openai",
    "vllm": "webdancer.agents.engines.vllm",
}


def engine_class(name: str) -> Any:
    """The engine class registered as ``name``, importing its module first."""
    module = ENGINE_MODULES.get(name)
    if module is not None and name not in ENGINES:
        importlib.import_module(module)
    return ENGINES.get(name)


__all__ = [
    "ENGINES",
    "ENGINE_MODULES",
    "EOS_STOP",
    "ChatEngine",
    "ChatGeneration",
    "Engine",
    "Generation",
    "SamplingParams",
    "engine_class",
    "find_stop",
]
