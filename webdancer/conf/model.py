"""Structured configs of the ``webdancer model`` commands."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class MakeTinyConfig:
    """``webdancer model make-tiny OUT_DIR``: an offline tokenizer + small Qwen3 model."""

    out: str = MISSING  # model directory to write
    vocab_size: int = 4096  # total, ChatML and protocol tokens included
    hidden_size: int = 128
    num_layers: int = 2
    head_dim: int = 0  # 0: hidden_size // 4
    rope_theta: float = 10000.0
    induction_heads: bool = False  # a copying circuit in layers 0-1; needs e.g. head_dim=64 rope_theta=1e9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.vocab_size < 512:
            raise ValueError(f"vocab_size={self.vocab_size} is too small; use at least 512.")
        if self.hidden_size < 8 or self.hidden_size % 4:
            raise ValueError(f"hidden_size={self.hidden_size} must be a multiple of 4 (the head count), at least 8.")
        if self.num_layers < 1:
            raise ValueError(f"num_layers={self.num_layers} must be at least 1.")
