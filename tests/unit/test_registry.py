from __future__ import annotations

import pytest

from webdancer.registry import Registry


def test_register_get_and_decorator() -> None:
    reg: Registry[object] = Registry("widget")
    reg.register("a", 1)

    @reg.register("b")
    def b() -> int:
        return 2

    assert reg.get("a") == 1
    assert reg.get("b") is b
    assert reg.names() == ["a", "b"]
    assert "a" in reg and "c" not in reg


def test_duplicate_name_is_an_error() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)


def test_unknown_name_lists_valid_ones() -> None:
    reg: Registry[int] = Registry("reward")
    reg.register("f1", 1)
    reg.register("em", 2)
    with pytest.raises(KeyError, match="unknown reward 'x'; valid names: em, f1"):
        reg.get("x")
