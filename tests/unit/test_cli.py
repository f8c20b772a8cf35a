from __future__ import annotations

import pytest

from webdancer.cli import COMMANDS, _hydra_overrides, _split_args, main, usage


def test_positional_url_becomes_quoted_override() -> None:
    cmd = COMMANDS[("web", "show")]
    out = _split_args(cmd, ["https://a.example/x?y=1&z='q'", "page=2"])
    assert "page=2" in out
    assert "url='https://a.example/x?y=1&z=\\'q\\''" in out


def test_several_positional_words_join_into_one_query() -> None:
    cmd = COMMANDS[("web", "search")]
    assert _split_args(cmd, ["river", "delta", "k=3"]) == ["k=3", "query='river delta'"]


def test_positional_list_for_record() -> None:
    cmd = COMMANDS[("web", "record")]
    assert _split_args(cmd, ["https://a.example/", "https://b.example/"]) == [
        "urls=['https://a.example/','https://b.example/']"
    ]


def test_flags_pass_through() -> None:
    cmd = COMMANDS[("web", "build")]
    assert _split_args(cmd, ["--multirun", "seed=1,2"]) == ["--multirun", "seed=1,2"]


def test_multirun_after_an_override_parses_as_before_it() -> None:
    cmd = COMMANDS[("rl",)]
    first = _hydra_overrides(("rl",), cmd, ["--multirun", "x=1", "seed=1,2"])
    after = _hydra_overrides(("rl",), cmd, ["x=1", "--multirun", "seed=1,2"])
    assert after == first
    assert after[0] == "--multirun" and after[-2:] == ["x=1", "seed=1,2"]
    # A flag's value travels with it.
    assert _split_args(cmd, ["x=1", "--cfg", "job", "seed=2"]) == ["--cfg", "job", "x=1", "seed=2"]


def test_positional_where_none_expected_is_an_error() -> None:
    with pytest.raises(SystemExit, match="only key=value"):
        _split_args(COMMANDS[("web", "build")], ["oops"])


def test_unknown_command_lists_valid_ones() -> None:
    with pytest.raises(SystemExit, match="web build"):
        main(["web", "nope"])


def test_usage_lists_every_command() -> None:
    text = usage()
    for path in COMMANDS:
        assert " ".join(path) in text
