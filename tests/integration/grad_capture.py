"""Optimizer and scheduler stand-ins for the multi-process gradient tests: the
optimizer keeps the (already reduced) gradients instead of applying them."""

from __future__ import annotations

import torch


class CaptureGrads:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.grads = model, None

    def step(self) -> None:
        self.grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.model.zero_grad(set_to_none=set_to_none)


class NoSchedule:
    def step(self) -> None:
        pass

    def get_last_lr(self) -> list[float]:
        return [0.0]
