"""Saving from a training loop: every process takes part, only the main one writes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from webdancer.algos.checkpoint import STATE_FILE, save_final, save_step


class FakeModel:
    def save_pretrained(self, out: Path, **kwargs: Any) -> None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "weights.json").write_text(json.dumps(sorted(kwargs.get("state_dict", {}))))


class FakeTokenizer:
    def save_pretrained(self, out: Path) -> None:
        (Path(out) / "tokenizer.json").write_text("{}")


class FakeAccelerator:
    def __init__(self, *, main: bool, kind: str = "MULTI_GPU") -> None:
        self.is_main_process = main
        self.num_processes = 1
        self.distributed_type = SimpleNamespace(name=kind)
        self.calls: list[str] = []

    def get_state_dict(self, model: Any) -> dict[str, Any]:
        self.calls.append("get_state_dict")
        return {"w": 0}

    def unwrap_model(self, model: Any) -> Any:
        return model

    def wait_for_everyone(self) -> None:
        self.calls.append("wait_for_everyone")


@pytest.mark.parametrize("kind", ["MULTI_GPU", "FSDP"])
@pytest.mark.parametrize("main", [True, False])
def test_save_step_writes_on_the_main_process_only(tmp_path: Path, main: bool, kind: str) -> None:
    accelerator = FakeAccelerator(main=main, kind=kind)
    save_step(tmp_path, 3, model=FakeModel(), tokenizer=FakeTokenizer(), optimizer=None, scheduler=None,
              accelerator=accelerator, state={"position": 7}, keep=2)
    ckpt = tmp_path / "checkpoints" / "step-000003"
    assert ckpt.exists() == main
    if main:
        assert json.loads((ckpt / STATE_FILE).read_text()) == {"position": 7, "step": 3}
    gathers = ["get_state_dict"] if kind == "FSDP" else []
    assert accelerator.calls == [*gathers, "wait_for_everyone"]  # the collectives run on every process


@pytest.mark.parametrize("main", [True, False])
def test_save_final_writes_on_the_main_process_only(tmp_path: Path, main: bool) -> None:
    accelerator = FakeAccelerator(main=main, kind="FSDP")
    save_final(tmp_path / "final", model=FakeModel(), tokenizer=FakeTokenizer(), accelerator=accelerator)
    assert (tmp_path / "final" / "tokenizer.json").exists() == main
    if main:
        assert json.loads((tmp_path / "final" / "weights.json").read_text()) == ["w"]
    assert accelerator.calls == ["get_state_dict", "wait_for_everyone"]
